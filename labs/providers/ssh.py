"""The SSH transport (fabric) and the `ssh` provider: any machine given as USER@HOST[:PORT] with a key.

This is the only module that talks to fabric and paramiko. Host keys are always checked: a provider
that generated the VM's host key pins it before the first connection (strict); for a machine we did
not create, the first key seen is recorded and every later one must match (OpenSSH's accept-new).
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import os
import re
import shlex
import getpass
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paramiko
from fabric import Config, Connection
from fabric.runners import Remote as FabricRemoteRunner
from invoke.exceptions import CommandTimedOut

from .. import terminal
from ..errors import DISK_FULL_HINT, DiskFull, TargetError, UsageError
from .target import SSHTarget

# paramiko logs a failed connection's traceback from its own thread; the TargetError we raise says it
# in one line. Records still reach the root logger's handlers (inv --debug), not stderr by default.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_HOST_SPEC = re.compile(r"^(?:(?P<user>[^@:\s]+)@)?(?P<host>\[[0-9a-fA-F:]+\]|[^@:\s\[\]]+)(?::(?P<port>\d{1,5}))?$")


class Unreachable(TargetError):
    """No SSH session could be opened; unlike a refused login or a changed host key, this may pass."""


class CommandTimedOutError(TargetError):
    """A command overran its timeout and was ended on the target (a step may explain why)."""


class ConnectionLost(TargetError):
    """The connection broke while a command ran: what the command did on the target is unknown."""


# Every command carries LABKIT_RUN=<token> in its environment, which its children inherit: a stopped
# run (Ctrl-C, a timeout) can then end all of its processes on the target, containers' shells included.
_RUN_TOKEN = re.compile(r"LABKIT_RUN=([0-9a-f]{16})")
STOP_GRACE_S = 1


def stop_script(token: str) -> str:
    """Shell that ends every process of the run `token`: SIGTERM, then SIGKILL for what is left."""
    # grep -z (NUL-separated input) is not in every busybox: each environment's NULs become newlines.
    find = ("lk_pids() { for env in /proc/[0-9]*/environ; do "
            f"tr '\\000' '\\n' <\"$env\" 2>/dev/null | grep -qxF LABKIT_RUN={token} "
            "&& { pid=${env#/proc/}; echo \"${pid%/environ}\"; }; done; }\n")
    # $pids is split into one argument per process on purpose.
    return (f"{find}pids=$(lk_pids); [ -n \"$pids\" ] || exit 0\n"
            f"# shellcheck disable=SC2086\nkill -TERM $pids 2>/dev/null; sleep {STOP_GRACE_S}\n"
            "pids=$(lk_pids)\n# shellcheck disable=SC2086\n[ -z \"$pids\" ] || kill -KILL $pids 2>/dev/null; exit 0")


def _stop_run(client: paramiko.SSHClient, token: str, sudo: bool, timeout: float) -> None:
    """End the run `token` on the target through a channel of its own; best effort, never raises."""
    command = f"sh -c {shlex.quote(stop_script(token))}"
    try:
        channel = client.get_transport().open_session(timeout=timeout)
        channel.settimeout(timeout + STOP_GRACE_S)
        channel.exec_command(f"sudo -n {command}" if sudo else command)
        # Not recv_exit_status(): it waits without a bound, and a hung machine would hold its
        # worker of a class check far beyond the timeouts.
        channel.status_event.wait(timeout + STOP_GRACE_S)
        channel.close()
    except (paramiko.SSHException, EOFError, OSError, AttributeError):
        pass


class _StoppableRunner(FabricRemoteRunner):
    """Ctrl-C without a pty: fabric would wait for the remote command to end on its own; this ends its
    processes on the target first, so the lab's clean-up runs at once and finds nothing still busy."""

    def send_interrupt(self, interrupt):
        match = _RUN_TOKEN.search(self.result_kwargs.get("command", ""))
        if match:
            _stop_run(self.context.client, match.group(1), sudo=self.context.user != "root", timeout=5)
        self.channel.close()
        raise interrupt


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def parse_host(spec: str) -> tuple[str, str, int]:
    """USER@HOST[:PORT] -> (user, host, port); the user defaults to root and the port to 22."""
    match = _HOST_SPEC.match(spec.strip())
    port = int(match.group("port")) if match and match.group("port") else 22
    if not match or not 0 < port < 65536:
        raise UsageError(f"Cannot read --host '{spec}'.", "Write it as USER@HOST or USER@HOST:PORT, e.g. root@192.168.56.10:22.")
    return match.group("user") or "root", match.group("host").strip("[]"), port


