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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LabError, TargetError
from .model import FAIL, PASS, SKIP, CheckResult, Lab, LabReport, Step, StepResult
# Only modules of the standard library behind these: the qemu guard runs inside QemuProvider.up, which
# needs nothing else (a normal user's system Python may lack paramiko). bakerx and ssh: setup_bakerx_ssh.
from .providers import qemu, vmimage
from .reporting import Reporter

GIB = 1024 ** 3
MIB = 1024 ** 2
IMAGE_ROOM = 3 * GIB // 2
VM_ROOM = 1 * GIB
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

    def fact(self, name: str, read: Callable[[], object]):
        """The fact `name`: known, or read now by `read` and kept."""
        if name not in self._known:
            self._known[name] = read()
        return self._known[name]

    # -- the machine ------------------------------------------------------------------------------

    @property
    def system(self) -> str:
        """platform.system(): Linux, Darwin or Windows."""
        return self.fact("system", platform.system)

    @property
    def machine(self) -> str:
        """platform.machine(): x86_64, AMD64, arm64 or aarch64."""
        return self.fact("machine", platform.machine)

    @property
    def guest_arch(self) -> str:
        """The guest architecture of the checked VMs: the setting vm.arch (auto = this CPU's)."""
        return self.fact("guest_arch", lambda: vmimage.resolve_arch(str(self.scope.vm_settings["arch"]), self.machine))

    @property
    def hv_support(self) -> bool:
        """macOS: `sysctl kern.hv_support` is 1 (Hypervisor.framework usable)."""
        return self.fact("hv_support", lambda: self.system == "Darwin" and _output(["sysctl", "-n", "kern.hv_support"]) == "1")

    @property
    def whpx(self) -> bool:
        """Windows: QEMU lists the whpx accelerator (the Windows Hypervisor Platform feature is on)."""
        def read():
            if self.system != "Windows" or not self.tool(self.qemu_name):
                return False
            return "whpx" in (self.version_output(self.qemu_name, "-accel", "help") or "").split()
        return self.fact("whpx", read)

    @property
    def qemu_name(self) -> str:
        """QEMU's program for the guest architecture (found through PATH, so without .exe)."""
        return qemu.GUESTS[self.guest_arch]["qemu"]

    def host_facts(self) -> qemu.HostFacts:
        """The facts the accelerator choice is made from (qemu.choose_accel, as QemuProvider boots)."""
        linux, system = self.system == "Linux", self.system
        return qemu.HostFacts(system=system, machine=self.machine, guest_arch=self.guest_arch,
                              kvm_device=linux and self.kvm_device, cpuinfo=self.cpuinfo if linux else "",
                              hv_support=system == "Darwin" and self.hv_support, whpx=system == "Windows" and self.whpx)

    @property
    def cpuinfo(self) -> str:
        return self.fact("cpuinfo", lambda: _read("/proc/cpuinfo"))

    @property
    def kvm_device(self) -> bool:
        return self.fact("kvm_device", qemu.kvm_device_ok)

    @property
    def kvm_users(self) -> dict[str, int]:
        return self.fact("kvm_users", lambda: _kvm_users(_read("/proc/modules")))

    @property
    def kvm_virt_at_load(self) -> bool:
        """Linux 6.12+ KVM takes VT-x when it loads, not only while a KVM VM runs."""
        return self.fact("kvm_virt_at_load", lambda: _read("/sys/module/kvm/parameters/enable_virt_at_load").strip() in ("Y", "1"))

    @property
    def hypervisor_running(self) -> bool:
        """Windows: a hypervisor (Hyper-V, WSL2, Memory integrity) holds VT-x, as systeminfo says."""
        return self.fact("hypervisor_running", lambda: self.system == "Windows" and
                          "hypervisor has been detected" in (_output(["systeminfo"]) or ""))

    @property
    def mem_available(self) -> int | None:
        """Bytes of memory available for a new process (MemAvailable); None where unknown."""
        def read():
            match = re.search(r"^MemAvailable:\s+(\d+) kB", _read("/proc/meminfo"), re.MULTILINE)
            return int(match.group(1)) * 1024 if match else None
        return self.fact("mem_available", read)

    @property
    def euid(self) -> int:
        return self.fact("euid", lambda: os.geteuid() if hasattr(os, "geteuid") else 0)

    def room(self, path: Path) -> Room:
        """Free space and writability where the directory `path` is or would be made."""
        return self.fact(f"room:{path}", lambda: _room(path))

    def tool(self, name: str) -> str | None:
        """Path of a host tool, searched as the providers search it (sbin included); None when missing."""
        def find():
            try:
                return vmimage.find_tool(name) if name in vmimage.TOOL_PACKAGES else shutil.which(name)
            except TargetError:
                return None
        return self.fact(f"tool:{name}", find)

    def version_output(self, name: str, *args: str) -> str | None:
        """What `NAME ARGS` (a version or info query) prints; None when NAME is missing or fails."""
        def run():
            path = self.tool(name)
            return _output([path, *args]) if path else None
        return self.fact(f"output:{name} {' '.join(args)}", run)

    @property
    def node_version(self) -> str | None:
        """`node --version` (v20.1.0); None without Node.js."""
        return self.fact("node_version", lambda: self.version_output("node", "--version"))

    @property
    def vbox_version(self) -> str | None:
        return self.fact("vbox_version", lambda: _output([self.vboxmanage, "--version"]) if self.vboxmanage else None)

    @property
    def loopback_port(self) -> int | str:
        """A free loopback port, or why none could be bound."""
        def bind():
            try:
                return qemu.free_port()
            except OSError as error:
                return error.strerror or str(error)
        return self.fact("loopback_port", bind)

    # -- the built-in VM --------------------------------------------------------------------------

    def image_cached(self, recipe: str) -> bool:
        return self.fact(f"image:{recipe}",
                         lambda: vmimage.image_dir(self.scope.vm_settings, recipe, self.guest_arch).is_dir())

    def vm_created(self, vm: str) -> bool:
        return self.fact(f"vm:{vm}", lambda: (_state_dir(self) / "vms" / vm / "vm.json").exists())

    def build_tools(self) -> LabError | None:
        """Why an image cannot be built here (a missing tool, no subordinate ids), or None."""
        def check():
            try:
                vmimage.check_tools(self.guest_arch)
            except LabError as error:
                return error
            return None
        return self.fact("build_tools", check)

    # -- VirtualBox -------------------------------------------------------------------------------

    @property
    def vboxmanage(self) -> str | None:
        def find():
            found = self.tool("VBoxManage")
            if not found and self.system == "Windows" and VIRTUALBOX_WINDOWS.exists():
                found = str(VIRTUALBOX_WINDOWS)
            return found
        return self.fact("vboxmanage", find)

    @property
    def vbox_hostinfo(self) -> str | None:
        """`VBoxManage list hostinfo`; None without VBoxManage."""
        return self.fact("vbox_hostinfo", lambda: _output([self.vboxmanage, "list", "hostinfo"]) if self.vboxmanage else None)



