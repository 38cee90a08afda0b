"""`inv check.setup`: the workshop's Setup section as a read-only check of this computer.

Each item is a check (an id, a message, a hint) in a step, as a lab's checks are, and a run makes the
same LabReport as a lab's self-check, so the same reporters and report files show it. Items read this
computer through `Facts`, which reads every fact on first use; tests hand it the facts of another
platform or of a broken machine instead. Nothing is installed or changed: no image is built, no VM
booted, no host key pinned (the ssh items pin into a throwaway copy of known_hosts).

The same items guard the providers (`guard`): `vm.up` and the labs stop at the first failing one,
name it, and point to `inv check.setup` for the rest.

Disk thresholds: building one image needs IMAGE_ROOM free in the cache directory (mmdebstrap's
tarball and the sparse disk image side by side: the chroot image takes 0.4 GB, the docker image
0.65 GB, each tarball about as much again); each VM not created yet needs VM_ROOM in the state
directory (its copy-on-write disk grows with the lab: the docker lab's images).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import LabError, TargetError
from .model import FAIL, PASS, SKIP, CheckResult, Lab, LabReport, Step, StepResult
from .providers import bakerx, qemu, ssh, vm_state_dir, vmimage
from .providers.hostkeys import HostKeyChanged, entry_name, fetch_host_key, forget_command, pin_host_key
from .reporting import Reporter

GIB = 1024 ** 3
MIB = 1024 ** 2
IMAGE_ROOM = 3 * GIB // 2
VM_ROOM = 1 * GIB
NODE_OLDEST = (12, 14, 0)
COMMAND_TIMEOUT = 30.0
VIRTUALBOX_WINDOWS = Path(r"C:\Program Files\Oracle\VirtualBox\VBoxManage.exe")
SETUP_HINT = "then run inv check.setup to check the rest of this computer's setup"

Outcome = tuple[str, str, str]  # (status, message, hint)


@dataclass
class SetupScope:
    """What a setup check is about: the provider, its settings (the `vm` and `bakerx` subtrees), and
    for ssh the machine."""

    provider: str
    vm_settings: dict = field(default_factory=dict)
    bakerx_settings: dict = field(default_factory=dict)
    vms: list[str] | None = None  # the VMs to check for (default: every configured one)
    host: str = ""
    key: str = ""
    state_dir: Path = Path(".")
    connect_timeout: float = 10.0

    def __post_init__(self):
        self.vm_settings = {**qemu.DEFAULTS, **self.vm_settings}
        self.bakerx_settings = {**bakerx.DEFAULTS, **self.bakerx_settings}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _output(argv: list[str]) -> str | None:
    """What a short host command prints (stdout, else stderr); None when it cannot be run."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout.strip() or done.stderr.strip()) if done.returncode == 0 else None


def _kvm_users(modules: str) -> dict[str, int]:
    """Loaded KVM vendor modules and how many users each has (one per running KVM VM), from /proc/modules."""
    users = {}
    for line in modules.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[0] in ("kvm_intel", "kvm_amd") and parts[2].isdigit():
            users[parts[0]] = int(parts[2])
    return users


@dataclass(frozen=True)
class Room:
    """Where a directory that may not exist yet would be made: its nearest existing ancestor."""

    where: Path
    device: int  # the filesystem's id: two directories on one filesystem share its free space
    free: int  # bytes this user may still write there
    writable: bool


def _room(path: Path) -> Room:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return Room(path, os.stat(path).st_dev, shutil.disk_usage(path).free, os.access(path, os.W_OK))


