"""Real OpenSSH servers on loopback for tests: each with its own host key and authorized key."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A loopback port nobody listens on, never the same one twice in this process: servers started
    side by side would otherwise both be offered a port the kernel considers free again."""
    with _ports_lock:
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return path


@dataclass
class Sshd:
    """One running sshd; `known_hosts_line` is what a correct pin of its host key looks like."""

    directory: Path
    port: int
    user: str
    client_key: Path
    host_key: Path
    process: subprocess.Popen

    @property
    def known_hosts_line(self) -> str:
        kind, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {key}\n"

    def stop(self) -> None:
        """Stop the server and the sessions it started, as if the machine went down."""
        sessions = _descendants(self.process.pid)
        self.process.terminate()
        for pid in sessions:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _descendants(pid: int) -> list[int]:
    """The processes started by `pid`, its children's children included (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name in parentheses may hold spaces: the parent pid follows its last ")".
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def start_sshd(directory: Path, client_key: Path | None = None, user: str | None = None, extra_config: str = "") -> Sshd:
    """Start sshd on a free loopback port, accepting `client_key` (made when not given) for `user`.

    `extra_config` is appended to sshd_config, e.g. to make a misconfigured machine.
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", exist_ok=True)
    host_key = keygen(directory / "host_ed25519")
    client_key = client_key or keygen(directory / "client_ed25519")
    authorized = directory / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n"
        f"PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"UsePAM no\nStrictModes no\nPidFile {directory / 'sshd.pid'}\nSubsystem sftp internal-sftp\n"
        f"LogLevel ERROR\nMaxStartups 100\n"
        # bash sources ~/.bashrc for commands run by sshd unless it is a nested shell: this machine's
        # dotfiles (pyenv and the like) are no part of a lab machine, and cost ~0.1 s per command.
        f"SetEnv SHLVL=1\n{extra_config}"
    )
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=open(directory / "sshd.log", "wb"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(16).startswith(b"SSH-"):
                    break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        raise RuntimeError(f"sshd did not start: {(directory / 'sshd.log').read_text()}")
    return Sshd(directory, port, user or pwd.getpwuid(os.getuid()).pw_name, client_key, host_key, process)