# --- the items --------------------------------------------------------------------------------------

def _size(count: int) -> str:
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / MIB:.0f} MiB"


def version_tuple(text: str | None) -> tuple[int, int, int] | None:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(part or 0) for part in match.groups()) if match else None


def _install(tool: str, system: str) -> str:
    package = vmimage.TOOL_PACKAGES.get(tool, tool)
    if system == "Darwin":
        return "Install QEMU: brew install qemu" if tool.startswith("qemu") else f"Install {tool} (Homebrew or MacPorts)"
    return f"Install it: sudo apt-get install {package}"


def item_qemu_binary(facts: Facts) -> Outcome:
    name = facts.qemu_name
    path = facts.tool(name)
    if not path:
        return (FAIL, f"{name} not found: the built-in VM needs QEMU for {facts.guest_arch} guests.",
                _install(name, facts.system))
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


# What an accelerator named in vm.accel needs, per accelerator: (the platform, the fact, the hint when it is missing).
FORCED_NEEDS = {
    "kvm": ("Linux", "KVM", "Set vm.accel to auto (TCG when KVM cannot run), or make KVM usable: enable virtualisation "
            "in the BIOS/UEFI, and join the kvm group (sudo usermod -aG kvm $USER, then log in again)."),
    "hvf": ("Darwin", "Hypervisor.framework", "Set vm.accel to auto (TCG when HVF cannot run)."),
    "whpx": ("Windows", "the Windows Hypervisor Platform", "Turn on the Windows feature \"Windows Hypervisor Platform\" "
             "and restart, or set vm.accel to auto."),
}


