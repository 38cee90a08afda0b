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
| `build_timeout` | `1800`                          | seconds one image build step may take                     |
| `mirror`        | `"http://deb.debian.org/debian"`| Debian mirror for the build and the guest's apt           |
| `suite`         | `"bookworm"`                    | Debian suite                                              |
| `accel`         | `"auto"`                        | `kvm`, `tcg`, or `auto`: KVM when usable, else TCG        |
| `images`        | the built-in recipes (`chroot`, `docker`, `alpine`, `bionic`) | see `vmimage` and `cloudimage` |
| `vms`           | `{"con0": "chroot", "docker0": "docker"}` | VM name -> recipe name                          |

Boot design, measured under TCG on 2 cores (about 5 s from starting QEMU to the SSH banner): `-M pc`
(a little faster than q35; `-M microvm` hangs under TCG because this kernel cannot calibrate its
clock there) with the Debian cloud kernel, its initrd, and busybox init running a short rc script
instead of systemd, which alone needs over 15 s. `-no-reboot` makes a crash or a guest `reboot`
end QEMU, so a failed boot is reported at once instead of looping.

A cloud recipe (`labs.providers.cloudimage`) boots differently: the VM's disk is an overlay of the
downloaded image, which boots with its own bootloader through QEMU's firmware (no `-kernel`), and
its seed is a cloud-init NoCloud volume (`seed.iso`) instead of labkit's ext2 seed.
"""

import copy
import fcntl
import json
import os
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
    "build_timeout": 1800,
    "mirror": "http://deb.debian.org/debian",
    "suite": "bookworm",
    "accel": "auto",
    "images": copy.deepcopy({**vmimage.RECIPES, **cloudimage.RECIPES}),
    "vms": {"con0": "chroot", "docker0": "docker"},
}

HOST = "127.0.0.1"
KERNEL_CMDLINE = f"console=ttyS0 root=/dev/vda rw net.ifnames=0 quiet panic=-1 init={vmimage.INIT_PATH}"
VM_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
PROGRESS_EVERY = 10.0
# Open SSH probes at once, and seconds they may wait for a banner between checks that QEMU still runs.
PROBE_LIMIT = 4
PROBE_WINDOW = 6.0
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


def choose_accel(setting: str, cpuinfo: str, device_ok: bool) -> str:
    """`kvm` or `tcg`. Auto needs both the device and the CPU flag: a /dev/kvm without them hangs guests."""
    if setting in ("kvm", "tcg"):
        return setting
    if setting != "auto":
        raise UsageError(f"Bad accel setting {setting!r}.", "Use auto, kvm or tcg (setting vm.accel).")
    return "kvm" if device_ok and cpu_has_virt(cpuinfo) else "tcg"


def qemu_argv(name: str, vm_dir: Path, image_dir: Path, port: int, memory: int, cpus: int, accel: str,
              cloud: bool = False) -> list[str]:
    """The QEMU command line for one VM; QEMU is started with `vm_dir` as its working directory.
    A `cloud` image boots from its own bootloader and reads a NoCloud seed.iso."""
    cpu = ["-cpu", "host"] if accel == "kvm" else []
    kernel = [] if cloud else ["-kernel", str(image_dir / "vmlinuz"), "-initrd", str(image_dir / "initrd.img"),
                               "-append", KERNEL_CMDLINE]
    seed = vm_dir / ("seed.iso" if cloud else "seed.img")
    return [
        "qemu-system-x86_64",
        "-name", f"labkit-{name}",
        "-M", "pc", "-accel", accel, *cpu,
        "-m", str(memory), "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        *kernel,
        "-drive", f"file={vm_dir / 'disk.qcow2'},format=qcow2,if=virtio",
        "-drive", f"file={seed},format=raw,if=virtio,readonly=on",
        "-netdev", f"user,id=net0,hostfwd=tcp:{HOST}:{port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci",
        "-serial", f"file:{vm_dir / 'serial.log'}",
        # Relative: a unix socket path is limited to 108 bytes and state dirs can be deep.
        "-qmp", "unix:qmp.sock,server=on,wait=off",
        "-pidfile", str(vm_dir / "qemu.pid"),
        "-daemonize",
    ]


def free_port() -> int:
    """A loopback TCP port that is free right now (QEMU's failure to bind it is retried)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def ssh_banner(port: int, timeout: float, interval: float = 0.3, limit: int = PROBE_LIMIT) -> bool:
    """Whether sshd answers on the forwarded port within `timeout`.

    QEMU accepts the TCP connection itself before the guest listens, and a connection made too
    early stays silent even once sshd is up; so a new one is opened every `interval` and the
    first `SSH-` banner on any of them counts. The interval grows to 2 s and at most `limit`
    connections stay open (a new one replaces the oldest): a flood of unanswered connections
    keeps a slow guest's sshd forking and makes it refuse them all ("Exceeded MaxStartups")."""
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
                interval = min(interval * 1.5, 2.0)
            for sock in select.select(pending, [], [], min(interval, deadline - now))[0]:
                try:
                    if sock.recv(64).startswith(b"SSH-"):
                        return True
                except OSError:
                    pass
                pending.remove(sock)
                sock.close()
        return False
    finally:
        for sock in pending:
            sock.close()


def qmp(vm_dir: Path, command: str, timeout: float = 5.0) -> None:
    """Send one QMP command through the VM's socket, reached via /proc/self/fd to stay short."""
    dir_fd = os.open(vm_dir, os.O_PATH | os.O_CLOEXEC)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(f"/proc/self/fd/{dir_fd}/qmp.sock")
            stream = sock.makefile("rwb")
            stream.readline()  # greeting
            for execute in ("qmp_capabilities", command):
                stream.write(json.dumps({"execute": execute}).encode() + b"\n")
                stream.flush()
                stream.readline()
    finally:
        os.close(dir_fd)


def _pid_alive(pid: int, vm_dir: Path) -> bool:
    """Whether `pid` is this VM's QEMU (a stale pidfile may name a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(vm_dir / "disk.qcow2").encode() in cmdline


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

    def up(self, vm: str) -> SSHTarget:
        """Create the VM if needed, boot it unless running, and wait for its sshd."""
        self._check_name(vm, configured=True)
        from labs.setup import guard_qemu  # labs.setup reads this module's facts: imported late, not in a cycle
        guard_qemu(self.settings, vm)
        with self._lock(vm):
            pid = self._pid(vm)
            if pid is None:
                if not self._meta(vm):
                    self._create(vm)
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
            result.append(VMStatus(vm, state=state, address=address, image=meta.get("image", ""), pid=pid))
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
            handle = open(vms / f".{vm}.lock", "w")
        except OSError as error:
            raise TargetError(f"State directory {vms} is not writable ({error.strerror}).",
                              "Set vm.state_dir to a writable directory.") from None
        deadline = time.monotonic() + float(self.settings["build_timeout"]) + float(self.settings["boot_timeout"])
        with handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TargetError(f"VM '{vm}' is busy in another labkit process.",
                                          "Wait for it to finish, then retry.") from None
                    time.sleep(0.5)
            yield

    # -- creating and booting -------------------------------------------------------------------

    def _create(self, vm: str) -> None:
        """Make the VM directory: overlay disk on the cached image, fresh keys, seed disk."""
        image = self.settings["vms"][vm]
        recipe = vmimage.recipe_for(self.settings, image)
        user, cloud = recipe["user"], cloudimage.is_cloud(recipe)
        download = cloudimage.fetch(self.settings, image, self.progress) if cloud else None
        image_dir = download.path if download else self.build_image(image)
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
                                 "user": user, "port": 0, "source": "cloud" if cloud else "mmdebstrap"})
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

    def _accel(self) -> str:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
        return choose_accel(self.settings["accel"], cpuinfo, kvm_device_ok())

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
        """Start QEMU detached (retrying when the chosen port got taken) and wait for sshd."""
        vm_dir, meta = self._vm_dir(vm), self._meta(vm)
        image_dir = self._check_image(vm, meta)
        serial = vm_dir / "serial.log"
        accel = self._accel()
        self.progress(f"Booting {vm} ({accel.upper()}{', no usable KVM: slower' if accel == 'tcg' else ''})")
        for attempt in range(QEMU_START_ATTEMPTS):
            port = free_port()
            for stale in ("qemu.pid", "qmp.sock"):
                (vm_dir / stale).unlink(missing_ok=True)
            self._pin_host_key(vm, port)
            argv = qemu_argv(vm, vm_dir, image_dir, port, int(self.settings["memory"]), int(self.settings["cpus"]), accel,
                             cloud=meta.get("source") == "cloud")
            started = time.monotonic()
            try:
                done = subprocess.run(argv, cwd=vm_dir, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                raise TargetError("QEMU did not start within 60 s.", f"Command: {' '.join(argv)}") from None
            if done.returncode == 0:
                break
            error = (done.stderr.strip().splitlines() or ["no message"])[-1]
            if "hostfwd" not in done.stderr or attempt == QEMU_START_ATTEMPTS - 1:
                raise TargetError(f"QEMU failed to start VM '{vm}': {error}", f"Command: {' '.join(argv)}")
        meta["port"] = port
        self._save_meta(vm, meta)
        pid = self._pid(vm)
        if pid is None:
            raise TargetError(f"QEMU exited right after starting VM '{vm}'.", f"See its serial console log: {serial}")
        self._wait_for_ssh(vm, pid, port, started)
        self.progress(f"{vm} is up: {meta['user']}@{HOST}:{port} (SSH answered {time.monotonic() - started:.1f} s after QEMU started)")

    def _wait_for_ssh(self, vm: str, pid: int, port: int, started: float) -> None:
        """Poll for the SSH banner until boot_timeout; kill QEMU and name the serial log on failure."""
        vm_dir = self._vm_dir(vm)
        serial = vm_dir / "serial.log"
        cloud = self._meta(vm).get("source") == "cloud"
        timeout = float(self.settings["cloud_boot_timeout" if cloud else "boot_timeout"])
        next_note = time.monotonic() + PROGRESS_EVERY
        while not ssh_banner(port, timeout=PROBE_WINDOW):
            now = time.monotonic()
            if not _pid_alive(pid, vm_dir):
                raise TargetError(f"VM '{vm}' stopped while booting.", f"See its serial console log: {serial}")
            if now - started > timeout:
                self._kill(pid, vm_dir)
                raise TargetError(f"VM '{vm}' did not answer on SSH within {timeout:.0f} s.",
                                  f"See its serial console log: {serial}")
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
                qmp(vm_dir, "quit")
            except OSError:
                pass
            if not _wait_exit(pid, vm_dir, STOP_WAIT):
                self._kill(pid, vm_dir)
        for stale in ("qemu.pid", "qmp.sock"):
            (vm_dir / stale).unlink(missing_ok=True)

    def _kill(self, pid: int, vm_dir: Path) -> None:
        """SIGTERM (QEMU still flushes its disks), then SIGKILL; both bounded."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            if _wait_exit(pid, vm_dir, 5.0):
                return