class Facts:
    """This computer as the setup items see it. Each fact is read once, when an item first needs it;
    `known` (keyword arguments named like the facts) takes the place of reading, for tests."""

    def __init__(self, scope: SetupScope, **known):
        self.scope = scope
        self._known = dict(known)

    def _fact(self, name: str, read: Callable[[], object]):
        if name not in self._known:
            self._known[name] = read()
        return self._known[name]

    # -- the machine ------------------------------------------------------------------------------

    @property
    def system(self) -> str:
        """platform.system(): Linux, Darwin or Windows."""
        return self._fact("system", platform.system)

    @property
    def cpuinfo(self) -> str:
        return self._fact("cpuinfo", lambda: _read("/proc/cpuinfo"))

    @property
    def kvm_device(self) -> bool:
        return self._fact("kvm_device", qemu.kvm_device_ok)

    @property
    def kvm_users(self) -> dict[str, int]:
        return self._fact("kvm_users", lambda: _kvm_users(_read("/proc/modules")))

    @property
    def kvm_virt_at_load(self) -> bool:
        """Linux 6.12+ KVM takes VT-x when it loads, not only while a KVM VM runs."""
        return self._fact("kvm_virt_at_load", lambda: _read("/sys/module/kvm/parameters/enable_virt_at_load").strip() in ("Y", "1"))

    @property
    def hypervisor_running(self) -> bool:
        """Windows: a hypervisor (Hyper-V, WSL2, Memory integrity) holds VT-x, as systeminfo says."""
        return self._fact("hypervisor_running", lambda: self.system == "Windows" and
                          "hypervisor has been detected" in (_output(["systeminfo"]) or ""))

    @property
    def mem_available(self) -> int | None:
        """Bytes of memory available for a new process (MemAvailable); None where unknown."""
        def read():
            match = re.search(r"^MemAvailable:\s+(\d+) kB", _read("/proc/meminfo"), re.MULTILINE)
            return int(match.group(1)) * 1024 if match else None
        return self._fact("mem_available", read)

    @property
    def euid(self) -> int:
        return self._fact("euid", lambda: os.geteuid() if hasattr(os, "geteuid") else 0)

    def room(self, path: Path) -> Room:
        """Free space and writability where the directory `path` is or would be made."""
        return self._fact(f"room:{path}", lambda: _room(path))

    def tool(self, name: str) -> str | None:
        """Path of a host tool, searched as the providers search it (sbin included); None when missing."""
        def find():
            try:
                return vmimage.find_tool(name) if name in vmimage.TOOL_PACKAGES else shutil.which(name)
            except TargetError:
                return None
        return self._fact(f"tool:{name}", find)

    def version_output(self, name: str, *args: str) -> str | None:
        """What `NAME ARGS` (a version or info query) prints; None when NAME is missing or fails."""
        def run():
            path = self.tool(name)
            return _output([path, *args]) if path else None
        return self._fact(f"output:{name} {' '.join(args)}", run)

    @property
    def node_version(self) -> str | None:
        """`node --version` (v20.1.0); None without Node.js."""
        return self._fact("node_version", lambda: self.version_output("node", "--version"))

    @property
    def vbox_version(self) -> str | None:
        return self._fact("vbox_version", lambda: _output([self.vboxmanage, "--version"]) if self.vboxmanage else None)

    @property
    def loopback_port(self) -> int | str:
        """A free loopback port, or why none could be bound."""
        def bind():
            try:
                return qemu.free_port()
            except OSError as error:
                return error.strerror or str(error)
        return self._fact("loopback_port", bind)

    # -- the built-in VM --------------------------------------------------------------------------

    def image_cached(self, recipe: str) -> bool:
        return self._fact(f"image:{recipe}", lambda: vmimage.image_dir(self.scope.vm_settings, recipe).is_dir())

    def vm_created(self, vm: str) -> bool:
        return self._fact(f"vm:{vm}", lambda: (_state_dir(self) / "vms" / vm / "vm.json").exists())

    def build_tools(self) -> LabError | None:
        """Why an image cannot be built here (a missing tool, no subordinate ids), or None."""
        def check():
            try:
                vmimage.check_tools()
            except LabError as error:
                return error
            return None
        return self._fact("build_tools", check)

    # -- bakerx -----------------------------------------------------------------------------------

    @property
    def bakerx_version(self) -> tuple[int, int, int] | LabError:
        bakerx_settings = self.scope.bakerx_settings

        def detect():
            try:
                return bakerx.detect_version(bakerx_settings["command"])
            except LabError as error:
                return error
        return self._fact("bakerx_version", detect)

    def bakerx_image_pulled(self, image: str) -> bool:
        image_dir = Path.home() / ".bakerx" / ".persist" / "images" / image
        return self._fact(f"bakerx_image:{image}", lambda: any((image_dir / name).exists() for name in bakerx.IMAGE_FILES))

    @property
    def vboxmanage(self) -> str | None:
        def find():
            found = self.tool("VBoxManage")
            if not found and self.system == "Windows" and VIRTUALBOX_WINDOWS.exists():
                found = str(VIRTUALBOX_WINDOWS)
            return found
        return self._fact("vboxmanage", find)

    @property
    def vbox_hostinfo(self) -> str | None:
        """`VBoxManage list hostinfo`; None without VBoxManage."""
        return self._fact("vbox_hostinfo", lambda: _output([self.vboxmanage, "list", "hostinfo"]) if self.vboxmanage else None)

    # -- an ssh machine ---------------------------------------------------------------------------

    @property
    def key_state(self) -> str:
        """The --key file: plain, encrypted (needs a passphrase) or unreadable."""
        return self._fact("key_state", lambda: ssh.key_state(Path(self.scope.key).expanduser()))

    @property
    def key_in_agent(self) -> bool | None:
        """Whether ssh-agent holds the --key; None when no agent runs."""
        return self._fact("key_in_agent", lambda: ssh.key_in_agent(Path(self.scope.key).expanduser()))

    @property
    def tcp(self) -> str:
        """"" when HOST:PORT accepts a TCP connection, else why not."""
        def connect():
            _, host, port = ssh.parse_host(self.scope.host)
            try:
                socket.create_connection((host, port), timeout=self.scope.connect_timeout).close()
            except (socket.timeout, TimeoutError):
                return f"no answer within {self.scope.connect_timeout:g} s"
            except OSError as error:
                return (error.strerror or str(error)).lower()
            return ""
        return self._fact("tcp", connect)