def check_key_file(key: Path) -> None:
    """Refuse keys that ssh itself would refuse, before any connection is attempted."""
    if not key.is_file():
        raise UsageError(f"Key file {key} does not exist.", "Pass the private key of the lab machine with --key PATH.")
    if key.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"Key file {key} can be read by other users.", f"Restrict it first: chmod 600 {shlex.quote(str(key))}")


def key_state(key: Path) -> str:
    """`plain`, `encrypted` (it needs a passphrase, which labkit never asks for) or `unreadable`
    (not a private key paramiko reads), for `inv check.setup`."""
    try:
        paramiko.PKey.from_path(key)
    except paramiko.PasswordRequiredException:
        return "encrypted"
    except TypeError as error:  # paramiko hands OpenSSH-format keys to cryptography, which says it so
        return "encrypted" if "password" in str(error).lower() else "unreadable"
    except (paramiko.SSHException, OSError, ValueError):
        return "unreadable"
    return "plain"


def key_in_agent(key: Path) -> bool | None:
    """Whether ssh-agent holds the key (compared by its public half: KEY.pub, else the key itself);
    None when no agent answers."""
    connection = paramiko.agent.get_agent_connection()
    if connection is None:
        return None
    connection.close()
    try:
        public = Path(f"{key}.pub").read_text().split()[1] if Path(f"{key}.pub").is_file() else None
        blob = base64.b64decode(public) if public else paramiko.PKey.from_path(key).asbytes()
    except (paramiko.SSHException, OSError, ValueError, IndexError):
        return False
    agent = paramiko.Agent()
    try:
        return any(agent_key.asbytes() == blob for agent_key in agent.get_keys())
    finally:
        agent.close()


_passphrase_keys: dict[Path, paramiko.PKey] = {}
_passphrase_lock = threading.Lock()


def file_version(path: Path) -> tuple[int, int, int]:
    """What tells one version of a file from the next (inode, mtime in ns, size in bytes): the key of
    the parsing caches below, since a class check reads the same key, known_hosts and ssh config for
    every student. Raises OSError when the file is not there."""
    info = path.stat()
    return info.st_ino, info.st_mtime_ns, info.st_size


@functools.lru_cache(maxsize=8)
def _plain_key(path: Path, version: tuple[int, int, int]) -> paramiko.PKey:
    """A private key file parsed, once per version; raises as PKey.from_path does (for a passphrase, say)."""
    return paramiko.PKey.from_path(path)


@functools.lru_cache(maxsize=8)
def _host_keys(path: Path, version: tuple[int, int, int]) -> paramiko.HostKeys:
    """A known_hosts file parsed, once per version."""
    keys = paramiko.HostKeys()
    keys.load(str(path))
    return keys


@functools.lru_cache(maxsize=8)
def _ssh_config(path: Path, version: tuple[int, int, int]) -> paramiko.SSHConfig:
    """An ssh config file parsed, once per version."""
    return paramiko.SSHConfig.from_path(str(path))


