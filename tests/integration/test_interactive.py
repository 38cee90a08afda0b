"""`Remote.interactive`, the hand-over of a terminal to a program on the target, through a real
pseudo-terminal and a real sshd on loopback (no VM needed)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.terminal import COLUMNS, ROWS, Terminal

REPO = Path(__file__).resolve().parents[2]

# The program on the terminal: connects, hands the terminal over, then tells what it got back.
PROGRAM = """
import sys, termios
from pathlib import Path
from labs.providers.ssh import Remote, ssh_target
target = ssh_target(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
before = termios.tcgetattr(0)
status = Remote(target).interactive(sys.argv[4])
print(f"exit status {status}, terminal restored: {termios.tcgetattr(0) == before}")
"""


def hand_over(sshd, tmp_path, script: str) -> Terminal:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return Terminal([sys.executable, "-c", PROGRAM, f"{sshd.user}@127.0.0.1:{sshd.port}", str(sshd.client_key),
                     str(tmp_path / "state"), script], env)


def test_the_remote_program_gets_the_terminal_its_size_and_every_key(sshd, tmp_path):
    term = hand_over(sshd, tmp_path, 'stty size; trap "echo interrupted; exit 5" INT; printf "name? "; '
                                     'read name; echo "hello $name"; read _; stty size; while :; do sleep 1; done')
    try:
        term.expect(f"{ROWS} {COLUMNS}")  # the remote pty is as large as the local window
        term.expect("name? ")
        term.send("ada\r")
        term.expect("hello ada")
        term.resize(30, 100)  # and follows it when the window changes
        term.send("\r")
        term.expect("30 100")
        term.send("\x03")  # Ctrl-C goes to the remote program, not to the program handing over
        term.expect("interrupted")
        term.expect("exit status 5, terminal restored: True")
        assert term.wait() == 0
    finally:
        term.close()


def test_exit_status_comes_back_and_the_terminal_is_restored(sshd, tmp_path):
    term = hand_over(sshd, tmp_path, "tty; exit 7")
    try:
        assert term.expect("exit status 7, terminal restored: True").startswith("/dev/pts/")
        assert term.wait() == 0
    finally:
        term.close()
