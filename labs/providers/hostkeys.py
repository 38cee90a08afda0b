"""Pinning the SSH host key of a VM whose keys the toolkit did not generate.

bakerx tells ssh `StrictHostKeyChecking=no`, so a VM recreated on a reused port would be trusted
silently. Each VM gets its own known_hosts file (paramiko's format, which OpenSSH reads too) holding
the first key seen on each port; later keys must match, unless the caller replaces the pin on purpose.
"""

from __future__ import annotations

import os
import shlex
import socket
from pathlib import Path

import paramiko

from ..errors import TargetError


class HostKeyChanged(Exception):
    """The key presented on a pinned port is not the pinned one."""


def entry_name(host: str, port: int) -> str:
    """The known_hosts name of HOST:PORT, as OpenSSH and paramiko write it."""
    return host if port == 22 else f"[{host}]:{port}"


def forget_command(known_hosts: Path, host: str, port: int) -> str:
    """The shell command that removes the pin of HOST:PORT from `known_hosts`."""
    return f"ssh-keygen -R {shlex.quote(entry_name(host, port))} -f {shlex.quote(str(known_hosts))}"


def _load(known_hosts: Path) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    if known_hosts.exists():
        keys.load(str(known_hosts))
    return keys


def fetch_host_key(host: str, port: int, known_hosts: Path, timeout: float = 15) -> paramiko.PKey:
    """The host key the SSH server at HOST:PORT presents; a pinned key type is asked for first, as
    paramiko's own client does, so an unchanged server presents the key that was pinned."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as error:
        raise TargetError(f"No SSH server answered at {host}:{port} ({error.strerror or error}).",
                          "Check that the VM is running, then retry.") from None
    transport = paramiko.Transport(sock)
    try:
        pinned = _load(known_hosts).lookup(entry_name(host, port))
        if pinned:
            options = transport.get_security_options()
            preferred = [kind for kind in pinned.keys() if kind in options.key_types]
            options.key_types = preferred + [kind for kind in options.key_types if kind not in preferred]
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as error:
        raise TargetError(f"The SSH server at {host}:{port} did not complete a key exchange ({error}).",
                          "Check that the VM has finished booting, then retry.") from None
    finally:
        transport.close()


def pin_host_key(known_hosts: Path, host: str, port: int, key: paramiko.PKey, *, replace: bool = False) -> str:
    """Pin `key` for HOST:PORT: 'pinned' on first sight, 'same' when it matches, 'replaced' when it
    differs and `replace` is set; HostKeyChanged when it differs otherwise."""
    keys = _load(known_hosts)
    name = entry_name(host, port)
    pinned = keys.lookup(name)
    if pinned and any(existing == key for existing in pinned.values()):
        return "same"
    if pinned and not replace:
        raise HostKeyChanged(name)
    outcome = "replaced" if pinned else "pinned"
    while name in keys:
        del keys[name]
    keys.add(name, key.get_name(), key)
    known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = known_hosts.with_name(known_hosts.name + ".tmp")
    keys.save(str(temporary))
    os.chmod(temporary, 0o600)
    temporary.replace(known_hosts)
    return outcome