# --- the items --------------------------------------------------------------------------------------

def _size(count: int) -> str:
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / MIB:.0f} MiB"


def _version(text: str | None) -> tuple[int, int, int] | None:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(part or 0) for part in match.groups()) if match else None


def _install(tool: str, system: str) -> str:
    package = vmimage.TOOL_PACKAGES.get(tool, tool)
    if system == "Darwin":
        return "Install QEMU: brew install qemu" if tool.startswith("qemu") else f"Install {tool} (Homebrew or MacPorts)"
    return f"Install it: sudo apt-get install {package}"


def item_qemu_binary(facts: Facts) -> Outcome:
    name = "qemu-system-x86_64"
    path = facts.tool(name)
    if not path:
        return FAIL, f"{name} not found: the built-in VM needs QEMU for x86_64 guests.", _install(name, facts.system)
    first = (facts.version_output(name, "--version") or "").splitlines()
    return PASS, f"{name} at {path}" + (f" ({first[0]})" if first else ""), ""


def item_vm_tools(facts: Facts) -> Outcome:
    missing = [tool for tool in ("qemu-img", "ssh-keygen", "mke2fs") if not facts.tool(tool)]
    if missing:
        packages = sorted({vmimage.TOOL_PACKAGES[tool] for tool in missing})
        return (FAIL, f"Not found: {', '.join(missing)} (a new VM needs them for its disk, keys and seed disk).",
                f"Install them: sudo apt-get install {' '.join(packages)}")
    return PASS, "qemu-img, ssh-keygen and mke2fs found", ""


def _kvm_problem(cpuinfo: str, device_ok: bool) -> str:
    if not qemu.cpu_has_virt(cpuinfo):
        return ("the CPU shows no vmx/svm flag (virtualisation is off in the BIOS/UEFI, or this computer "
                "is itself a VM without nested virtualisation)")
    if not device_ok:
        return "/dev/kvm is missing or this user cannot open it read-write"
    return ""


def _linux_accel(setting: str, accel: str, facts: Facts) -> Outcome:
    problem = _kvm_problem(facts.cpuinfo, facts.kvm_device)
    if accel == "kvm":
        if problem:
            return (FAIL, f"vm.accel is kvm, but KVM cannot run here: {problem}.",
                    "Set vm.accel to auto (TCG when KVM cannot run), or make KVM usable: enable virtualisation "
                    "in the BIOS/UEFI, and join the kvm group (sudo usermod -aG kvm $USER, then log in again).")
        return PASS, "KVM: /dev/kvm opens and the CPU has hardware virtualisation (vmx/svm).", ""
    if setting == "tcg":
        return PASS, "TCG (software emulation), as vm.accel says: VMs boot and run several times slower than with KVM.", ""
    hint = ("Enable virtualisation (VT-x/AMD-V) in the BIOS/UEFI settings" if "vmx/svm" in problem
            else "Join the kvm group: sudo usermod -aG kvm $USER, then log in again")
    return PASS, f"TCG (software emulation, slow: VMs boot and run several times slower) because {problem}.", hint


