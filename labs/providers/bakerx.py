"""The bakerx provider: the workshop's own VMs, made by bakerx (VirtualBox, or its kvm provider).

bakerx differs by version, and the toolkit drives whichever one is installed (see docs/providers.md):
`pull <registry> <image>` before 0.7.0 and `pull <image> [registry]` since; SSH details from
`ssh-info --format json` since 0.6.11, else from the `ssh -i ...` line that `run` prints; `stop` only
since 0.9.0. bakerx prints its errors and exits 0, so every line it prints is read (colours stripped)
and a known error message ends the command at once: a `run` that failed may otherwise wait for SSH forever.

Settings (the toolkit's `bakerx` config subtree; `DEFAULTS` holds every key):

| key        | default      | meaning                                                          |
|------------|--------------|------------------------------------------------------------------|
| `command`  | `"bakerx"`   | the bakerx executable (a name on PATH or a path)                 |
| `provider` | `""`         | bakerx's own `--provider` (`vbox`, `kvm`); empty: bakerx's default |
| `memory`   | `1024`       | MiB given to `run --memory`                                      |
| `cpus`     | `1`          | given to `run --cpus`                                            |
| `timeout`  | `900`        | seconds one bakerx command may take (pulls download images)      |
| `vms`      | con0, docker0 | VM name -> `{image, registry}` to pull and run                  |

What the toolkit keeps, per VM, in `<state_dir>/bakerx/<vm>/`: `vm.json` (the SSH details seen at the
last `vm.up`, since bakerx has no list command), `known_hosts` (the host key pinned for each port) and
`replace-host-key` (left by `vm.destroy`: the next VM that this toolkit itself creates under the name
may present a new key, which then replaces the pin).
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labs.errors import TargetError, UsageError
from labs.providers.hostkeys import HostKeyChanged, entry_name, fetch_host_key, forget_command, pin_host_key
from labs.providers.qemu import VMStatus
from labs.providers.ssh import Remote
from labs.providers.target import LAB_VM_MARKER, SSHTarget

DEFAULTS: dict = {
    "command": "bakerx",
    "provider": "",
    "memory": 1024,
    "cpus": 1,
    "timeout": 900,
    "vms": {
        "con0": {"image": "alpine3.9-simple", "registry": "ottomatica/slim#images"},
        "docker0": {"image": "bionic", "registry": "cloud-images.ubuntu.com"},
    },
}

OLDEST = (0, 6, 3)
PULL_IMAGE_FIRST = (0, 7, 0)
SSH_INFO_JSON = (0, 6, 11)
STOP = (0, 9, 0)
VERSION_TIMEOUT = 60.0
# Files of a pulled image that some bakerx provider boots; a pull that left none of them failed.
IMAGE_FILES = ("vbox.iso", "vmlinuz", "box.ovf")
VM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
STOP_WAIT = 5.0


def strip_ansi(text: str) -> str:
    """Text without terminal colour and cursor sequences (bakerx colours its output on a terminal)."""
    return ANSI.sub("", text).replace("\r", "")


class BakerxError(TargetError):
    """An error message that bakerx printed (with exit status 0); `kind` names which one."""

    def __init__(self, kind: str, message: str, hint: str):
        super().__init__(message, hint)
        self.kind = kind


# (kind, pattern, message, hint); {0}.. are the pattern's groups, {vm} the VM the command was about,
# {base} the last path component of the first group.
ERRORS = [
    ("wsl", r"inside Windows Subsystem for Linux is not supported",
     "bakerx refuses to run inside WSL (Windows Subsystem for Linux).",
     "Run labkit from Windows itself, or use --provider qemu inside WSL."),
    ("vboxmanage", r"Could not find required VBoxManage executable",
     "VirtualBox is not installed: bakerx cannot find VBoxManage.",
     "Install VirtualBox and put VBoxManage on PATH, or use --provider qemu."),
    ("virtualisation", r"VT-x|AMD-V",
     "VirtualBox cannot start the VM: hardware virtualisation (VT-x/AMD-V) is not enabled.",
     "Enable virtualisation (VT-x/AMD-V, SVM) in the BIOS/UEFI settings and turn Hyper-V off, or use --provider qemu."),
    ("provider", r"provider (\S*) is unknown or not supp+orted",
     "bakerx does not know the provider '{0}'.",
     "Set bakerx.provider to vbox or kvm, or leave it empty for bakerx's default."),
    ("unsupported-image", r"Could not find supported image in (.+)",
     "bakerx found no image file that its provider can boot in {0}.",
     "Vagrant boxes such as bionic run only under vbox: check bakerx.provider; or pull again after: bakerx delete image {base}"),
    ("image", r"^(\S+) image not found",
     "bakerx has no image '{0}'.",
     "Check the image and registry of {vm} in bakerx.vms; `bakerx images` lists the pulled images."),
    ("locate", r"Could not locate VM called '([^']*)'",
     "bakerx has no VM called '{0}'.",
     "Create it with: inv vm.up {0} --provider bakerx"),
    ("missing", r"Error: vm (\S+) does not exist",
     "bakerx has no VM called '{0}'.",
     "Create it with: inv vm.up {0} --provider bakerx"),
]
GONE = {"locate", "missing"}


def recognise(text: str, vm: str = "the VM") -> BakerxError | None:
    """The first known bakerx error message in `text`, as a one-line error with what to do."""
    for line in strip_ansi(text).splitlines():
        line = line.strip()
        for kind, pattern, message, hint in ERRORS:
            match = re.search(pattern, line)
            if match:
                groups = [group.strip(" .") for group in match.groups()]
                names = {"vm": vm, "base": shlex.quote(Path(groups[0]).name) if groups else ""}
                return BakerxError(kind, message.format(*groups, **names), hint.format(*groups, **names))
    return None


def parse_version(output: str) -> tuple[int, int, int]:
    """(major, minor, patch) from `bakerx --version` (`bakerx@0.9.0` and a virtcrud line)."""
    match = re.search(r"bakerx@(\d+)\.(\d+)\.(\d+)", strip_ansi(output))
    if not match:
        last = _last_line(output) or "nothing"
        raise TargetError(f"Cannot tell which bakerx is installed: `bakerx --version` printed {last!r}.",
                          "Reinstall it: npm install -g ottomatica/bakerx; or use --provider qemu.")
    return tuple(int(part) for part in match.groups())


def version_text(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def pull_args(version: tuple[int, int, int], image: str, registry: str) -> list[str]:
    """`pull` in the argument order of this bakerx version (the order changed in 0.7.0)."""
    if version < PULL_IMAGE_FIRST:
        return ["pull", registry, image]
    return ["pull", image, *([registry] if registry else [])]


def _missing(value) -> bool:
    return value is None or str(value).strip() in ("", "undefined", "null")


def parse_ssh_command(output: str) -> dict:
    """user, hostname, port, private_key from the last `ssh -i KEY USER@HOST -p PORT ...` line."""
    lines = [line.strip() for line in strip_ansi(output).splitlines() if line.strip().startswith("ssh ")]
    if not lines:
        raise TargetError("bakerx printed no ssh command to reach the VM.", f"It printed: {_last_line(output) or 'nothing'}")
    try:
        words = shlex.split(lines[-1])
    except ValueError:
        raise TargetError(f"Cannot read bakerx's ssh command: {lines[-1]}", "Run bakerx ssh-info by hand to see the VM's SSH details.") from None
    info: dict = {"user": None, "hostname": None, "port": None, "private_key": None}
    values = iter(words[1:])
    for word in values:
        if word in ("-i", "-p", "-o"):
            value = next(values, None)
            if word != "-o":
                info["private_key" if word == "-i" else "port"] = value
        elif "@" in word and not word.startswith("-"):
            info["user"], _, info["hostname"] = word.rpartition("@")
    return info


def parse_ssh_json(output: str) -> dict:
    """user, hostname, port, private_key from `ssh-info --format json`, preferring 0.6.11's
    `sshUser`/`privateKey` when present; the port may be a number (vbox) or a string (kvm)."""
    text = strip_ansi(output)
    start = text.find("{")
    try:
        raw = json.loads(text[start:]) if start >= 0 else None
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        raise TargetError("bakerx ssh-info printed no JSON SSH details.", f"It printed: {_last_line(output) or 'nothing'}")
    pick = lambda *keys: next((raw[key] for key in keys if not _missing(raw.get(key))), None)  # noqa: E731
    return {"user": pick("sshUser", "user"), "hostname": pick("hostname"), "port": pick("port"),
            "private_key": pick("privateKey", "private_key")}


@dataclass(frozen=True)
class SSHInfo:
    user: str
    hostname: str
    port: int
    key: Path


def complete_ssh_info(raw: dict, *, vagrant_box: bool, bakerx_home: Path) -> SSHInfo:
    """SSH details with bakerx's own defaults where it left user or key out (VMs made before
    image.txt existed): root with baker_rsa for its alpine images, vagrant with insecure_private_key
    for vagrant boxes such as bionic."""
    try:
        port = int(str(raw.get("port")).strip())
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise TargetError(f"bakerx reported no usable SSH port ({raw.get('port')!r}).", "Check the VM in VirtualBox, then retry inv vm.up.")
    user = raw.get("user") if not _missing(raw.get("user")) else ("vagrant" if vagrant_box else "root")
    default_key = bakerx_home / ("insecure_private_key" if vagrant_box else "baker_rsa")
    key = Path(raw["private_key"]) if not _missing(raw.get("private_key")) else default_key
    hostname = raw.get("hostname") if not _missing(raw.get("hostname")) else "127.0.0.1"
    return SSHInfo(user=str(user), hostname=str(hostname), port=port, key=key)


def _last_line(output: str) -> str:
    lines = [line.strip() for line in strip_ansi(output).splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def run_bakerx(argv: list[str], timeout: float, vm: str = "the VM") -> tuple[int, str]:
    """Run bakerx, reading stdout and stderr as they come: a known error message stops it at once
    (BakerxError), as does the timeout. Returns the exit status and the output without colours."""
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    except OSError as error:
        raise TargetError(f"Cannot run {argv[0]}: {error.strerror or error}.",
                          "Check the bakerx.command setting, or use --provider qemu.") from None
    deadline = time.monotonic() + timeout
    too_slow = TargetError(f"bakerx {' '.join(argv[1:3])} did not finish within {timeout:g} s.",
                           "Run the same bakerx command by hand to see where it stops, or raise bakerx.timeout.")
    output, pending, chunk = [], b"", b"-"
    try:
        while chunk:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise too_slow
            if not select.select([process.stdout], [], [], min(remaining, 1.0))[0]:
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop() if chunk else b""
            for line in lines:
                text = strip_ansi(line.decode(errors="replace"))
                output.append(text)
                error = recognise(text, vm)
                if error:
                    raise error
        try:
            return process.wait(max(deadline - time.monotonic(), 1.0)), "\n".join(output)
        except subprocess.TimeoutExpired:
            raise too_slow from None
    finally:
        _end(process)


def _end(process: subprocess.Popen) -> None:
    """bakerx and anything it started in its session: TERM, then KILL when it lingers."""
    process.stdout.close()
    if process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(STOP_WAIT)
            return
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def detect_version(command: str) -> tuple[int, int, int]:
    """The installed bakerx's version; TargetError when it is missing, broken or too old."""
    executable = shutil.which(command)
    if not executable:
        raise TargetError(f"bakerx is not installed (no {command!r} on PATH).",
                          "Install it (after Node.js and VirtualBox): npm install -g ottomatica/bakerx; or use --provider qemu (the built-in VM).")
    _, output = run_bakerx([executable, "--version"], VERSION_TIMEOUT)
    version = parse_version(output)
    if version < OLDEST:
        raise TargetError(f"bakerx {version_text(version)} is older than {version_text(OLDEST)}, the oldest labkit drives.",
                          "Upgrade it: npm install -g ottomatica/bakerx; or use --provider qemu.")
    return version