def _tcg_hint(facts: Facts, accel: qemu.Accel) -> str:
    """What would make the automatic choice faster than TCG, when something could."""
    if facts.guest_arch != vmimage.MACHINE_ALIASES.get(facts.machine.lower(), facts.machine):
        return "A guest of this computer's own architecture would be faster: set vm.arch to auto."
    if facts.system == "Linux":
        return ("Enable virtualisation (VT-x/AMD-V) in the BIOS/UEFI settings" if "vmx/svm" in accel.reason
                else "Join the kvm group: sudo usermod -aG kvm $USER, then log in again")
    return FORCED_NEEDS["whpx"][2] if facts.system == "Windows" else ""


def item_accelerator(facts: Facts) -> Outcome:
    """The accelerator qemu.choose_accel picks from this computer's facts, and why; a forced one
    that cannot run here fails."""
    setting = str(facts.scope.vm_settings["accel"])
    accel = qemu.choose_accel(setting, facts.host_facts())
    if setting in FORCED_NEEDS:
        system, what, hint = FORCED_NEEDS[setting]
        chosen = qemu.choose_accel("auto", facts.host_facts())
        if facts.system != system:
            return FAIL, f"vm.accel is {setting}, but {what} exists only on {system} ({facts.system} here).", "Set vm.accel to auto."
        if chosen.name != setting:
            problem = _kvm_problem(facts.cpuinfo, facts.kvm_device) if setting == "kvm" else chosen.reason
            return FAIL, f"vm.accel is {setting}, but {what} cannot run here: {problem or chosen.reason}.", hint
        return PASS, f"{setting.upper()}: {chosen.reason}.", ""
    if accel.slow:
        if setting == "tcg":
            return PASS, "TCG (software emulation), as vm.accel says: VMs boot and run several times slower.", ""
        return (PASS, f"TCG (software emulation, slow: VMs boot and run several times slower) because {accel.reason}.",
                _tcg_hint(facts, accel))
    return PASS, f"{accel.name.upper()}: {accel.reason}.", ""


def chosen_vms(facts: Facts, configured: dict) -> list[str]:
    """The VMs a check is about: the scope's, else every configured one."""
    return list(configured) if facts.scope.vms is None else facts.scope.vms


def _state_dir(facts: Facts) -> Path:
    return qemu.QemuProvider(facts.scope.vm_settings).state_dir


def _recipes(facts: Facts) -> list[str]:
    vm_settings = facts.scope.vm_settings
    vms = vm_settings["vms"]
    return sorted({vms[vm] for vm in chosen_vms(facts, vms) if vm in vms})