def _future_accel(name: str) -> Callable[[str, str, Facts], Outcome]:
    """macOS (HVF) and Windows (WHPX): labkit boots with TCG there for now."""
    def explain(setting: str, accel: str, facts: Facts) -> Outcome:
        if accel == "kvm":
            return FAIL, f"vm.accel is kvm, but KVM exists only on Linux ({facts.system} here).", "Set vm.accel to auto."
        return PASS, f"TCG (software emulation, slow): labkit does not use {name} on {facts.system} yet.", ""
    return explain


# The accelerator's reasons, per platform.system(); choose_accel decides, these explain it.
ACCEL_REASONS: dict[str, Callable[[str, str, Facts], Outcome]] = {
    "Linux": _linux_accel,
    "Darwin": _future_accel("HVF (Hypervisor.framework)"),
    "Windows": _future_accel("WHPX (Windows Hypervisor Platform)"),
}


def item_accelerator(facts: Facts) -> Outcome:
    vm_settings = facts.scope.vm_settings
    setting = str(vm_settings["accel"])
    accel = qemu.choose_accel(setting, facts.cpuinfo if facts.system == "Linux" else "", facts.kvm_device)
    return ACCEL_REASONS.get(facts.system, _future_accel("a hardware accelerator"))(setting, accel, facts)


def _vms(facts: Facts, configured: dict) -> list[str]:
    return list(configured) if facts.scope.vms is None else facts.scope.vms


def _state_dir(facts: Facts) -> Path:
    return vm_state_dir(facts.scope.vm_settings)


def _recipes(facts: Facts) -> list[str]:
    vm_settings = facts.scope.vm_settings
    vms = vm_settings["vms"]
    return sorted({vms[vm] for vm in _vms(facts, vms) if vm in vms})


def item_image(facts: Facts) -> Outcome:
    missing = [recipe for recipe in _recipes(facts) if not facts.image_cached(recipe)]
    if not missing:
        return PASS, f"Cached image{'s' if len(_recipes(facts)) > 1 else ''}: {', '.join(_recipes(facts))} (no build needed).", ""
    problem = facts.build_tools()
    if problem:
        return FAIL, f"{problem.message.rstrip('.')}: the image{'s' if len(missing) > 1 else ''} {', '.join(missing)} cannot be built.", problem.hint
    return PASS, f"Image tools found: {', '.join(missing)} will be built at the first vm.up (about a minute each).", ""


def item_disk(facts: Facts) -> Outcome:
    vm_settings = facts.scope.vm_settings
    builds = [recipe for recipe in _recipes(facts) if not facts.image_cached(recipe)]
    vms = [name for name in _vms(facts, vm_settings["vms"]) if not facts.vm_created(name)]
    places = [("cache directory", "vm.cache_dir", vmimage.cache_dir(vm_settings), IMAGE_ROOM * len(builds),
               f"to build {', '.join(builds)}"),
              ("state directory", "vm.state_dir", _state_dir(facts), VM_ROOM * len(vms), f"for {', '.join(vms)}")]
    needed: dict[int, int] = {}
    seen = []
    for what, setting, path, need, why in places:
        room = facts.room(path)
        if not room.writable:
            return (FAIL, f"The {what} {path} is not writable ({room.where} is not writable for this user).",
                    f"Set {setting} to a writable directory.")
        if needed.get(room.device) and need:
            why += " plus the image builds on the same disk"
        needed[room.device] = needed.get(room.device, 0) + need
        if room.free < needed[room.device]:
            return (FAIL, f"Only {_size(room.free)} free in the {what} {path} ({room.where}): {_size(needed[room.device])} needed {why}.",
                    f"Free space there (df -h shows where), or set {setting} to a disk with room.")
        seen.append(f"{what} {path}: {_size(room.free)} free" + (f", {_size(need)} needed {why}" if need else ""))
    return PASS, "; ".join(seen), ""