def key_arguments(key_path: Path) -> dict:
    """paramiko's connect arguments for the private key `key_path`.

    A key protected by a passphrase is used through ssh-agent when the agent holds it; else its
    passphrase is asked once per run on the terminal (never echoed, kept in memory only as the
    decrypted key). Raises UsageError without a terminal, or for a wrong passphrase or unreadable key.
    """
    check_key_file(key_path)
    with _passphrase_lock:
        if key_path in _passphrase_keys:
            return {"pkey": _passphrase_keys[key_path], "look_for_keys": False, "allow_agent": False}
        try:
            key = _plain_key(key_path, file_version(key_path))
            if Path(f"{key_path}-cert.pub").exists():  # paramiko finds a certificate only beside a key file it is named
                return {"key_filename": str(key_path), "look_for_keys": False, "allow_agent": False}
            return {"pkey": key, "look_for_keys": False, "allow_agent": False}
        except (paramiko.PasswordRequiredException, TypeError):
            pass  # cryptography says "password-protected" with a TypeError
        except (paramiko.SSHException, ValueError) as error:
            raise UsageError(f"Key file {key_path} is not a private key labkit can read ({error}).",
                             "Pass the private key (not the .pub file) in OpenSSH or PEM format.") from None
        if key_in_agent(key_path):
            return {"look_for_keys": False, "allow_agent": True}
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise UsageError(f"Key file {key_path} is protected by a passphrase and there is no terminal to ask for it.",
                             f"Add it to ssh-agent first: eval \"$(ssh-agent)\" && ssh-add {shlex.quote(str(key_path))}")
        passphrase = getpass.getpass(f"Passphrase for {key_path}: ")
        try:
            key = paramiko.PKey.from_path(key_path, password=passphrase.encode())
        except (paramiko.SSHException, ValueError, TypeError):
            raise UsageError(f"The passphrase for key file {key_path} is wrong.",
                             "Run again and type it carefully, or add the key to ssh-agent (ssh-add).") from None
        finally:
            del passphrase
        _passphrase_keys[key_path] = key
        return {"pkey": key, "look_for_keys": False, "allow_agent": False}


def pinned_keys(known_hosts: Path, label: str) -> dict[str, paramiko.PKey]:
    """The keys `known_hosts` pins for `label` (`host`, or `[host]:port` off port 22), by key type.

    The file is parsed once per version of it: a class check's known_hosts holds every student's
    machine, and parsing all of it for each login made a class check quadratic in its size."""
    try:
        version = file_version(known_hosts)
    except FileNotFoundError:
        return {}
    return dict(_host_keys(known_hosts, version).lookup(label) or {})


class _RecordNewHostKey(paramiko.MissingHostKeyPolicy):
    """accept-new: pin an unknown host's key in our known_hosts file; a changed key still fails.

    A class check meets many new hosts at once: a lock keeps their pins from overwriting each other,
    and the file is replaced by a rename, so a connection loading it meanwhile never reads half of it.
    """

    _lock = threading.Lock()

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        with self._lock:
            keys = paramiko.HostKeys()
            if self.path.exists():
                keys.load(str(self.path))
            keys.add(hostname, key.get_name(), key)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            keys.save(str(temporary))
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)


class _LineSink(io.StringIO):
    """A stream fabric writes command output to; calls `on_line` for every complete line."""

    def __init__(self, on_line: Callable[[str], None]):
        super().__init__()
        self.on_line = on_line
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.on_line(line)
        return len(text)

    def flush(self) -> None:
        """invoke flushes after every chunk, which may end mid-line: a partial line waits for its end."""

    def finish(self) -> None:
        """The command ended: a last line without a newline is still a line."""
        if self.pending:
            self.on_line(self.pending)
            self.pending = ""


