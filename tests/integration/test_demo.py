"""Demo mode through a real terminal: `inv lab.chroot --demo --pause` on a pseudo-terminal, driven as
an instructor would drive it (Enter between steps, a shell on the VM at the interactive steps),
against the real QEMU VM `con0`.
"""

from __future__ import annotations

import os
import re

import pytest

from tests import cli
from tests.remote import sh
from tests.terminal import COLUMNS, ROWS, Terminal

pytestmark = pytest.mark.vm

@pytest.fixture(scope="module")
def env(qemu_settings):
    """The CLI's environment: the test VM's state and image cache, on a 120-column xterm."""
    values = dict(os.environ, INVOKE_VM_STATE_DIR=str(qemu_settings["state_dir"]),
                  INVOKE_VM_CACHE_DIR=str(qemu_settings["cache_dir"]), TERM="xterm-256color",
                  COLUMNS=str(COLUMNS), LINES=str(ROWS))
    for name in ("INVOKE_CHROOT_BUSYBOX_URL", "NO_COLOR", "CI"):
        values.pop(name, None)
    return values


VM = "con0"


def labkit(env: dict, *args: str, stdin_devnull: bool = False) -> Terminal:
    return Terminal(cli.inv(*args), env, stdin_devnull)


def test_demo_narrates_pauses_and_hands_over_a_shell(con0, env, remote):
    sh(remote, "rm -rf /root/rootfs /root/container.sh /root/.labkit")
    term = labkit(env, "lab.chroot", "--demo", "--pause", "--busybox", "/bin/busybox")
    try:
        term.expect("Demo: Creating a simple container with chroot (chroot) on con0")
        first = term.expect("Press Enter to run this step")
        assert "Step 1/7 rootfs: Prepare the rootfs directories" in first
        assert "A container needs a root filesystem" in first
        # It waits: nothing of the step has happened on the VM before Enter.
        assert sh(remote, "ls -d /root/rootfs 2>/dev/null || echo absent").strip() == "absent"
        term.send("\r")
        term.expect("$ mkdir -p rootfs/bin rootfs/sbin rootfs/usr/bin rootfs/usr/sbin")
        term.expect("✓ rootfs  Prepare the rootfs directories  done")
        assert sh(remote, "ls -d /root/rootfs/usr/sbin").strip() == "/root/rootfs/usr/sbin"

        term.expect("Step 2/7 busybox")
        term.expect("Press Enter to run this step")
        term.send("\r")
        term.expect("│ uploaded")  # output, as it streams, behind the output gutter
        term.expect("✓ busybox")

        symlinks = term.expect("Press Enter to run this step")
        # The explanation is rendered Markdown: its `code` spans lose their backticks.
        assert "busybox --install -s creates a symlink for every applet" in symlinks
        assert "`" not in symlinks
        term.send("\r")
        term.expect("✓ symlinks")

        term.expect("Step 4/7 chroot-shell")
        term.expect("Press Enter to run this step")
        start = len(term.raw)
        term.send("\r")
        term.expect('$ PS1="C-$ " chroot rootfs /bin/busybox sh    # then: touch HELLO.txt; ls; exit')
        # The command is syntax highlighted: its assignment, string and comment each in a style of their own.
        line = term.raw[start:].split(b"PS1", 1)[1].split(b"\n", 1)[0]
        assert len(set(re.findall(rb"\x1b\[([0-9;]+)m", line)) - {b"0"}) >= 3, line
        term.expect("│ HELLO.txt")
        term.expect("Open this step's shell on con0 and try it yourself? [y/N]")
        term.send("y\r")
        term.expect("C-$ ")
        term.send("echo demo-$((6 * 7)); ls /\r")
        inside = term.expect("C-$ ")
        assert "demo-42" in inside and "bin" in inside and "root" not in inside.split("demo-42")[1]
        term.send("exit\r")
        term.expect("✓ chroot-shell")

        term.expect("Step 5/7 container-script")
        term.expect("Press Enter to run this step")
        term.send("\r")
        term.expect("✓ container-script")

        term.expect("Step 6/7 overlay")
        term.expect("Press Enter to run this step")
        term.send("\r")
        term.expect("Open this step's shell on con0 and try it yourself? [y/N]")
        term.send("y\r")
        term.expect("-# ")  # the container's prompt: its nonce, then -#
        term.send("touch /made-in-the-demo && ls / && echo overlay-$((2 + 3))\r")
        inside = term.expect("overlay-5\n")
        assert "made-in-the-demo" in inside
        term.send("exit\r")
        term.expect("✓ overlay")
        # The container wrote to its own upper directory, never into the rootfs.
        assert sh(remote, "ls /root/rootfs/made-in-the-demo 2>/dev/null || echo absent").strip() == "absent"

        term.expect("Step 7/7 proc")
        term.expect("Press Enter to run this step")
        term.send("\r")
        term.expect("✓ proc")
        verdict = term.expect("errors in")
        assert "chroot on con0:" in verdict and " 0 failed" in verdict
        assert term.wait() == 0, term.screen[-3000:]
    finally:
        term.close()
    assert sh(remote, "grep -c ' overlay ' /proc/mounts || true").strip() == "0"


def test_demo_never_waits_or_asks_when_stdin_is_not_a_terminal(con0, env, remote):
    term = labkit(env, "lab.chroot", "--demo", "--pause", "--from", "overlay", "--force", stdin_devnull=True)
    try:
        assert term.wait() == 0, term.screen[-3000:]
    finally:
        term.close()
    screen = term.screen
    # Still the narration on this terminal, but no question for a person who is not there.
    assert "Step 1/2 overlay" in screen and "The overlay keeps the rootfs read-only" in screen
    assert "$ ./container.sh rootfs" in screen and "│ --- container 1" in screen
    assert "Press Enter" not in screen and "try it yourself" not in screen
    assert "✓ proc" in screen