def item_memory(facts: Facts) -> Outcome:
    vm_settings = facts.scope.vm_settings
    want = int(vm_settings["memory"]) * MIB
    available = facts.mem_available
    if available is None:
        return SKIP, f"Cannot tell the free memory on {facts.system}; a VM takes {_size(want)} (vm.memory).", ""
    if available < want:
        return (FAIL, f"Only {_size(available)} of memory available; a VM takes {_size(want)} (vm.memory).",
                "Close other programs or VMs (inv vm.status lists labkit's), or lower vm.memory (512 is enough for the chroot lab).")
    return PASS, f"{_size(available)} of memory available; a VM takes {_size(want)} (vm.memory).", ""


def item_port(facts: Facts) -> Outcome:
    port = facts.loopback_port
    if isinstance(port, str):
        return FAIL, f"Cannot bind a loopback port for the VM's SSH ({port}).", "Check that the loopback interface (lo, 127.0.0.1) is up."
    return PASS, f"Loopback port {qemu.HOST}:{port} is free (a VM's SSH is forwarded from such a port).", ""


# -- bakerx path ---------------------------------------------------------------------------------------

BAKERX_INSTALL = "npm install -g ottomatica/bakerx"
NODE_HINT = "Install Node.js 12.14 or later (https://nodejs.org, or sudo apt-get install nodejs), then: " + BAKERX_INSTALL


def item_node(facts: Facts) -> Outcome:
    text = facts.node_version
    if text is None:
        return FAIL, "Node.js is not installed (no node on PATH): bakerx runs on it.", NODE_HINT
    version = _version(text)
    if version is None or version < NODE_OLDEST:
        return FAIL, f"Node.js {text} is older than 12.14, which bakerx needs.", NODE_HINT
    return PASS, f"Node.js {'.'.join(map(str, version))}", ""


def item_bakerx(facts: Facts) -> Outcome:
    version = facts.bakerx_version
    if isinstance(version, LabError):
        return FAIL, version.message, version.hint
    order = "pull <registry> <image>" if version < bakerx.PULL_IMAGE_FIRST else "pull <image> [registry]"
    return PASS, f"bakerx {bakerx.version_text(version)} (its argument order: bakerx {order})", ""


def _without_virtualbox(facts: Facts) -> Outcome | None:
    """The skip of a VirtualBox item when bakerx is set to another provider of its own (kvm)."""
    bakerx_settings = facts.scope.bakerx_settings
    provider = str(bakerx_settings["provider"] or "vbox")
    return None if provider == "vbox" else (SKIP, f"bakerx.provider is {provider}: VirtualBox is not used.", "")


def item_vboxmanage(facts: Facts) -> Outcome:
    if _without_virtualbox(facts):
        return _without_virtualbox(facts)
    if not facts.vboxmanage:
        return (FAIL, "VirtualBox is not installed: VBoxManage is not on PATH.",
                "Install VirtualBox (https://www.virtualbox.org) and put VBoxManage on PATH, or use --provider qemu.")
    version = facts.vbox_version
    return PASS, f"VBoxManage at {facts.vboxmanage}" + (f" (VirtualBox {version})" if version else ""), ""


VT_HINT = "Enable virtualisation (Intel VT-x / AMD-V, SVM) in the BIOS/UEFI settings, or use --provider qemu."