def item_image(facts: Facts) -> Outcome:
    missing = [recipe for recipe in _recipes(facts) if not facts.image_cached(recipe)]
    if not missing:
        return PASS, f"Cached image{'s' if len(_recipes(facts)) > 1 else ''}: {', '.join(_recipes(facts))} (no build needed).", ""
    if facts.system != "Linux":
        return (FAIL, f"The image{'s' if len(missing) > 1 else ''} {', '.join(missing)} would be built with mmdebstrap, "
                f"which runs on Linux only ({facts.system} here).",
                "Use a distribution's cloud image: in invoke.yaml, vm: {vms: {con0: alpine}} (see docs/getting-started.md).")
    problem = facts.build_tools()
    if problem:
        return FAIL, f"{problem.message.rstrip('.')}: the image{'s' if len(missing) > 1 else ''} {', '.join(missing)} cannot be built.", problem.hint
    return PASS, f"Image tools found: {', '.join(missing)} will be built at the first vm.up (about a minute each).", ""


def item_disk(facts: Facts) -> Outcome:
    vm_settings = facts.scope.vm_settings
    builds = [recipe for recipe in _recipes(facts) if not facts.image_cached(recipe)]
    vms = [name for name in chosen_vms(facts, vm_settings["vms"]) if not facts.vm_created(name)]
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


QEMU_AREAS = (
        Area("qemu", "QEMU for the guest's architecture (x86_64)", "The built-in VM runs under QEMU.",
             (Item("qemu-binary", item_qemu_binary), Item("vm-tools", item_vm_tools))),
        Area("accelerator", "The accelerator QEMU will use",
             "KVM (Linux), HVF (macOS) or WHPX (Windows) when usable, else TCG (software emulation, slow).",
             (Item("accelerator", item_accelerator),)),
        Area("image", "The VM images: cached, or tools to build them", "Images are built once and cached.",
             (Item("image", item_image),)),
        Area("resources", "Disk, memory and a loopback port for the VM", "What a VM takes on this computer.",
             (Item("disk", item_disk), Item("memory", item_memory), Item("port", item_port))),
)

# What `vm.up` checks before it starts a built-in VM: the items whose failure would otherwise come later and less clearly.
QEMU_GUARDS = ("qemu-binary", "vm-tools", "accelerator", "image", "disk", "memory")


def areas(provider: str) -> tuple[Area, ...]:
    """The steps of `inv check.setup --provider PROVIDER` (qemu, bakerx or ssh)."""
    if provider == "qemu":
        return QEMU_AREAS
    from .setup_bakerx_ssh import AREAS  # the SSH stack (paramiko), which the qemu guard must not need
    return AREAS[provider]


def run_item(item: Item, area: Area, facts: Facts) -> CheckResult:
    """One item as a check result; a configuration error (a bad setting) fails the item with its message."""
    started = time.monotonic()
    try:
        status, message, hint = item.run(facts)
    except LabError as error:
        status, message, hint = FAIL, error.message, error.hint
    return CheckResult(item.id, area.id, status, message, hint, time.monotonic() - started)


def _lab(provider: str) -> Lab:
    steps = tuple(Step(area.id, area.title, area.explanation, action=lambda ctx: None, checks=()) for area in areas(provider))
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
        for area, step in zip(areas(scope.provider), lab.steps):
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


def guard(provider: str, guarded: tuple[str, ...], scope: SetupScope, facts: Facts | None = None) -> Facts:
    """The `guarded` items of `provider`, in order; the first that fails raises a TargetError naming
    it and pointing to `inv check.setup` (a bad setting raises its UsageError). Returns the facts read."""
    facts = facts or Facts(scope)
    for area in areas(provider):
        for item in area.items:
            if item.id not in guarded:
                continue
            status, message, hint = item.run(facts)
            if status == FAIL:
                raise TargetError(f"{message.rstrip('.')} (setup check {item.id}).",
                                  f"{hint.rstrip('.')}; {SETUP_HINT} (--provider {provider}).")
    return facts


def guard_qemu(vm_settings: dict, vm: str) -> None:
    """Before the built-in provider boots `vm`: QEMU, its tools, the accelerator, the image or its
    tools, disk for what is still to be made, and memory."""
    guard("qemu", QEMU_GUARDS, SetupScope("qemu", vm_settings=vm_settings, vms=[vm]))
