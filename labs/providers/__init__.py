"""Choosing a provider and asking it for the SSH details of the lab machine."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from .ssh import ssh_target
from .target import SSHTarget

PROVIDERS = ("auto", "qemu", "bakerx", "ssh")


def choose(provider: str, host: str | None) -> str:
    """The provider a run uses: `auto` means ssh with --host, else bakerx when installed, else qemu."""
    if provider not in PROVIDERS:
        raise UsageError(f"Unknown provider '{provider}'.", f"Use --provider with one of: {', '.join(PROVIDERS)}.")
    if host and provider not in ("auto", "ssh"):
        raise UsageError(f"--host cannot be combined with --provider {provider}.",
                         "Use --provider ssh (or leave it out) with --host, or drop --host to use a VM.")
    if provider == "auto":
        return "ssh" if host else ("bakerx" if shutil.which("bakerx") and _bakerx_supported() else "qemu")
    if provider == "ssh" and not host:
        raise UsageError("--provider ssh needs a machine to connect to.", "Add --host USER@HOST[:PORT] --key PATH.")
    if provider == "bakerx" and not _bakerx_supported():
        raise UsageError("The bakerx provider is not part of this version yet.",
                         "Use --provider qemu (the built-in VM) or --provider ssh --host USER@HOST:PORT --key KEY.")
    return provider


def _bakerx_supported() -> bool:
    return False


def vm_provider(name: str, settings: dict, progress: Callable[[str], None]):
    """The provider object that manages VMs (`inv vm.*`)."""
    if name in ("auto", "qemu"):
        from .qemu import QemuProvider
        return QemuProvider(settings, progress)
    raise UsageError(f"The {name} provider does not manage VMs.", "Use --provider qemu.")


def resolve(provider: str, *, vm: str, host: str | None, key: str | None, workdir: str, vm_settings: dict,
            state_dir: Path, progress: Callable[[str], None]) -> SSHTarget:
    """SSH details of the lab machine, booting the built-in VM when that is the provider."""
    chosen = choose(provider, host)
    if chosen == "ssh":
        return ssh_target(host, key, state_dir, workdir=workdir)
    target = vm_provider(chosen, vm_settings, progress).up(vm)
    return replace(target, workdir=workdir) if workdir else target