def item_virtualisation(facts: Facts) -> Outcome:
    """Hardware virtualisation for VirtualBox: offered by the CPU and not held by another hypervisor."""
    if _without_virtualbox(facts):
        return _without_virtualbox(facts)
    if not facts.vboxmanage:
        return SKIP, "Needs VBoxManage (see vboxmanage).", ""
    match = re.search(r"supports HW virtuali[sz]ation:\s*(\w+)", facts.vbox_hostinfo or "")
    if match and match.group(1).lower() != "yes":
        return FAIL, "VirtualBox reports no hardware virtualisation (VT-x/AMD-V) on this processor.", VT_HINT
    if facts.system == "Windows" and facts.hypervisor_running:
        return (FAIL, "Hyper-V is on and holds VT-x: VirtualBox VMs fail to start or crawl.",
                "As Administrator run bcdedit /set hypervisorlaunchtype off, turn off the Windows features Hyper-V, "
                "Virtual Machine Platform and Memory integrity, and restart; or use --provider qemu.")
    if facts.system == "Linux":
        if not qemu.cpu_has_virt(facts.cpuinfo):
            return FAIL, "The CPU shows no vmx/svm flag: hardware virtualisation is off or hidden (a VM without nesting).", VT_HINT
        held = {module: users for module, users in facts.kvm_users.items() if users or facts.kvm_virt_at_load}
        if held:
            module, users = next(iter(held.items()))
            why = f"{users} KVM VM{'s are' if users != 1 else ' is'} running" if users else "KVM takes it when it loads (Linux 6.12+)"
            return (FAIL, f"KVM holds VT-x/AMD-V ({module}: {why}): VirtualBox cannot start a VM meanwhile.",
                    f"Stop the KVM VMs, then unload KVM: sudo modprobe -r {module} kvm; or use --provider qemu.")
    return PASS, "Hardware virtualisation is available to VirtualBox" + (" (VT-x/AMD-V: yes)" if match else ""), ""


def item_bakerx_images(facts: Facts) -> Outcome:
    version = facts.bakerx_version
    bakerx_settings = facts.scope.bakerx_settings
    vms = bakerx_settings["vms"]
    found, later = [], []
    for vm in _vms(facts, vms):
        spec = vms.get(vm) or {}
        image, registry = str(spec.get("image", "")), str(spec.get("registry") or "")
        if facts.bakerx_image_pulled(image):
            found.append(image)
        elif not registry and (isinstance(version, LabError) or version < bakerx.PULL_IMAGE_FIRST):
            return (FAIL, f"Image {image} of {vm} is not pulled, and no registry to pull it from is set.",
                    f"Set bakerx.vms.{vm}.registry (the workshop's: ottomatica/slim#images for alpine, cloud-images.ubuntu.com for bionic).")
        else:
            later.append(f"{image} from {registry or 'Vagrant Cloud'} at the first inv vm.up {vm} (needs the internet)")
    parts = ([f"pulled: {', '.join(found)}"] if found else []) + ([f"to be pulled: {'; '.join(later)}"] if later else [])
    text = "; ".join(parts)
    return PASS, text[:1].upper() + text[1:] if text else "No VMs configured (bakerx.vms).", ""


# -- ssh path ------------------------------------------------------------------------------------------

def _key(facts: Facts) -> Path | None:
    return Path(facts.scope.key).expanduser() if facts.scope.key else None


def item_key_file(facts: Facts) -> Outcome:
    key = _key(facts)
    if key is None:
        return SKIP, "No --key: ssh's default keys and ssh-agent are tried.", ""
    try:
        ssh.check_key_file(key)
    except LabError as error:
        return FAIL, error.message, error.hint
    return PASS, f"{key} exists, readable only by you (mode {oct(key.stat().st_mode & 0o777)[2:]})", ""


def item_key_passphrase(facts: Facts) -> Outcome:
    key = _key(facts)
    if key is None or not key.is_file():
        return SKIP, "Needs a key file (see key-file).", ""
    state = facts.key_state
    in_agent = {True: "it is in ssh-agent", False: "it is not in ssh-agent", None: "no ssh-agent is running"}[facts.key_in_agent]
    if state == "unreadable":
        return FAIL, f"{key} is not a private key labkit can read.", "Pass the private key (not the .pub file) with --key."
    if state == "encrypted":
        return (FAIL, f"{key} is protected by a passphrase, which labkit cannot type ({in_agent}; labkit reads the key file itself).",
                "Use a key without a passphrase for the lab machine: ssh-keygen -t ed25519 -N '' -f ~/.ssh/labkit_ed25519, "
                "and add its .pub to the machine's ~/.ssh/authorized_keys.")
    return PASS, f"No passphrase; {in_agent}", ""