class Remote:
    """One SSH connection to a lab machine, reused for every command of a run.

    After a lost connection, `restore` logs in again up to `reconnect_attempts` times, waiting
    `reconnect_backoff` seconds before the first attempt and twice as long before each next one.
    """

    def __init__(self, target: SSHTarget, connect_timeout: float = 10, command_timeout: float = 300,
                 reconnect_attempts: int = 3, reconnect_backoff: float = 1.0):
        self.target = target
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_backoff = reconnect_backoff
        self._connection: Connection | None = None
        self._orphan = ""  # the token of a run whose connection broke: `restore` ends what is left of it

    def _open(self) -> Connection:
        target = self.target
        connect_kwargs = {"banner_timeout": self.connect_timeout, "auth_timeout": self.connect_timeout}
        if target.key_path:
            connect_kwargs.update(key_arguments(Path(target.key_path)))
        config = Config(overrides={"runners": {"remote": _StoppableRunner}, "load_ssh_configs": False})
        gateway = None
        if target.proxy_jump:
            jump_user, jump_host, jump_port = parse_host(target.proxy_jump)
            gateway = Connection(jump_host, user=jump_user if "@" in target.proxy_jump else target.user,
                                 port=jump_port, connect_timeout=self.connect_timeout,
                                 connect_kwargs=dict(connect_kwargs), config=config)
            self._trust_host_keys(gateway.client, Path(target.known_hosts), jump_host, jump_port)
        connection = Connection(target.host, user=target.user, port=target.port, gateway=gateway,
                                connect_timeout=self.connect_timeout, connect_kwargs=connect_kwargs, config=config)
        known_hosts = Path(target.known_hosts)
        self._trust_host_keys(connection.client, known_hosts, target.host, target.port)
        try:
            self._login(connection)
        except BaseException:
            # paramiko keeps a transport that got as far as the host key or the login running (its
            # thread and socket) after connect() raises: a class of refused logins would pile them up.
            connection.client.close()
            if gateway is not None:
                gateway.close()
            raise
        return connection

    def _login(self, connection: Connection) -> None:
        """Open `connection`, every failure said as a TargetError (Unreachable when it may pass)."""
        target, known_hosts = self.target, Path(self.target.known_hosts)
        try:
            connection.open()
        except paramiko.BadHostKeyException:
            label = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
            raise TargetError(
                f"The SSH host key of {target.name} ({label}) is not the one pinned in {known_hosts}.",
                f"If the machine was recreated on purpose, forget the old key: ssh-keygen -R '{label}' -f {known_hosts}",
            ) from None
        except paramiko.SSHException as error:
            if "not found in known_hosts" in str(error):
                raise TargetError(f"{target.name} presented a host key that was never pinned.",
                                  f"Recreate the VM through the toolkit: inv vm.destroy {target.name} && inv vm.up {target.name}") from None
            transport = connection.client.get_transport()
            answered = transport is not None and bool(getattr(transport, "remote_version", ""))
            if isinstance(error, paramiko.AuthenticationException) or answered:
                server = transport.remote_version if answered else "the SSH server"
                key = f"key {target.key_path}" if target.key_path else "the keys of ssh-agent and ~/.ssh"
                raise TargetError(f"The SSH server at {target.address} ({server}) answered and refused the login as "
                                  f"{target.user} with {key} ({error or type(error).__name__}).",
                                  "The server does not accept this key for this user: check --key and the user in "
                                  "--host (its public key must be in that user's ~/.ssh/authorized_keys).") from None
            raise Unreachable(f"No SSH server answered at {target.address} ({error}).",
                              "Check the host and port; is the machine booted?") from None
        except (socket.timeout, TimeoutError):
            raise Unreachable(f"Connecting to {target.address} timed out after {self.connect_timeout:g}s.",
                              "Check the host and port, and that the machine is up (inv vm.status).") from None
        except OSError as error:
            # paramiko wraps the refusals of every address it tried; each says the same in its strerror.
            reasons = getattr(error, "errors", {}).values()
            reason = next((cause.strerror for cause in reasons if cause.strerror), "") or error.strerror or error
            raise Unreachable(f"Cannot connect to {target.address}: {reason}.",
                              "Check the host and port, and that the machine is up (inv vm.status).") from None

    def _trust_host_keys(self, client: paramiko.SSHClient, known_hosts: Path, host: str, port: int) -> None:
        label = host if port == 22 else f"[{host}]:{port}"
        for key_type, key in pinned_keys(known_hosts, label).items():
            client.get_host_keys().add(label, key_type, key)
        client.set_missing_host_key_policy(
            paramiko.RejectPolicy() if self.target.strict_host_key else _RecordNewHostKey(known_hosts))

    @property
    def connection(self) -> Connection:
        if self._connection is None or not self._connection.is_connected:
            self._connection = self._open()
        return self._connection

    def reconnect(self) -> None:
        """A new login session, so that group changes and the like take effect."""
        self.close()
        self._connection = self._open()

    def restore(self, on_wait: Callable[[int, float], None]) -> None:
        """Log in again after a lost connection, with bounded attempts and a doubling wait between them.

        `on_wait(attempt, seconds)` is told before each wait. Only failures that may pass (nothing
        answers yet) are retried: a refused login or a changed host key ends it at once.
        """
        self.close()
        delay, waited, last = self.reconnect_backoff, 0.0, "target.reconnect_attempts is 0"
        for attempt in range(1, self.reconnect_attempts + 1):
            on_wait(attempt, delay)
            time.sleep(delay)
            waited += delay
            try:
                self._connection = self._open()
            except Unreachable as error:
                last = error.message
                delay *= 2
                continue
            if self._orphan:
                _stop_run(self._connection.client, self._orphan, sudo=self.target.user != "root",
                          timeout=self.connect_timeout)
                self._orphan = ""
            return
        raise TargetError(
            f"The SSH connection to {self.target.name} was lost and {self.reconnect_attempts} attempts to log in "
            f"again over {waited:g}s failed; the last: {last}",
            "Check that the machine is up (inv vm.status) and run the lab again: steps already done are skipped.")

    def run(self, script: str, *, stdin: str | None = None, root: bool = True, timeout: float | None = None,
            on_line: Callable[[str], None] | None = None) -> CommandResult:
        """Run `script` with sh on the target (as root through sudo when the login user is not root).

        `stdin` (a few commands to feed a shell: it travels on the command line) reaches the command
        through a pipe on the target rather than the SSH channel, so a command that exits before
        reading all of it simply does not read it.
        """
        token = os.urandom(8).hex()
        command = self._command(script, root, token)
        if stdin is not None:
            command = f"printf %s {shlex.quote(stdin)} | {command}"
        sinks = [_LineSink(on_line) if on_line else io.StringIO() for _ in range(2)]
        started = time.monotonic()
        connection = self.connection
        try:
            result = connection.run(
                command, warn=True, hide=False, pty=False, timeout=timeout or self.command_timeout,
                in_stream=False,
                out_stream=sinks[0], err_stream=sinks[1])
        except CommandTimedOut:
            raise self._timed_out(connection, token, timeout) from None
        except (paramiko.SSHException, EOFError, OSError) as error:
            raise self._lost(error, token) from None
        # invoke tells a timeout by its timer thread having ended; on a loaded machine the channel that
        # timer closed can be seen first, and then the command "ends" with no exit status (-1).
        if result.exited == -1:
            if time.monotonic() - started >= (timeout or self.command_timeout):
                raise self._timed_out(connection, token, timeout)
            if not connection.is_connected:
                raise self._lost(EOFError("the session ended without an exit status"), token)
        for sink in sinks:
            if isinstance(sink, _LineSink):
                sink.finish()
        return CommandResult(result.exited, result.stdout, result.stderr, time.monotonic() - started)

    def _lost(self, error: BaseException, token: str = "") -> ConnectionLost:
        self._connection = None
        self._orphan = token
        return ConnectionLost(f"The SSH connection to {self.target.name} was lost ({error or type(error).__name__}).",
                              "Check that the machine is still up (inv vm.status) and run the lab again.")

    def _timed_out(self, connection: Connection, token: str, timeout: float | None) -> CommandTimedOutError:
        """The command overran: end its processes on the target, so nothing of it goes on unseen."""
        _stop_run(connection.client, token, sudo=self.target.user != "root", timeout=self.connect_timeout)
        return CommandTimedOutError(f"A command on {self.target.name} did not finish within {timeout or self.command_timeout:g}s.",
                           "The machine may be overloaded or the command waits for input; try again, or raise "
                           "target.command_timeout (target.check_timeout for --inventory).")

    def _command(self, script: str, root: bool, token: str = "") -> str:
        command = f"sh -c {shlex.quote(script)}"
        sudo = root and self.target.user != "root"
        if token:
            command = f"{'env ' if sudo else ''}LABKIT_RUN={token} {command}"
        return f"sudo -n {command}" if sudo else command

    def interactive(self, script: str, *, root: bool = True) -> int:
        """Run `script` on a pty sized like this terminal and hand the terminal to it until it exits.

        For demo mode's shells; returns the program's exit status.
        """
        sys.stdout.flush()
        try:
            channel = self.connection.client.get_transport().open_session(timeout=self.connect_timeout)
            try:
                columns, rows = terminal.size(sys.stdout.fileno())
                channel.get_pty(term=os.environ.get("TERM") or "xterm", width=columns, height=rows)
                channel.exec_command(self._command(script, root))
                terminal.attach(channel, sys.stdin.fileno(), sys.stdout.fileno())
                return channel.recv_exit_status()
            finally:
                channel.close()
        except (paramiko.SSHException, EOFError, OSError) as error:
            raise self._lost(error) from None

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        """Write `data` to `path` on the target over SFTP, as the login user; a partial file is removed."""
        connection = self.connection
        try:
            sftp = connection.sftp()
        except (paramiko.SSHException, EOFError, OSError) as error:
            raise self._lost(error) from None
        try:
            with sftp.open(path, "wb") as remote_file:
                remote_file.write(data)
            sftp.chmod(path, mode)
        except OSError as error:
            if not connection.is_connected:
                raise self._lost(error) from None
            self.run(f"rm -f {shlex.quote(path)}", root=False)
            free = self.run(f"df -Pk {shlex.quote(path.rsplit('/', 1)[0] or '/')} | awk 'NR == 2 {{ print $4 }}'",
                            root=False).stdout.strip()
            if free.isdigit() and int(free) * 1024 < len(data):
                raise DiskFull(f"The disk of {self.target.name} is full: {len(data)} bytes do not fit in "
                               f"{path.rsplit('/', 1)[0] or '/'} ({free} KiB free).", DISK_FULL_HINT) from None
            raise TargetError(f"Could not write {path} on {self.target.name} ({error}).",
                              "Check the free space and permissions there (df -h; ls -ld).") from None

    def close(self) -> None:
        """Close the connection and its ProxyJump gateway, which fabric leaves open."""
        if self._connection is not None:
            self._connection.close()
            if isinstance(self._connection.gateway, Connection):
                self._connection.gateway.close()
            self._connection = None