class BakerxProvider:
    """`vm.*` and lab targets through bakerx; the same methods as QemuProvider."""

    def __init__(self, settings: dict, state_dir: Path, progress: Callable[[str], None] = lambda m: None):
        self.settings = {**DEFAULTS, **settings}
        self.state_dir = Path(state_dir).expanduser() / "bakerx"
        self.progress = progress
        self._version: tuple[int, int, int] | None = None

    # -- public API -----------------------------------------------------------------------------

    def version(self) -> tuple[int, int, int]:
        """bakerx's version, read once through the setup guard, whose errors point to `inv check.setup`."""
        if self._version is None:
            from labs.setup_bakerx_ssh import guard_bakerx  # it reads this module: imported late, not in a cycle
            self._version = guard_bakerx(self.settings)
        return self._version

    def up(self, vm: str) -> SSHTarget:
        """Pull the image if needed, `run` the VM (created, started, or left running by bakerx), read
        its SSH details and pin its host key. A VM this call created is deleted again on failure."""
        image, registry = self._spec(vm)
        version = self.version()
        self._pull(vm, image, registry, version)
        existed = self._exists(vm, version)
        self.progress(f"bakerx {version_text(version)}: {'starting' if existed else 'creating'} {vm} from {image}")
        try:
            output = self._call(["run", vm, image, "--memory", str(self.settings["memory"]),
                                 "--cpus", str(self.settings["cpus"]), *self._provider_args()], vm)
            info = self._ssh_info(vm, image, version, output)
            if not info.key.is_file():
                raise TargetError(f"bakerx named the SSH key {info.key}, which does not exist.",
                                  f"Run any bakerx command to rewrite its keys (bakerx images), then retry inv vm.up {vm}.")
            known_hosts = self._vm_dir(vm) / "known_hosts"
            key = fetch_host_key(info.hostname, info.port, known_hosts)
        except TargetError:
            if not existed:
                self._delete_quietly(vm)
            raise
        self._pin(vm, info, key, replace=not existed and (self._vm_dir(vm) / "replace-host-key").exists())
        record = {"name": vm, "image": image, "hostname": info.hostname, "port": info.port, "user": info.user,
                  "key": str(info.key), "bakerx": version_text(version), "provider": self.settings["provider"]}
        self._vm_dir(vm).mkdir(mode=0o700, parents=True, exist_ok=True)
        (self._vm_dir(vm) / "vm.json").write_text(json.dumps(record, indent=2) + "\n")
        (self._vm_dir(vm) / "replace-host-key").unlink(missing_ok=True)
        if not existed:
            self._mark(vm)
        self.progress(f"{vm} is up: {info.user}@{info.hostname}:{info.port}")
        return self.target(vm)

    def _mark(self, vm: str) -> None:
        """Write the lab-VM marker into a VM this toolkit just created, as the qemu provider's guests
        write it at boot: the docker lab's destructive step runs only where it is."""
        self.progress(f"Marking {vm} as a lab VM ({LAB_VM_MARKER})")
        remote = Remote(self.target(vm))
        try:
            result = remote.run(f"printf '%s\\n' {shlex.quote(vm)} > {LAB_VM_MARKER}")
            reason = "" if result.ok else result.stderr.strip() or f"exit status {result.exit_code}"
        except TargetError as error:
            reason = error.message
        finally:
            remote.close()
        if reason:
            self._delete_quietly(vm)
            raise TargetError(f"Could not write {LAB_VM_MARKER} in the new VM {vm}: {reason}.",
                              f"The login user needs passwordless sudo; retry inv vm.up {vm}.")

    def target(self, vm: str) -> SSHTarget:
        """SSH details recorded at the last `vm.up` (bakerx keeps a VM's port for its lifetime)."""
        record = self._record(vm)
        if not record:
            raise TargetError(f"labkit has not started bakerx VM '{vm}'.", f"Start it with: inv vm.up {vm} --provider bakerx")
        return SSHTarget(name=vm, host=record["hostname"], port=record["port"], user=record["user"],
                         key_path=Path(record["key"]), known_hosts=self._vm_dir(vm) / "known_hosts",
                         provider="bakerx", strict_host_key=True)

    def status(self) -> list[VMStatus]:
        """The VMs this toolkit started with bakerx; running means their SSH server answers now."""
        result = []
        for meta in sorted(self.state_dir.glob("*/vm.json")):
            record = self._record(meta.parent.name)
            if not record:
                continue
            running = _ssh_answers(record["hostname"], record["port"])
            result.append(VMStatus(record["name"], provider="bakerx", state="running" if running else "stopped",
                                   address=f"{record['user']}@{record['hostname']}:{record['port']}" if running else "",
                                   image=record["image"]))
        return result

    def down(self, vm: str) -> None:
        """`bakerx stop`, which exists since 0.9.0."""
        self._check_name(vm)
        version = self.version()
        if version < STOP:
            raise UsageError(f"bakerx {version_text(version)} has no stop command (it came with 0.9.0).",
                             f"Stop the VM in VirtualBox (VBoxManage controlvm {shlex.quote(vm)} acpipowerbutton), or upgrade bakerx.")
        self._call(["stop", vm, *self._provider_args()], vm)
        self.progress(f"Stopped {vm}")

    def destroy(self, vm: str) -> None:
        """`bakerx delete vm`; the pinned host key stays, marked as replaceable by the next VM that
        this toolkit creates under the same name."""
        self._check_name(vm)
        self._call(["delete", "vm", vm, *self._provider_args()], vm, allow=GONE)
        vm_dir = self._vm_dir(vm)
        (vm_dir / "vm.json").unlink(missing_ok=True)
        if (vm_dir / "known_hosts").exists():
            (vm_dir / "replace-host-key").write_text("left by inv vm.destroy\n")
        self.progress(f"Destroyed VM {vm}")

    def ssh_command(self, vm: str) -> list[str]:
        """An `ssh` argv that logs in with bakerx's key and checks the pinned host key."""
        target = self.target(vm)
        return ["ssh", "-i", str(target.key_path), "-p", str(target.port),
                "-o", f"UserKnownHostsFile={target.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", f"{target.user}@{target.host}"]

    # -- bakerx ---------------------------------------------------------------------------------

    @property
    def bakerx_home(self) -> Path:
        return Path.home() / ".bakerx"

    def _provider_args(self) -> list[str]:
        return ["--provider", str(self.settings["provider"])] if self.settings["provider"] else []

    def _call(self, args: list[str], vm: str, allow: set[str] = frozenset()) -> str:
        """Output of one bakerx command; errors it prints (except the `allow`ed kinds) and failing
        exit statuses become TargetErrors."""
        executable = shutil.which(self.settings["command"]) or self.settings["command"]
        try:
            status, output = run_bakerx([executable, *args], float(self.settings["timeout"]), vm)
        except BakerxError as error:
            if error.kind in allow:
                return ""
            raise
        if status != 0:
            what = "gave up waiting for the VM's SSH server" if args[0] == "run" else "failed"
            raise TargetError(f"bakerx {args[0]} {what} (exit status {status}): {_last_line(output) or 'no message'}",
                              f"Look at the VM in VirtualBox, then retry inv vm.up {vm}.")
        return output

    def _delete_quietly(self, vm: str) -> None:
        """Undo a VM this toolkit just created; bakerx may have made nothing, which is fine."""
        self.progress(f"Deleting the half-made VM {vm}")
        try:
            self._call(["delete", "vm", vm, *self._provider_args()], vm, allow=GONE)
        except TargetError as error:
            self.progress(f"Could not delete {vm}: {error.message}")

    def _pull(self, vm: str, image: str, registry: str, version: tuple[int, int, int]) -> None:
        """Pull the image unless bakerx has it; a failed pull leaves no image directory behind."""
        image_dir = self.bakerx_home / ".persist" / "images" / image
        if any((image_dir / name).exists() for name in IMAGE_FILES):
            return
        if version < PULL_IMAGE_FIRST and not registry:
            raise UsageError(f"bakerx {version_text(version)} needs a registry to pull '{image}' from.",
                             f"Set bakerx.vms.{vm}.registry (the workshop's: ottomatica/slim#images).")
        self.progress(f"Pulling {image} from {registry or 'Vagrant Cloud'}")
        made = not image_dir.exists()
        try:
            output = self._call(pull_args(version, image, registry), vm)
        except TargetError:
            if made:
                shutil.rmtree(image_dir, ignore_errors=True)
            raise
        if not any((image_dir / name).exists() for name in IMAGE_FILES):
            if made:
                shutil.rmtree(image_dir, ignore_errors=True)
            raise TargetError(f"bakerx pull did not download image '{image}' from {registry or 'Vagrant Cloud'}: "
                              f"{_last_line(output) or 'no message'}",
                              f"Check the image and registry of {vm} in bakerx.vms, and that this machine is online.")

    def _exists(self, vm: str, version: tuple[int, int, int]) -> bool:
        """Whether bakerx has the VM already: ssh-info says so since 0.6.11; before, bakerx's
        per-VM directory or this toolkit's record does."""
        if version >= SSH_INFO_JSON:
            return bool(self._call(["ssh-info", vm, "--format", "json", *self._provider_args()], vm, allow=GONE))
        return (self.bakerx_home / ".persist" / "vms" / vm).exists() or bool(self._record(vm))

    def _ssh_info(self, vm: str, image: str, version: tuple[int, int, int], run_output: str) -> SSHInfo:
        if version >= SSH_INFO_JSON:
            raw = parse_ssh_json(self._call(["ssh-info", vm, "--format", "json", *self._provider_args()], vm))
        else:
            raw = parse_ssh_command(run_output)
        vagrant_box = (self.bakerx_home / ".persist" / "images" / image / "box.ovf").exists()
        return complete_ssh_info(raw, vagrant_box=vagrant_box, bakerx_home=self.bakerx_home)

    # -- host keys and records ------------------------------------------------------------------

    def _pin(self, vm: str, info: SSHInfo, key, replace: bool) -> None:
        known_hosts = self._vm_dir(vm) / "known_hosts"
        try:
            outcome = pin_host_key(known_hosts, info.hostname, info.port, key, replace=replace)
        except HostKeyChanged:
            label = entry_name(info.hostname, info.port)
            raise TargetError(
                f"{vm} ({label}) presents an SSH host key that differs from the one pinned in {known_hosts}.",
                f"If you recreated {vm} yourself, recreate it through labkit (inv vm.destroy {vm} --provider bakerx, "
                f"then inv vm.up {vm} --provider bakerx) or forget the pin: {forget_command(known_hosts, info.hostname, info.port)}",
            ) from None
        if outcome != "same":
            self.progress(f"{'Replaced' if outcome == 'replaced' else 'Pinned'} the SSH host key of {vm} ({key.get_name()})")

    def _spec(self, vm: str) -> tuple[str, str]:
        self._check_name(vm, configured=True)
        spec = self.settings["vms"][vm]
        return str(spec["image"]), str(spec.get("registry") or "")

    def _check_name(self, vm: str, *, configured: bool = False) -> None:
        known = self.settings.get("vms") or {}
        if VM_NAME.fullmatch(vm) and (vm in known or (not configured and self._vm_dir(vm).exists())):
            return
        raise UsageError(f"Unknown VM '{vm}'.", f"Known VMs: {', '.join(sorted(known)) or 'none'} (setting bakerx.vms).")

    def _vm_dir(self, vm: str) -> Path:
        return self.state_dir / vm

    def _record(self, vm: str) -> dict:
        try:
            record = json.loads((self.state_dir / vm / "vm.json").read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) and {"name", "hostname", "port", "user", "key", "image"} <= set(record) else {}


def _ssh_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether an SSH server greets on HOST:PORT now."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False