def item_host_reachable(facts: Facts) -> Outcome:
    _, host, port = ssh.parse_host(facts.scope.host)
    reason = facts.tcp
    if reason:
        return (FAIL, f"Nothing answers at {host}:{port}: {reason}.",
                "Check the host and port (for a bakerx VM: bakerx ssh-info NAME), and that the machine is up.")
    return PASS, f"{host}:{port} accepts connections", ""


def _pin_copy(facts: Facts) -> Path:
    """A throwaway copy of the ssh provider's known_hosts: items pin there, never in the real one."""
    def copy():
        directory = Path(tempfile.mkdtemp(prefix="labkit-setup-"))
        real = facts.scope.state_dir / "known_hosts"
        if real.exists():
            shutil.copyfile(real, directory / "known_hosts")
        return directory / "known_hosts"
    return facts._fact("pin_copy", copy)


def item_host_key(facts: Facts) -> Outcome:
    if facts.tcp:
        return SKIP, "Needs the machine to answer (see host-reachable).", ""
    _, host, port = ssh.parse_host(facts.scope.host)
    real = facts.scope.state_dir / "known_hosts"
    try:
        key = fetch_host_key(host, port, _pin_copy(facts), timeout=facts.scope.connect_timeout)
        outcome = pin_host_key(_pin_copy(facts), host, port, key)
    except HostKeyChanged:
        return (FAIL, f"{entry_name(host, port)} presents a host key that differs from the one pinned in {real}.",
                f"If the machine was recreated on purpose, forget the old key: {forget_command(real, host, port)}")
    except LabError as error:
        return FAIL, error.message, error.hint
    described = f"{key.get_name()} {key.fingerprint}"
    if outcome == "same":
        return PASS, f"Host key {described} is the one pinned in {real}", ""
    return PASS, f"Host key {described} is not pinned yet: the first lab run pins it in {real}", ""


def item_login(facts: Facts) -> Outcome:
    if facts.tcp:
        return SKIP, "Needs the machine to answer (see host-reachable).", ""
    try:
        target = ssh.ssh_target(facts.scope.host, facts.scope.key or None, facts.scope.state_dir)
        remote = ssh.Remote(replace(target, known_hosts=_pin_copy(facts)), connect_timeout=facts.scope.connect_timeout,
                            command_timeout=facts.scope.connect_timeout, reconnect_attempts=0)
        try:
            remote.run("true", root=False)
            sudo = None if target.user == "root" else remote.run("sudo -n true", root=False)
        finally:
            remote.close()
    except LabError as error:
        return FAIL, error.message, error.hint
    if sudo is not None and not sudo.ok:
        return (FAIL, f"{target.user} logs in, but cannot run sudo without a password: the labs run their commands as root through sudo -n.",
                f"Give {target.user} passwordless sudo on the machine, or log in as root.")
    return PASS, f"Logged in as {target.user}" + ("" if sudo is None else ", with passwordless sudo"), ""


# --- items, steps, runs -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    id: str
    run: Callable[[Facts], Outcome]


@dataclass(frozen=True)
class Area:
    """A step of the setup check: a title, what it is for, and its items."""

    id: str
    title: str
    explanation: str
    items: tuple[Item, ...]


AREAS: dict[str, tuple[Area, ...]] = {
    "qemu": (
        Area("qemu", "QEMU for the guest's architecture (x86_64)", "The built-in VM runs under QEMU.",
             (Item("qemu-binary", item_qemu_binary), Item("vm-tools", item_vm_tools))),
        Area("accelerator", "The accelerator QEMU will use", "KVM when usable, else TCG (software emulation, slow).",
             (Item("accelerator", item_accelerator),)),
        Area("image", "The VM images: cached, or tools to build them", "Images are built once and cached.",
             (Item("image", item_image),)),
        Area("resources", "Disk, memory and a loopback port for the VM", "What a VM takes on this computer.",
             (Item("disk", item_disk), Item("memory", item_memory), Item("port", item_port))),
    ),
    "bakerx": (
        Area("node", "Node.js 12.14 or later", "bakerx is a Node.js program.", (Item("node", item_node),)),
        Area("bakerx", "bakerx 0.6.3 or later", "bakerx makes the workshop's VMs.", (Item("bakerx", item_bakerx),)),
        Area("virtualbox", "VirtualBox, able to start a VM", "bakerx's VMs run in VirtualBox, which needs VT-x/AMD-V.",
             (Item("vboxmanage", item_vboxmanage), Item("virtualisation", item_virtualisation))),
        Area("images", "The workshop's images, pulled or pullable", "bakerx pull fetches them once.",
             (Item("bakerx-images", item_bakerx_images),)),
    ),
    "ssh": (
        Area("key", "The private key", "labkit logs in with this key, without prompting.",
             (Item("key-file", item_key_file), Item("key-passphrase", item_key_passphrase))),
        Area("host", "The machine, reachable", "Its SSH server answers, and its host key is known or will be pinned.",
             (Item("host-reachable", item_host_reachable), Item("host-key", item_host_key))),
        Area("login", "Logging in", "The labs run their commands over this login.", (Item("login", item_login),)),
    ),
}

