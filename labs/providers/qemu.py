"""The built-in micro VM provider: a Debian image booted by QEMU, reached over forwarded SSH.

Each VM runs unprivileged with user-mode networking; SSH is forwarded from a free loopback port.
Nothing needs root, so students can run it on their own machines.

Settings (the toolkit's `vm` config subtree; `DEFAULTS` holds every key):

| key             | default                         | meaning                                                   |
|-----------------|---------------------------------|-----------------------------------------------------------|
| `cache_dir`     | `""` = `$XDG_CACHE_HOME/labkit` or `~/.cache/labkit` | built images, shared by all VMs      |
| `state_dir`     | `""` = `$XDG_STATE_HOME/labkit` or `~/.local/state/labkit` | per-VM disks, keys, logs       |
| `memory`        | `1024`                          | guest RAM in MiB                                          |
| `cpus`          | `2`                             | virtual CPUs                                              |
| `disk_size`     | `"2G"`                          | root filesystem size of an image (part of its cache key)  |
| `boot_timeout`  | `120`                           | seconds from starting QEMU until sshd must answer         |
| `cloud_boot_timeout` | `600`                      | the same for a cloud-image VM (cloud-init runs first)     |
| `boot_attempts` | `2`                             | boots of one `vm.up` before giving up on a guest that hangs |
| `build_timeout` | `1800`                          | seconds one image build step may take                     |
| `mirror`        | `"http://deb.debian.org/debian"`| Debian mirror for the build and the guest's apt           |
| `suite`         | `"bookworm"`                    | Debian suite                                              |
| `accel`         | `"auto"`                        | `kvm`, `hvf`, `whpx`, `tcg`, or `auto` (see `choose_accel`) |
| `arch`          | `"auto"`                        | guest CPU: `x86_64`, `aarch64`, or `auto` = the host's    |
| `images`        | the built-in recipes (`chroot`, `docker`, `alpine`, `bionic`) | see `vmimage` and `cloudimage` |
| `vms`           | `{"con0": "chroot", "docker0": "docker"}` | VM name -> recipe name                          |

Boot design, measured under TCG on 2 cores (about 4 s from starting QEMU to the SSH banner on a quiet
machine): `-M pc` (a little faster than q35; `-M microvm` hangs under TCG because this kernel cannot
calibrate its clock there) with the Debian cloud kernel, labkit's own 2.5 MB initramfs (BusyBox and the
virtio modules: `vmimage.write_initramfs`; Debian's 50 MB one took 5-9 s to unpack and probe with udev),
and busybox init running a short rc script instead of systemd, which alone needs over 15 s. The SSH
probe (`ssh_banner`) notices the banner within a second of sshd listening. `-no-reboot` makes a crash
or a guest `reboot` end QEMU, so a failed boot is reported at once instead of looping.

An aarch64 guest boots the same way on `-M virt` (`-cpu max,pauth-impdef=on` under TCG, `-cpu host` with KVM or HVF),
its console on the PL011 UART `ttyAMA0`; its devices stay virtio PCI, which the arm64 cloud kernel's
Debian initrd carries as modules (its image keeps that initrd).

Host platforms: labkit builds images on Linux only, but boots cloud images and reaches VMs from macOS
and Windows too. There QEMU gets no `-daemonize` on Windows (it is started as a detached process
instead) and QMP listens on a loopback TCP port there instead of a unix socket; the VM's lock, the
"is this pid our QEMU" test and stopping avoid fcntl, /proc and POSIX-only signals.

A cloud recipe (`labs.providers.cloudimage`) boots differently: the VM's disk is an overlay of the
downloaded image, which boots with its own bootloader through QEMU's firmware (no `-kernel`), and
its seed is a cloud-init NoCloud volume (`seed.iso`) instead of labkit's ext2 seed.
"""

import copy
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from labs.errors import TargetError, UsageError
from labs.providers import cloudimage, vmimage
from labs.providers.target import SSHTarget

DEFAULTS: dict = {
    "cache_dir": "",
    "state_dir": "",
    "memory": 1024,
    "cpus": 2,
    "disk_size": "2G",
    "boot_timeout": 120,
    "cloud_boot_timeout": 600,
    "boot_attempts": 2,
    "build_timeout": 1800,
    "mirror": "http://deb.debian.org/debian",
    "suite": "bookworm",
    "accel": "auto",
    "arch": "auto",
    "images": copy.deepcopy({**vmimage.RECIPES, **cloudimage.RECIPES}),
    "vms": {"con0": "chroot", "docker0": "docker"},
}

