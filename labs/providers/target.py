"""What every provider hands back: how to reach a lab machine over SSH."""

from dataclasses import dataclass
from pathlib import Path

# Written into every VM a provider creates (qemu: at boot, from the seed disk; bakerx: after `run`).
# A machine without it was not made by labkit, and destructive demonstrations refuse it.
LAB_VM_MARKER = "/etc/labkit-vm"


@dataclass(frozen=True)
class SSHTarget:
    """SSH details of one lab machine; `known_hosts` holds its pinned host key."""

    name: str
    host: str
    port: int
    user: str
    key_path: Path | None
    known_hosts: Path
    provider: str
    # Host keys not yet in `known_hosts` are refused when True (the provider pinned the key
    # itself), and recorded on first sight when False (ssh's accept-new).
    strict_host_key: bool = True
    workdir: str = ""
    # OpenSSH's ProxyJump from ~/.ssh/config: [USER@]HOST[:PORT] of a machine to log in through.
    proxy_jump: str = ""

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"