def ssh_config_entry(alias: str, path: Path | None = None) -> dict:
    """What ~/.ssh/config (or `path`) says for host `alias`, as OpenSSH reads it (paramiko's parser:
    first value wins, Match/Include supported); {} when the file or the alias is not there."""
    path = path or Path.home() / ".ssh" / "config"
    if not path.is_file():
        return {}
    entry = _ssh_config(path, file_version(path)).lookup(alias)
    return entry if set(entry) - {"hostname"} or entry.get("hostname", alias) != alias else {}


def ssh_target(host_spec: str, key: str | None, state_dir: Path, workdir: str = "", name: str | None = None) -> SSHTarget:
    """The `ssh` provider: a machine we did not create, its host key pinned on first sight.

    A host named in ~/.ssh/config takes its HostName, User, Port, IdentityFile and ProxyJump from
    there; what --host and --key say explicitly wins."""
    user, host, port = parse_host(host_spec)
    explicit_user = "@" in host_spec
    explicit_port = bool(re.search(r":\d+$", host_spec.strip()))
    entry = ssh_config_entry(host)
    alias = host
    if entry:
        host = entry.get("hostname", host)
        user = user if explicit_user else entry.get("user", user)
        port = port if explicit_port else int(entry.get("port", port))
        if not key:
            key = next((path for path in entry.get("identityfile", []) if Path(path).expanduser().is_file()), None)
    key_path = Path(key).expanduser() if key else None
    if key_path:
        check_key_file(key_path)
    proxy = entry.get("proxyjump", "") if entry else ""
    return SSHTarget(name=name or (alias if entry else f"{user}@{host}:{port}"), host=host, port=port, user=user,
                     key_path=key_path, known_hosts=state_dir / "known_hosts", provider="ssh",
                     strict_host_key=False, workdir=workdir, proxy_jump="" if proxy == "none" else proxy)
