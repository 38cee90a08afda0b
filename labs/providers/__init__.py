"""Choosing a provider and asking it for the SSH details of the lab machine."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..errors import TargetError, UsageError
from . import vmimage
from .ssh import ssh_target
from .target import SSHTarget

PROVIDERS = ("auto", "qemu", "bakerx", "ssh")
_CONFIG_WORD = re.compile(r"[A-Za-z0-9._-]+")


def choose(provider: str, host: str | None, bakerx_settings: dict | None = None,
           progress: Callable[[str], None] = lambda message: None) -> str:
    """The provider a run uses. `auto` means ssh with --host, else bakerx when it is installed and
    answers `--version`, else the built-in qemu VM; what auto chose, and why, goes to `progress`."""
    if provider not in PROVIDERS:
        raise UsageError(f"Unknown provider '{provider}'.", f"Use --provider with one of: {', '.join(PROVIDERS)}.")
    if host and provider not in ("auto", "ssh"):
        raise UsageError(f"--host cannot be combined with --provider {provider}.",
                         "Use --provider ssh (or leave it out) with --host, or drop --host to use a VM.")
    if provider == "ssh" and not host:
        raise UsageError("--provider ssh needs a machine to connect to.", "Add --host USER@HOST[:PORT] --key PATH.")
    if provider != "auto":
        return provider
    if host:
        return "ssh"
    from .bakerx import DEFAULTS, detect_version, version_text
    try:
        version = detect_version({**DEFAULTS, **(bakerx_settings or {})}["command"])
    except TargetError as error:
        progress(f"--provider auto: using the built-in qemu VM ({error.message.rstrip('.')})")
        return "qemu"
    progress(f"--provider auto: using bakerx {version_text(version)}, which is installed and working")
    return "bakerx"


def vm_state_dir(vm_settings: dict) -> Path:
    """The toolkit's state directory (setting vm.state_dir), as every provider uses it."""
    return Path(vm_settings.get("state_dir") or vmimage.default_dir("XDG_STATE_HOME", ".local/state")).expanduser()


def vm_provider(name: str, settings: dict, progress: Callable[[str], None], bakerx_settings: dict | None = None):
    """The provider object that manages VMs (`inv vm.*`): QemuProvider or BakerxProvider."""
    if name == "ssh":
        raise UsageError("The ssh provider does not manage VMs.", "Use --provider qemu or --provider bakerx.")
    if choose(name, None, bakerx_settings, progress) == "bakerx":
        from .bakerx import BakerxProvider
        return BakerxProvider(bakerx_settings or {}, vm_state_dir(settings), progress)
    from .qemu import QemuProvider
    return QemuProvider(settings, progress)


def resolve(provider: str, *, vm: str, host: str | None, key: str | None, workdir: str, vm_settings: dict,
            state_dir: Path, progress: Callable[[str], None], bakerx_settings: dict | None = None) -> SSHTarget:
    """SSH details of the lab machine, starting its VM when a VM provider is chosen."""
    chosen = choose(provider, host, bakerx_settings, progress)
    if chosen == "ssh":
        return ssh_target(host, key, state_dir, workdir=workdir)
    target = vm_provider(chosen, vm_settings, progress, bakerx_settings).up(vm)
    return replace(target, workdir=workdir) if workdir else target


def ssh_config(provider: str, vm_settings: dict, bakerx_settings: dict) -> str:
    """OpenSSH config blocks for the lab VMs the toolkit knows (every provider for `auto`), for
    `ssh -F FILE NAME`, VS Code Remote-SSH, testinfra or ansible. Each block is `Host NAME
    NAME.PROVIDER`; when two providers have a VM of the same name, the first keeps the bare name:
    bakerx's when bakerx is installed. Host keys are checked against the pins the toolkit keeps."""
    if provider == "ssh" or provider not in PROVIDERS:
        raise UsageError(f"vm.ssh-config lists VMs: --provider {provider} has none.", "Use --provider auto, qemu or bakerx.")
    from .bakerx import DEFAULTS, BakerxProvider
    from .qemu import QemuProvider
    bakerx_settings = {**DEFAULTS, **bakerx_settings}
    providers = {"qemu": QemuProvider(vm_settings), "bakerx": BakerxProvider(bakerx_settings, vm_state_dir(vm_settings))}
    order = ["bakerx", "qemu"] if shutil.which(bakerx_settings["command"]) else ["qemu", "bakerx"]
    lines = ["# Lab VMs known to labkit (inv vm.ssh-config). Use: ssh -F THIS_FILE con0, or Include it in ~/.ssh/config."]
    named: set[str] = set()
    for name in order if provider == "auto" else [provider]:
        for status in providers[name].status():
            alias = f"{status.name}.{name}"
            if status.state != "running":
                lines += ["", f"# {alias}: {status.state}; start it with: inv vm.up {status.name} --provider {name}"]
                continue
            target = providers[name].target(status.name)
            hosts = [alias] if status.name in named else [status.name, alias]
            named.add(status.name)
            lines += ["", f"Host {' '.join(_config_word(host) for host in hosts)}",
                      f"    HostName {_config_word(target.host)}",
                      f"    Port {target.port}",
                      f"    User {_config_word(target.user)}",
                      f"    IdentityFile {_config_path(target.key_path)}",
                      "    IdentitiesOnly yes",
                      f"    UserKnownHostsFile {_config_path(target.known_hosts)}",
                      "    StrictHostKeyChecking yes"]
    return "\n".join(lines) + "\n"


def _config_word(text: str) -> str:
    """A host, user or alias: plain characters only, so nothing needs quoting in ssh_config."""
    if not _CONFIG_WORD.fullmatch(text):
        raise UsageError(f"{text!r} cannot be written into an OpenSSH config.", "Use VM names and users of letters, digits, '.', '_' and '-'.")
    return text


def _config_path(path: Path) -> str:
    """A path in double quotes, with `%` doubled: ssh_config expands %-tokens in these paths."""
    text = str(path)
    if any(char in text for char in '"\n\r'):
        raise UsageError(f"The path {text!r} cannot be written into an OpenSSH config.", "Use a state directory without quotes or line breaks.")
    return '"' + text.replace("%", "%%") + '"'