HOST = "127.0.0.1"
# cryptomgr.notests: the kernel's crypto self-tests took about 0.3 s of a TCG boot; they guard against a
# broken build of the crypto code, and Debian's kernel is a tested build (a lab VM runs no FIPS mode).
KERNEL_CMDLINE = ("console={console} root=/dev/vda rw net.ifnames=0 quiet panic=-1 cryptomgr.notests init="
                  + vmimage.INIT_PATH)
ACCELS = ("auto", "kvm", "hvf", "whpx", "tcg")
# Per guest architecture: QEMU's program, machine, serial console, and the CPU model under TCG.
GUESTS = {
    "x86_64": {"qemu": "qemu-system-x86_64", "machine": "pc", "console": "ttyS0", "tcg_cpu": []},
    # max's pointer authentication is emulated with QARMA5, very slow under TCG; the impdef algorithm is not.
    "aarch64": {"qemu": "qemu-system-aarch64", "machine": "virt", "console": "ttyAMA0",
                "tcg_cpu": ["-cpu", "max,pauth-impdef=on"]},
}
# UEFI code for aarch64 cloud images, as QEMU's own share directory (Homebrew, Windows installer) or
# Debian's qemu-efi-aarch64 ship it; searched next to the QEMU binary first.
AARCH64_FIRMWARE = ("share/qemu/edk2-aarch64-code.fd", "edk2-aarch64-code.fd", "share/edk2-aarch64-code.fd")
DEBIAN_AARCH64_FIRMWARE = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")
VM_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
PROGRESS_EVERY = 10.0
# Open SSH probes at once, and seconds they may wait for a banner between checks that QEMU still runs.
PROBE_LIMIT = 4
PROBE_WINDOW = 6.0
# Seconds before the next probe after the guest refused one (its network is up, sshd is not yet).
PROBE_REFUSED_RETRY = 0.2
STOP_WAIT = 10.0
QEMU_START_ATTEMPTS = 3


@dataclass
class VMStatus:
    """One VM known in the state directory, as `vm.status` lists it."""

    name: str
    provider: str = "qemu"
    state: str = "stopped"
    address: str = ""
    image: str = ""
    pid: int | None = None
    arch: str = ""
    accel: str = ""  # the accelerator this VM boots with, and why