# What `vm.up` and the labs check before they start: the items whose failure would otherwise come later and less clearly.
GUARDS = {"qemu": ("qemu-binary", "vm-tools", "accelerator", "image", "disk", "memory"), "bakerx": ("bakerx",)}


def run_item(item: Item, area: Area, facts: Facts) -> CheckResult:
    """One item as a check result; a configuration error (a bad setting) fails the item with its message."""
    started = time.monotonic()
    try:
        status, message, hint = item.run(facts)
    except LabError as error:
        status, message, hint = FAIL, error.message, error.hint
    return CheckResult(item.id, area.id, status, message, hint, time.monotonic() - started)


def _lab(provider: str) -> Lab:
    steps = tuple(Step(area.id, area.title, area.explanation, action=lambda ctx: None, checks=()) for area in AREAS[provider])
    return Lab("setup", f"this computer's setup for the {provider} provider", steps)


def check_setup(scope: SetupScope, reporter: Reporter, facts: Facts | None = None) -> LabReport:
    """Run every setup item of `scope.provider` (qemu, bakerx or ssh), shown through `reporter`;
    the LabReport's lab is `setup`, its steps the areas and its checks the items. Changes nothing."""
    facts = facts or Facts(scope)
    lab = _lab(scope.provider)
    report = LabReport("setup", socket.gethostname(), scope.provider, time.strftime("%Y-%m-%dT%H:%M:%S%z"), mode="check")
    started = time.monotonic()
    reporter.lab_started(lab, list(lab.steps), report.host, "check")
    try:
        for area, step in zip(AREAS[scope.provider], lab.steps):
            reporter.step_started(step)
            results = [run_item(item, area, facts) for item in area.items]
            for result in results:
                reporter.check_finished(result)
            report.checks += results
            statuses = {result.status for result in results}
            status = FAIL if FAIL in statuses else SKIP if statuses == {SKIP} else PASS
            step_result = StepResult(area.id, status, sum(result.duration_s for result in results))
            report.steps.append(step_result)
            reporter.step_finished(step, step_result)
    finally:
        report.duration_s = time.monotonic() - started
        reporter.lab_finished(report)
    return report


def guard(provider: str, scope: SetupScope, facts: Facts | None = None) -> Facts:
    """The guard items of `provider`, in order; the first that fails raises a TargetError naming it
    and pointing to `inv check.setup` (a bad setting raises its UsageError). Returns the facts read."""
    facts = facts or Facts(scope)
    for area in AREAS[provider]:
        for item in area.items:
            if item.id not in GUARDS[provider]:
                continue
            status, message, hint = item.run(facts)
            if status == FAIL:
                raise TargetError(f"{message.rstrip('.')} (setup check {item.id}).",
                                  f"{hint.rstrip('.')}; {SETUP_HINT} (--provider {provider}).")
    return facts


def guard_qemu(vm_settings: dict, vm: str) -> None:
    """Before the built-in provider boots `vm`: QEMU, its tools, the accelerator, the image or its
    tools, disk for what is still to be made, and memory."""
    guard("qemu", SetupScope("qemu", vm_settings=vm_settings, vms=[vm]))


def guard_bakerx(bakerx_settings: dict) -> tuple[int, int, int]:
    """Before the bakerx provider calls bakerx: that it is there and new enough; its version."""
    return guard("bakerx", SetupScope("bakerx", bakerx_settings=bakerx_settings)).bakerx_version
