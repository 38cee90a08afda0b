"""SSH logins as students have them, against real sshd servers on loopback: every failure named
truthfully, keys with a passphrase (asked once on a terminal, else ssh-agent), keys held by a real
ssh-agent, and hosts from ~/.ssh/config (HostName, User, Port, IdentityFile, ProxyJump)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from labs.errors import TargetError, UsageError
from labs.providers.ssh import Remote, Unreachable, ssh_target
from tests import cli
from tests.sshd import free_port, keygen, start_sshd
from tests.terminal import Terminal

PASSPHRASE = "correct horse battery"


def login(sshd, tmp_path, key) -> Remote:
    return Remote(ssh_target(f"{sshd.user}@127.0.0.1:{sshd.port}", str(key), tmp_path / "state"), connect_timeout=5)


def encrypted_copy(key, tmp_path, name="locked"):
    """The same key pair as `key`, its private half protected by PASSPHRASE."""
    locked = tmp_path / name
    locked.write_bytes(key.read_bytes())
    locked.chmod(0o600)
    locked.with_name(name + ".pub").write_bytes(key.with_suffix(".pub").read_bytes())
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", PASSPHRASE, "-f", str(locked)], check=True)
    return locked


def test_nothing_listening_is_unreachable(tmp_path, sshd):
    port = free_port()
    with pytest.raises(Unreachable) as raised:
        Remote(ssh_target(f"{sshd.user}@127.0.0.1:{port}", str(sshd.client_key), tmp_path / "s")).run("true")
    assert "Connection refused" in raised.value.message and raised.value.code == 3


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_a_key_the_server_does_not_accept_is_refused_not_unreachable(sshd, tmp_path, kind):
    other = keygen(tmp_path / f"other_{kind}", kind)
    with pytest.raises(TargetError) as raised:
        login(sshd, tmp_path, other).run("true")
    assert not isinstance(raised.value, Unreachable)
    assert "answered and refused the login" in raised.value.message and "OpenSSH" in raised.value.message
    assert "No SSH server answered" not in str(raised.value)


def test_an_encrypted_key_without_a_terminal_says_to_use_ssh_agent(sshd, tmp_path, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    locked = encrypted_copy(sshd.client_key, tmp_path)
    with pytest.raises(UsageError) as raised:
        login(sshd, tmp_path, locked).run("true")
    assert "protected by a passphrase" in raised.value.message and "ssh-add" in raised.value.hint


@pytest.fixture
def agent(tmp_path):
    """A real ssh-agent on a socket of its own; yields its environment."""
    sock = tmp_path / "agent.sock"
    process = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    for _ in range(100):
        if sock.exists():
            break
        subprocess.run(["sleep", "0.05"])
    yield {"SSH_AUTH_SOCK": str(sock)}
    process.send_signal(signal.SIGTERM)
    process.wait(5)


def test_an_encrypted_key_held_by_ssh_agent_logs_in(sshd, tmp_path, agent, monkeypatch):
    subprocess.run(["ssh-add", "-q", str(sshd.client_key)], env={**os.environ, **agent}, check=True)
    locked = encrypted_copy(sshd.client_key, tmp_path)
    monkeypatch.setenv("SSH_AUTH_SOCK", agent["SSH_AUTH_SOCK"])
    assert login(sshd, tmp_path, locked).run("echo in").stdout == "in\n"


def test_without_key_the_agents_key_is_used(sshd, tmp_path, agent, monkeypatch):
    subprocess.run(["ssh-add", "-q", str(sshd.client_key)], env={**os.environ, **agent}, check=True)
    monkeypatch.setenv("SSH_AUTH_SOCK", agent["SSH_AUTH_SOCK"])
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh keys of this machine's user
    remote = Remote(ssh_target(f"{sshd.user}@127.0.0.1:{sshd.port}", None, tmp_path / "state"))
    assert remote.run("echo agent").stdout == "agent\n"


# Logs in twice (a new session, as after joining a group) with an encrypted key: one question.
TWICE = """import sys
from pathlib import Path
from labs.providers.ssh import Remote, ssh_target
remote = Remote(ssh_target(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
print(remote.run("echo first").stdout.strip())
remote.reconnect()
print(remote.run("echo second").stdout.strip())
"""


def twice_on_a_terminal(sshd, tmp_path, locked) -> Terminal:
    """TWICE on a pseudo-terminal, without ssh-agent."""
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return Terminal([sys.executable, "-c", TWICE, f"{sshd.user}@127.0.0.1:{sshd.port}", str(locked),
                     str(tmp_path / "state")], dict(env, PYTHONPATH=str(cli.REPO)))


def test_an_encrypted_key_is_asked_for_once_on_a_terminal_and_never_shown(sshd, tmp_path):
    locked = encrypted_copy(sshd.client_key, tmp_path)
    terminal = twice_on_a_terminal(sshd, tmp_path, locked)
    try:
        terminal.expect(f"Passphrase for {locked}:", timeout=30)
        terminal.send(PASSPHRASE + "\n")
        terminal.expect("second", timeout=30)
        assert terminal.wait(30) == 0
    finally:
        terminal.close()
    assert terminal.screen.count("Passphrase for") == 1
    assert PASSPHRASE not in terminal.screen and "first" in terminal.screen


def test_a_wrong_passphrase_is_named(sshd, tmp_path):
    terminal = twice_on_a_terminal(sshd, tmp_path, encrypted_copy(sshd.client_key, tmp_path))
    try:
        terminal.expect("Passphrase for", timeout=30)
        terminal.send("not it\n")
        terminal.wait(30)
    finally:
        terminal.close()
    assert "The passphrase for key file" in terminal.screen and "is wrong" in terminal.screen


def write_ssh_config(home, text: str) -> None:
    (home / ".ssh").mkdir(mode=0o700, exist_ok=True)
    (home / ".ssh" / "config").write_text(text)


def test_a_host_from_ssh_config(sshd, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_ssh_config(tmp_path, f"Host con0\n  HostName 127.0.0.1\n  User {sshd.user}\n  Port {sshd.port}\n"
                               f"  IdentityFile {sshd.client_key}\n")
    target = ssh_target("con0", None, tmp_path / "state")
    assert (target.host, target.port, target.user, target.key_path) == ("127.0.0.1", sshd.port, sshd.user, sshd.client_key)
    assert Remote(target).run("echo via config").stdout == "via config\n"


def test_proxyjump_from_ssh_config_goes_through_the_jump_host(sshd, tmp_path, monkeypatch):
    jump = start_sshd(tmp_path / "jump", client_key=sshd.client_key, user=sshd.user)
    try:
        monkeypatch.setenv("HOME", str(tmp_path))
        write_ssh_config(tmp_path, f"Host lab\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
                                   f"  IdentityFile {sshd.client_key}\n  ProxyJump {sshd.user}@127.0.0.1:{jump.port}\n")
        target = ssh_target("lab", None, tmp_path / "state")
        assert target.proxy_jump == f"{sshd.user}@127.0.0.1:{jump.port}"
        assert Remote(target).run("echo jumped").stdout == "jumped\n"
    finally:
        jump.stop()
    with pytest.raises(Unreachable):  # the jump host is gone: the login needs it
        Remote(target, connect_timeout=5).run("true")


def test_an_unreachable_host_gets_its_error_alone_without_a_run_header(tmp_path):
    port = free_port()
    key = keygen(tmp_path / "k")
    result = cli.labkit(dict(os.environ, INVOKE_VM_STATE_DIR=str(tmp_path / "state")), "check.chroot",
                        "--provider", "ssh", "--host", f"root@127.0.0.1:{port}", "--key", str(key), timeout=60)
    assert result.returncode == 3
    assert "Connection refused" in result.stderr
    assert "Checking" not in result.stdout and "passed" not in result.stdout, result.stdout