def cpu_has_virt(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo text shows hardware virtualisation (Intel vmx or AMD svm)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and {"vmx", "svm"} & set(value.split()):
            return True
    return False


def kvm_device_ok(path: str = "/dev/kvm") -> bool:
    """Whether the KVM device can be opened read-write by this user."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class HostFacts:
    """What the accelerator choice depends on, read by `host_facts` (tests write them for any platform)."""

    system: str  # platform.system(): Linux, Darwin, Windows
    machine: str  # platform.machine(): x86_64, AMD64, arm64, aarch64
    guest_arch: str  # x86_64 or aarch64
    kvm_device: bool = False  # Linux: /dev/kvm opens read-write
    cpuinfo: str = ""  # Linux: /proc/cpuinfo
    hv_support: bool = False  # macOS: sysctl kern.hv_support is 1
    whpx: bool = False  # Windows: QEMU lists the whpx accelerator (Windows Hypervisor Platform is on)


@dataclass(frozen=True)
class Accel:
    """An accelerator and the one-line reason it was chosen."""

    name: str  # kvm, hvf, whpx or tcg
    reason: str

    @property
    def slow(self) -> bool:
        return self.name == "tcg"


def choose_accel(setting: str, facts: HostFacts) -> Accel:
    """The accelerator for the `vm.accel` setting on the host `facts` describe. `auto`: KVM on Linux
    when /dev/kvm opens and (x86) the CPU shows vmx/svm, since a /dev/kvm without them hangs guests;
    HVF on macOS when kern.hv_support is 1; WHPX on Windows when QEMU offers it; each only for a guest
    of the host's own architecture. Otherwise TCG (software emulation, several times slower).
    UsageError for a setting that is none of ACCELS."""
    if setting not in ACCELS:
        raise UsageError(f"Bad accel setting {setting!r}.", "Use auto, kvm, hvf, whpx or tcg (setting vm.accel).")
    if setting != "auto":
        return Accel(setting, "as vm.accel says")
    host = vmimage.MACHINE_ALIASES.get(facts.machine.lower(), facts.machine)
    if facts.guest_arch != host:
        return Accel("tcg", f"an {facts.guest_arch} guest on this {host} CPU is emulated")
    if facts.system == "Linux":
        if not facts.kvm_device:
            return Accel("tcg", "/dev/kvm is missing or this user cannot open it read-write")
        if host == "x86_64" and not cpu_has_virt(facts.cpuinfo):
            return Accel("tcg", "the CPU shows no vmx/svm flag (virtualisation off, or this computer is a VM)")
        return Accel("kvm", "/dev/kvm opens" + (" and the CPU has vmx/svm" if host == "x86_64" else ""))
    if facts.system == "Darwin":
        if facts.hv_support:
            return Accel("hvf", "macOS Hypervisor.framework is available (kern.hv_support=1)")
        return Accel("tcg", "macOS says kern.hv_support is not 1 (no Hypervisor.framework)")
    if facts.system == "Windows":
        if facts.whpx:
            return Accel("whpx", "QEMU offers the Windows Hypervisor Platform")
        return Accel("tcg", "QEMU does not offer whpx: turn on the Windows feature \"Windows Hypervisor Platform\"")
    return Accel("tcg", f"labkit knows no accelerator for {facts.system or 'this system'}")


def accel_line(accel: Accel) -> str:
    """The one line a boot prints about its accelerator."""
    slow = ": it will be slow (software emulation)" if accel.slow else ""
    return f"{accel.name.upper()} ({accel.reason}){slow}"


def _sysctl(name: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _qemu_offers(binary: str, accel: str) -> bool:
    try:
        listing = subprocess.run([binary, "-accel", "help"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return accel in listing.split()


def host_facts(guest_arch: str, system: str | None = None) -> HostFacts:
    """This computer's HostFacts for a `guest_arch` VM; only the facts of its own system are read."""
    system = system or platform.system()
    facts = {"system": system, "machine": platform.machine(), "guest_arch": guest_arch}
    if system == "Linux":
        try:
            facts["cpuinfo"] = Path("/proc/cpuinfo").read_text()
        except OSError:
            pass
        facts["kvm_device"] = kvm_device_ok()
    elif system == "Darwin":
        facts["hv_support"] = _sysctl("kern.hv_support") == "1"
    elif system == "Windows":
        facts["whpx"] = _qemu_offers(qemu_binary(guest_arch, system), "whpx")
    return HostFacts(**facts)


def qemu_binary(arch: str, system: str | None = None) -> str:
    """QEMU's program name for a guest `arch` (`.exe` on Windows)."""
    name = GUESTS[arch]["qemu"]
    return name + ".exe" if (system or platform.system()) == "Windows" else name


def aarch64_firmware(qemu_path: str | None) -> Path | None:
    """The UEFI code an aarch64 cloud image boots through: QEMU's own edk2 build next to its binary
    (Homebrew's `share/qemu`, the Windows installer's folder), else Debian's qemu-efi-aarch64."""
    if qemu_path:
        prefix = Path(qemu_path).resolve().parent
        for base in (prefix.parent, prefix):
            for relative in AARCH64_FIRMWARE:
                if (base / relative).is_file():
                    return base / relative
    return DEBIAN_AARCH64_FIRMWARE if DEBIAN_AARCH64_FIRMWARE.is_file() else None


@dataclass(frozen=True)
class Launch:
    """Everything one QEMU command line is made of."""

    name: str
    vm_dir: Path
    image_dir: Path
    port: int  # the loopback port forwarded to the guest's sshd
    memory: int  # MiB
    cpus: int
    accel: str  # kvm, hvf, whpx or tcg
    arch: str = "x86_64"
    cloud: bool = False  # boots from the image's own bootloader and reads a NoCloud seed.iso
    system: str = "Linux"  # platform.system() of the host
    qemu: str = ""  # path of the QEMU program; default: its name for `arch` and `system`
    firmware: Path | None = None  # aarch64 cloud images: UEFI code (aarch64_firmware)
    qmp_port: int = 0  # Windows: QMP on this loopback port (elsewhere a unix socket in vm_dir)


def qemu_argv(launch: Launch) -> list[str]:
    """The QEMU command line for one VM; QEMU is started with `launch.vm_dir` as its working directory.
    Raises TargetError when an aarch64 cloud image has no UEFI firmware to boot from."""
    guest = GUESTS[launch.arch]
    vm_dir, image_dir = launch.vm_dir, launch.image_dir
    cpu = ["-cpu", "host"] if launch.accel in ("kvm", "hvf") else guest["tcg_cpu"]
    machine = guest["machine"]
    if launch.arch == "aarch64" and launch.accel == "hvf":
        # Apple M1/M2 give guests a 36-bit physical address space, too small for virt's high PCI window.
        machine += ",highmem=off"
    if launch.cloud:
        boot = []
        if launch.arch == "aarch64":
            if not launch.firmware:
                raise TargetError("No UEFI firmware for an aarch64 cloud image (edk2-aarch64-code.fd).",
                                  "Install QEMU with its firmware (brew install qemu; on Debian: apt-get install qemu-efi-aarch64).")
            boot = ["-drive", f"if=pflash,format=raw,readonly=on,file={launch.firmware}"]
    else:
        boot = ["-kernel", str(image_dir / "vmlinuz"), "-initrd", str(image_dir / "initrd.img"),
                "-append", KERNEL_CMDLINE.format(console=guest["console"])]
    seed = vm_dir / ("seed.iso" if launch.cloud else "seed.img")
    windows = launch.system == "Windows"
    # Relative: a unix socket path is limited to 108 bytes and state dirs can be deep.
    qmp_address = f"tcp:{HOST}:{launch.qmp_port}" if windows else "unix:qmp.sock"
    return [
        launch.qemu or qemu_binary(launch.arch, launch.system),
        "-name", f"labkit-{launch.name}",
        "-M", machine, "-accel", launch.accel, *cpu,
        "-m", str(launch.memory), "-smp", str(launch.cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        *boot,
        "-drive", f"file={vm_dir / 'disk.qcow2'},format=qcow2,if=virtio",
        "-drive", f"file={seed},format=raw,if=virtio,readonly=on",
        "-netdev", f"user,id=net0,hostfwd=tcp:{HOST}:{launch.port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci",
        "-serial", f"file:{vm_dir / 'serial.log'}",
        "-qmp", f"{qmp_address},server=on,wait=off",
        "-pidfile", str(vm_dir / "qemu.pid"),
        # Windows has no daemonize: QEMU is started as a detached process there (start_qemu).
        *([] if windows else ["-daemonize"]),
    ]


def start_qemu(argv: list[str], cwd: Path, system: str | None = None) -> tuple[int, str]:
    """Start QEMU in the background: (exit status, stderr) of `-daemonize`, which returns once the
    VM runs; on Windows a detached process in its own group, given a few seconds to fail at start
    (status 0 when still running)."""
    if (system or platform.system()) != "Windows":
        done = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        return done.returncode, done.stderr
    flags = getattr(subprocess, "DETACHED_PROCESS", 0) | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
    errors = cwd / "qemu-stderr.log"
    with open(errors, "w") as err:
        process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                   creationflags=flags)
    try:
        return process.wait(3), errors.read_text(errors="replace")
    except subprocess.TimeoutExpired:
        return 0, ""


class BootHung(TargetError):
    """A guest that did not answer on SSH in time, now killed; `console` says what it last showed."""

    def __init__(self, message: str, hint: str, console: str):
        super().__init__(message, hint)
        self.console = console


def console_tail(serial: Path) -> str:
    """One sentence on what the guest's serial console last showed, for a boot that hung."""
    try:
        lines = [line.strip() for line in serial.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    return f"Its console last showed: {lines[-1][:160]}." if lines else "Its console showed nothing."


def free_port() -> int:
    """A loopback TCP port that is free right now (QEMU's failure to bind it is retried)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def ssh_banner(port: int, timeout: float, interval: float = 0.3, limit: int = PROBE_LIMIT) -> bool:
    """Whether sshd answers on the forwarded port within `timeout`.

    QEMU accepts the TCP connection itself before the guest listens, and a connection made too
    early stays silent even once sshd is up; so a new one is opened every `interval` and the
    first `SSH-` banner on any of them counts. The interval grows to 1 s (a banner is seen at most
    that late) and at most `limit` connections stay open (a new one replaces the oldest): a flood of
    unanswered connections keeps a slow guest's sshd forking and makes it refuse them all
    ("Exceeded MaxStartups"). A connection closed at once was refused by the guest, whose network is
    up and sshd about to listen: the next one follows PROBE_REFUSED_RETRY later (one TCP reset in the guest)."""
    deadline = time.monotonic() + timeout
    pending: list[socket.socket] = []
    next_connect = 0.0
    try:
        while (now := time.monotonic()) < deadline:
            if now >= next_connect:
                if len(pending) >= limit:
                    pending.pop(0).close()
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex((HOST, port))
                pending.append(sock)
                next_connect = now + interval
                interval = min(interval * 1.5, 1.0)
            for sock in select.select(pending, [], [], max(0.0, min(next_connect, deadline) - now))[0]:
                try:
                    if sock.recv(64).startswith(b"SSH-"):
                        return True
                except OSError:
                    pass
                pending.remove(sock)
                sock.close()
                next_connect = min(next_connect, time.monotonic() + PROBE_REFUSED_RETRY)
        return False
    finally:
        for sock in pending:
            sock.close()


def qmp(vm_dir: Path, command: str, timeout: float = 5.0, port: int = 0) -> None:
    """Send one QMP command: to loopback `port` when given (Windows), else through the VM's unix
    socket, on Linux reached via /proc/self/fd to keep its path short."""
    dir_fd = None
    if port:
        sock = socket.create_connection((HOST, port), timeout=timeout)
    else:
        sock = socket.socket(socket.AF_UNIX)
    try:
        with sock:
            if not port:
                sock.settimeout(timeout)
                if Path("/proc/self/fd").is_dir():
                    dir_fd = os.open(vm_dir, os.O_RDONLY | getattr(os, "O_PATH", 0) | os.O_CLOEXEC)
                    sock.connect(f"/proc/self/fd/{dir_fd}/qmp.sock")
                else:
                    sock.connect(str(vm_dir / "qmp.sock"))
            stream = sock.makefile("rwb")
            stream.readline()  # greeting
            for execute in ("qmp_capabilities", command):
                stream.write(json.dumps({"execute": execute}).encode() + b"\n")
                stream.flush()
                stream.readline()
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def process_cmdline(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The command line of process `pid` (arguments joined by NULs), None when it does not run:
    read from `proc` where that exists (Linux), else from psutil (macOS, Windows)."""
    if proc.is_dir():
        try:
            return (proc / str(pid) / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return None
    import psutil  # a dependency of labkit off Linux; Linux needs nothing beyond the standard library here
    try:
        return "\0".join(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return None


def _pid_alive(pid: int, vm_dir: Path) -> bool:
    """Whether `pid` is this VM's QEMU (a stale pidfile may name a recycled pid)."""
    return str(vm_dir / "disk.qcow2") in (process_cmdline(pid) or "")


@contextmanager
def exclusive(path: Path, timeout: float, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (flock on POSIX, msvcrt on Windows) for the block,
    waiting at most `timeout` seconds; TargetError(`busy`) after that."""
    handle = open(path, "a+")
    deadline = time.monotonic() + timeout
    with handle:
        while True:
            try:
                _lock_file(handle)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TargetError(busy, "Wait for it to finish, then retry.") from None
                time.sleep(0.5)
        yield


def _lock_file(handle) -> None:
    """Lock an open file without waiting; OSError when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _wait_exit(pid: int, vm_dir: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid, vm_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


_run_tool = vmimage.run_tool


class QemuProvider:
    """Builds images, boots and stops VMs; each VM's state lives in `state_dir/vms/<name>/`:
    `disk.qcow2` (overlay on the cached image), `seed.img`, `id_ed25519` (login key),
    `ssh_host_ed25519_key` (the guest's host key), `known_hosts` (its pin), `serial.log`,
    `qemu.pid`, `qmp.sock` and `vm.json` (image, login user, forwarded port)."""

    def __init__(self, settings: dict, progress: Callable[[str], None] = lambda m: None):
        self.settings = {**DEFAULTS, **settings}
        self.progress = progress

    # -- public API -----------------------------------------------------------------------------

    def build_image(self, image: str, force: bool = False) -> Path:
        """Cached image directory for recipe `image`, built when missing."""
        return vmimage.build_image(self.settings, image, self.progress, force=force)

    def up(self, vm: str, arch: str | None = None) -> SSHTarget:
        """Create the VM if needed (for guest `arch`, default the setting vm.arch), boot it unless
        running, and wait for its sshd. A VM keeps the arch it was created with: asking an existing VM
        for another is a UsageError."""
        self._check_name(vm, configured=True)
        created = self._meta(vm).get("arch")
        wanted = vmimage.resolve_arch(arch or self.settings["arch"], platform.machine())
        if created and arch and vmimage.resolve_arch(arch, platform.machine()) != created:
            raise UsageError(f"VM '{vm}' was created as {created}, not {wanted}.",
                             f"Use --arch {created}, or recreate it: inv vm.destroy {vm}, then inv vm.up {vm} --arch {wanted}")
        arch = created or wanted
        from labs.setup import guard_qemu  # labs.setup reads this module's facts: imported late, not in a cycle
        guard_qemu({**self.settings, "arch": arch}, vm)
        with self._lock(vm):
            pid = self._pid(vm)
            if pid is None:
                if not self._meta(vm):
                    self._create(vm, arch)
                self._boot(vm)
            else:
                self.progress(f"{vm} is already running")
                # It may still be booting, started by a run that was interrupted.
                self._wait_for_ssh(vm, pid, self._meta(vm)["port"], time.monotonic())
            return self.target(vm)

    def target(self, vm: str) -> SSHTarget:
        """SSH details of a running VM."""
        self._check_name(vm)
        meta = self._meta(vm)
        if not meta or self._pid(vm) is None:
            raise TargetError(f"VM '{vm}' is not running.", f"Start it with: inv vm.up {vm}")
        vm_dir = self._vm_dir(vm)
        return SSHTarget(name=vm, host=HOST, port=meta["port"], user=meta["user"], key_path=vm_dir / "id_ed25519",
                         known_hosts=vm_dir / "known_hosts", provider="qemu", strict_host_key=True)

    def status(self) -> list[VMStatus]:
        """Every VM with a directory in the state dir, running or not."""
        result = []
        for meta_file in sorted((self.state_dir / "vms").glob("*/vm.json")):
            vm = meta_file.parent.name
            meta, pid = self._meta(vm), self._pid(vm)
            address = f"{meta.get('user')}@{HOST}:{meta.get('port')}" if pid else ""
            state = "running" if pid else "stopped"
            arch = meta.get("arch", "x86_64")
            # Running: what it booted with; stopped: what it would boot with now.
            accel = meta.get("accel", "") if pid else accel_line(self.accel(arch))
            result.append(VMStatus(vm, state=state, address=address, image=meta.get("image", ""), pid=pid,
                                   arch=arch, accel=accel))
        return result

    def down(self, vm: str) -> None:
        """Stop the VM, keeping its disk and keys."""
        self._check_name(vm)
        with self._lock(vm):
            self._stop(vm)

    def destroy(self, vm: str) -> None:
        """Stop the VM and delete its directory: disk, keys, pinned host key, logs."""
        self._check_name(vm)
        with self._lock(vm):
            self._stop(vm)
            shutil.rmtree(self._vm_dir(vm), ignore_errors=True)
            self.progress(f"Destroyed VM {vm}")

    def ssh_command(self, vm: str) -> list[str]:
        """An `ssh` argv that logs into the running VM with its key and pinned host key."""
        target = self.target(vm)
        return [
            "ssh", "-i", str(target.key_path), "-p", str(target.port),
            "-o", f"UserKnownHostsFile={target.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
            f"{target.user}@{target.host}",
        ]

    # -- state directory ------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        value = self.settings.get("state_dir") or vmimage.default_dir("XDG_STATE_HOME", ".local/state")
        return Path(value).expanduser()

    def _vm_dir(self, vm: str) -> Path:
        return self.state_dir / "vms" / vm

    def _meta(self, vm: str) -> dict:
        try:
            return json.loads((self._vm_dir(vm) / "vm.json").read_text())
        except (OSError, ValueError):
            return {}

    def _save_meta(self, vm: str, meta: dict) -> None:
        path = self._vm_dir(vm) / "vm.json"
        path.with_suffix(".tmp").write_text(json.dumps(meta, indent=2) + "\n")
        path.with_suffix(".tmp").replace(path)

    def _check_name(self, vm: str, *, configured: bool = False) -> None:
        """UsageError unless `vm` is configured in `vms` (or, unless `configured`, already exists)."""
        known = self.settings.get("vms") or {}
        if VM_NAME.fullmatch(vm) and (vm in known or (not configured and (self._vm_dir(vm) / "vm.json").exists())):
            return
        raise UsageError(f"Unknown VM '{vm}'.", f"Known VMs: {', '.join(sorted(known)) or 'none'} (setting vm.vms).")

    def _pid(self, vm: str) -> int | None:
        """The VM's QEMU pid when it is running; stale pidfiles count as stopped."""
        vm_dir = self._vm_dir(vm)
        try:
            pid = int((vm_dir / "qemu.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid, vm_dir) else None

    @contextmanager
    def _lock(self, vm: str) -> Iterator[None]:
        """Serialise up/down/destroy of one VM across processes, with a bounded wait."""
        vms = self.state_dir / "vms"
        try:
            vms.mkdir(parents=True, exist_ok=True)
            (vms / f".{vm}.lock").touch()
        except OSError as error:
            raise TargetError(f"State directory {vms} is not writable ({error.strerror}).",
                              "Set vm.state_dir to a writable directory.") from None
        wait = float(self.settings["build_timeout"]) + float(self.settings["boot_timeout"])
        with exclusive(vms / f".{vm}.lock", wait, f"VM '{vm}' is busy in another labkit process."):
            yield

    # -- creating and booting -------------------------------------------------------------------

    def _create(self, vm: str, arch: str = "x86_64") -> None:
        """Make the VM directory: overlay disk on the cached image of guest `arch`, fresh keys, seed disk."""
        image = self.settings["vms"][vm]
        recipe = vmimage.recipe_for(self.settings, image, arch)
        user, cloud = recipe["user"], cloudimage.is_cloud(recipe)
        download = cloudimage.fetch(self.settings, image, self.progress, arch) if cloud else None
        image_dir = download.path if download else vmimage.build_image(self.settings, image, self.progress, arch=arch)
        self.progress(f"Creating VM {vm}: overlay disk, keys and seed disk")
        vm_dir = self._vm_dir(vm)
        shutil.rmtree(vm_dir, ignore_errors=True)
        vm_dir.mkdir(mode=0o700, parents=True)
        try:
            if download:
                cloudimage.create_overlay(download, vm_dir / "disk.qcow2", vmimage.parse_size(self.settings["disk_size"]))
            else:
                _run_tool(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image_dir / "rootfs.img"), "-F", "raw",
                           str(vm_dir / "disk.qcow2")], "Creating the overlay disk")
            for key, comment in (("id_ed25519", f"labkit-{vm}"), ("ssh_host_ed25519_key", f"root@{vm}")):
                _run_tool(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(vm_dir / key)],
                          f"Generating {key}")
                os.chmod(vm_dir / key, 0o600)
            if download:
                values = cloudimage.seed_values(vm, recipe, (vm_dir / "id_ed25519.pub").read_text(),
                                                vm_dir / "ssh_host_ed25519_key")
                cloudimage.write_seed(vm_dir / "seed.iso", cloudimage.render_seed(values))
            else:
                self._write_seed(vm, user)
            image_id = json.loads((image_dir / "image.json").read_text())["id"]
            self._save_meta(vm, {"name": vm, "image": image, "image_dir": str(image_dir), "image_id": image_id,
                                 "user": user, "port": 0, "source": "cloud" if cloud else "mmdebstrap",
                                 "arch": arch})
        except BaseException:
            shutil.rmtree(vm_dir, ignore_errors=True)
            raise

    def _write_seed(self, vm: str, user: str) -> None:
        """A small ext2 disk the guest's rc reads at boot; mke2fs -d needs no root."""
        vm_dir = self._vm_dir(vm)
        with tempfile.TemporaryDirectory(dir=vm_dir) as tmp:
            seed = Path(tmp)
            (seed / "name").write_text(vm + "\n")
            (seed / "user").write_text(user + "\n")
            shutil.copyfile(vm_dir / "id_ed25519.pub", seed / "authorized_keys")
            for key in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
                shutil.copyfile(vm_dir / key, seed / key)
            _run_tool(["mke2fs", "-q", "-F", "-t", "ext2", "-L", "labkit-seed", "-d", str(seed), str(vm_dir / "seed.img"), "4M"],
                      "Writing the seed disk")
        (vm_dir / "seed.img").chmod(0o600)  # it carries the guest's private host key

    def _pin_host_key(self, vm: str, port: int) -> None:
        """known_hosts holding only the generated host key, so even the first connection is verified."""
        vm_dir = self._vm_dir(vm)
        key_type, key = (vm_dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        (vm_dir / "known_hosts").write_text(f"[{HOST}]:{port} {key_type} {key}\n")

    def accel(self, arch: str) -> Accel:
        """The accelerator a VM of guest `arch` boots with here, and why."""
        return choose_accel(self.settings["accel"], host_facts(arch))

    def _check_image(self, vm: str, meta: dict) -> Path:
        """The VM's base image, unless it vanished or was rebuilt: on another base its overlay is garbage."""
        image_dir = Path(meta["image_dir"])
        try:
            image_id = json.loads((image_dir / "image.json").read_text())["id"]
        except (OSError, ValueError, KeyError):
            image_id = None
        if image_id != meta["image_id"]:
            what = "gone from the cache" if image_id is None else "rebuilt since the VM was created"
            raise TargetError(f"The image of VM '{vm}' is {what} ({image_dir}).",
                              f"Recreate the VM: inv vm.destroy {vm}, then inv vm.up {vm}")
        return image_dir

    def _boot(self, vm: str) -> None:
        """Start QEMU and wait for sshd; a guest that stays silent is killed and started again from the
        same disk, up to `boot_attempts` boots: under emulation a boot can hang for no fault of the
        image (seen here once: a guest that printed nothing for 600 s booted at once when restarted)."""
        attempts = max(1, int(self.settings["boot_attempts"]))
        for attempt in range(1, attempts + 1):
            try:
                return self._boot_once(vm)
            except BootHung as hung:
                if attempt == attempts:
                    raise
                self.progress(f"{hung.message} {hung.console} Starting it again (boot {attempt + 1} of {attempts}).")

    def _boot_once(self, vm: str) -> None:
        """Start QEMU detached (retrying when the chosen port got taken) and wait for sshd."""
        vm_dir, meta = self._vm_dir(vm), self._meta(vm)
        image_dir = self._check_image(vm, meta)
        serial = vm_dir / "serial.log"
        arch, system, cloud = meta.get("arch", "x86_64"), platform.system(), meta.get("source") == "cloud"
        accel = self.accel(arch)
        self.progress(f"Booting {vm} ({arch}) with {accel_line(accel)}")
        binary = qemu_binary(arch, system)
        qemu_path = shutil.which(binary) or binary
        firmware = aarch64_firmware(shutil.which(binary)) if cloud and arch == "aarch64" else None
        for attempt in range(QEMU_START_ATTEMPTS):
            port = free_port()
            qmp_port = free_port() if system == "Windows" else 0
            for stale in ("qemu.pid", "qmp.sock"):
                (vm_dir / stale).unlink(missing_ok=True)
            self._pin_host_key(vm, port)
            argv = qemu_argv(Launch(vm, vm_dir, image_dir, port, int(self.settings["memory"]), int(self.settings["cpus"]),
                                    accel.name, arch=arch, cloud=cloud, system=system, qemu=qemu_path,
                                    firmware=firmware, qmp_port=qmp_port))
            started = time.monotonic()
            try:
                returncode, stderr = start_qemu(argv, vm_dir, system)
            except subprocess.TimeoutExpired:
                raise TargetError("QEMU did not start within 60 s.", f"Command: {' '.join(argv)}") from None
            if returncode == 0:
                break
            error = (stderr.strip().splitlines() or ["no message"])[-1]
            if "hostfwd" not in stderr or attempt == QEMU_START_ATTEMPTS - 1:
                raise TargetError(f"QEMU failed to start VM '{vm}': {error}", f"Command: {' '.join(argv)}")
        meta.update(port=port, qmp_port=qmp_port, accel=accel_line(accel))
        self._save_meta(vm, meta)
        pid = self._pid(vm)
        if pid is None:
            raise TargetError(f"QEMU exited right after starting VM '{vm}'.", f"See its serial console log: {serial}")
        self._wait_for_ssh(vm, pid, port, started)
        self.progress(f"{vm} is up: {meta['user']}@{HOST}:{port} (SSH answered {time.monotonic() - started:.1f} s after QEMU started)")

    def _wait_for_ssh(self, vm: str, pid: int, port: int, started: float) -> None:
        """Poll for the SSH banner until boot_timeout; kill QEMU and raise BootHung when it passes,
        TargetError when QEMU ends by itself (a crash or a reboot is not retried)."""
        vm_dir = self._vm_dir(vm)
        serial = vm_dir / "serial.log"
        meta = self._meta(vm)
        cloud = meta.get("source") == "cloud"
        timeout = float(self.settings["cloud_boot_timeout" if cloud else "boot_timeout"])
        if meta.get("arch", "x86_64") != vmimage.MACHINE_ALIASES.get(platform.machine().lower()):
            timeout *= vmimage.FOREIGN_BUILD_FACTOR  # another CPU's guest, emulated instruction by instruction
        next_note = time.monotonic() + PROGRESS_EVERY
        # A probe window never runs past the timeout: a banner after it does not count.
        while not ssh_banner(port, timeout=max(0.0, min(PROBE_WINDOW, started + timeout - time.monotonic()))):
            now = time.monotonic()
            if not _pid_alive(pid, vm_dir):
                raise TargetError(f"VM '{vm}' stopped while booting.", f"See its serial console log: {serial}")
            if now - started > timeout:
                self._kill(pid, vm_dir)
                raise BootHung(f"VM '{vm}' did not answer on SSH within {timeout:.0f} s.",
                               f"See its serial console log: {serial}", console_tail(serial))
            if now >= next_note:
                cloud_note = f"; cloud-init sets it up first, allowing {timeout:.0f} s" if cloud else ""
                self.progress(f"Waiting for {vm} to answer on SSH ({now - started:.0f} s){cloud_note}")
                next_note = now + PROGRESS_EVERY

    # -- stopping -------------------------------------------------------------------------------

    def _stop(self, vm: str) -> None:
        """sync in the guest (its disk then survives any stop), QMP quit, and signals if QEMU lingers."""
        vm_dir = self._vm_dir(vm)
        pid = self._pid(vm)
        if pid is not None:
            self.progress(f"Stopping {vm}")
            try:
                subprocess.run(self.ssh_command(vm) + ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "sync"],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
            except (subprocess.TimeoutExpired, OSError):
                pass  # an unreachable guest still gets the clean QEMU quit
            try:
                qmp(vm_dir, "quit", port=self._meta(vm).get("qmp_port", 0))
            except OSError:
                pass
            if not _wait_exit(pid, vm_dir, STOP_WAIT):
                self._kill(pid, vm_dir)
        for stale in ("qemu.pid", "qmp.sock"):
            (vm_dir / stale).unlink(missing_ok=True)

    def _kill(self, pid: int, vm_dir: Path) -> None:
        """SIGTERM (QEMU still flushes its disks), then SIGKILL; both bounded."""
        # Windows has no SIGKILL; its SIGTERM already ends the process (TerminateProcess).
        for sig in (signal.SIGTERM, getattr(signal, "SIGKILL", signal.SIGTERM)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            if _wait_exit(pid, vm_dir, 5.0):
                return
