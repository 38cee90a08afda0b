"""Build and cache the Debian disk images that the QEMU provider boots.

An image is described by a *recipe* (plain data, overridable through the `vm.images` setting):

| key        | meaning                                                                  |
|------------|--------------------------------------------------------------------------|
| `packages` | Debian packages added to a `minbase` bookworm (kernel and sshd included) |
| `user`     | the login user; `root` logs in as root, anything else is created         |
| `sudo`     | that non-root user gets passwordless sudo                                |
| `groups`   | supplementary groups of that user (they must exist after installation)  |
| `services` | commands busybox init keeps running besides sshd (for example dockerd)   |
| `shell`    | the login user's shell (`/bin/ash` is BusyBox ash, as on Alpine); default `/bin/bash` |
| `userland` | `busybox`: `/bin/ash`, and every BusyBox applet linked in /usr/local/bin, first on PATH; default Debian's tools only |
| `remove`   | packages purged after installation, essential ones too (`bash`)          |

Keys a recipe leaves out take the `chroot` recipe's values (the built-in `docker` recipe has no
`shell`, `userland` or `remove`: a bash login on Debian's tools); keep its three base packages, which the
guest's boot relies on (the kernel, sshd, and busybox-static as init).

The `chroot` recipe is Alpine-like, as the workshop's `alpine3.9-simple`: root logs in to BusyBox
ash, the applets come first on PATH, and there is no bash. The guest's rc and init never needed bash
(they run `/bin/busybox sh`); Debian's own tools stay installed behind the applets, so apt and dpkg
keep working. `docker` keeps Debian's userland with a bash login, as the workshop's Ubuntu box has.

The build runs `mmdebstrap` (root mode as root, unshare mode for a normal user, so no sudo is
needed), turns its tarball into an ext2 image with `genext2fs` (which keeps the tar's root
ownership without privileges), upgrades that with tune2fs to a journalled filesystem with extents
and d_type (which overlayfs needs) of `disk_size`, and copies the kernel next to it with an initrd: the Debian
cloud kernel has virtio as modules, so it cannot boot without one. An x86_64 image gets labkit's own
small initramfs (`write_initramfs`: BusyBox and the virtio modules), which boots seconds faster under TCG
than Debian's; an aarch64 image keeps Debian's initrd.

The result lives in `<cache_dir>/images/<recipe>-<hash>/`, where the hash covers the recipe, the
suite, the mirror, the disk size and the guest files; it is built in a temporary directory and
renamed into place, so an interrupted build never leaves a half image behind.
"""

import copy
import hashlib
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from labs.errors import TargetError, UsageError
from labs.resources import resource

# Bump when the build procedure changes in a way that should invalidate every cached image.
IMAGE_FORMAT = 2

BASE_PACKAGES = ["openssh-server", "linux-image-cloud-amd64", "busybox-static"]

# Guest architectures: labkit's name (`uname -m`) -> Debian's architecture name and the kernel package
# that replaces linux-image-cloud-amd64 in a recipe built for it.
ARCHES = {
    "x86_64": {"debian": "amd64", "kernel": "linux-image-cloud-amd64"},
    "aarch64": {"debian": "arm64", "kernel": "linux-image-cloud-arm64"},
}
# What the host's platform.machine() says for each guest architecture it can run natively.
MACHINE_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}

RECIPES: dict[str, dict] = {
    "chroot": {
        "packages": BASE_PACKAGES,
        "user": "root",
        "sudo": False,
        "groups": [],
        "services": [],
        "shell": "/bin/ash",
        "userland": "busybox",
        "remove": ["bash"],
    },
    "docker": {
        "packages": BASE_PACKAGES + ["sudo", "docker.io"],
        "user": "vagrant",
        "sudo": True,
        "groups": ["sudo"],
        "services": ["/usr/sbin/dockerd >/var/log/dockerd.log 2>&1"],
    },
}

# Guest files: name under scripts/guest/ -> (path in the image, mode).
GUEST_FILES = {
    "rc": ("etc/labkit/rc", 0o755),
    "inittab": ("etc/inittab", 0o644),
    "sshd_config": ("etc/ssh/sshd_config.d/labkit.conf", 0o644),
}
# busybox picks the applet from argv[0], so init has to be reached through a link named "init".
INIT_PATH = "/usr/lib/labkit/init"

# Applets not linked into /usr/local/bin: busybox itself (it is /bin/busybox), and the Debian tools that
# Debian's own programs find on PATH and call with options BusyBox lacks: the package and kernel-module
# tools of maintainer scripts (BusyBox's dpkg or depmod would corrupt their state), and run-parts
# (sshd's PAM runs `run-parts --lsbsysinit` for the login message).
APPLETS_NOT_LINKED = ["busybox", "run-parts", "dpkg", "dpkg-deb", "start-stop-daemon", "rpm", "rpm2cpio",
                       "depmod", "insmod", "modprobe", "rmmod", "lsmod", "modinfo", "init", "linuxrc"]

# Documentation is not needed on a lab VM; leaving it out makes the image and in-guest apt faster.
DPKG_EXCLUDES = [
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
]

# Debian makes the kernel's initramfs twice during an install (the kernel's postinst, then the
# initramfs-tools trigger); emulated, each took 7-8 min here. Images other than x86_64 (the cached x86
# images stay as they are) divert update-initramfs during the install and make the initramfs once at
# the end: (essential hooks, customize hooks); INITRD_ONCE is part of their cache key.
INITRD_ONCE = "initrd-once-2"
INITRD_ONCE_HOOKS = (
    ['chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs',
     'ln -s /bin/true "$1"/usr/sbin/update-initramfs'],
    ['rm -f "$1"/usr/sbin/update-initramfs',
     'chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs',
     'chroot "$1" update-initramfs -c -k all'],
)
# labkit's initramfs for x86_64 images (write_initramfs): these modules with their dependencies (the root
# disk, the network and virtio-rng, which fills the entropy pool that sshd waits for), and BusyBox running
# scripts/guest/INITRAMFS_INIT as /init; both are part of the x86_64 images' cache key.
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "virtio-rng"]
INITRAMFS_INIT = "initramfs-init"
# vm.build_timeout is multiplied by this for an image of a foreign arch (built through qemu-user-static).
FOREIGN_BUILD_FACTOR = 4
BLOCK_SIZE = 4096
BYTES_PER_INODE = 16384
PROGRESS_EVERY = 15.0


def default_dir(env: str, fallback: str) -> Path:
    """The XDG directory `env` (or `~/fallback`) joined with `labkit`."""
    base = os.environ.get(env) or str(Path.home() / fallback)
    return Path(base) / "labkit"


def cache_dir(settings: dict) -> Path:
    """Where images are cached: the `cache_dir` setting, else the user's XDG cache dir."""
    value = settings.get("cache_dir") or default_dir("XDG_CACHE_HOME", ".cache")
    return Path(value).expanduser()


def parse_size(text: str | int) -> int:
    """Bytes in a size such as `2G`, `512M` or a plain number of bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise UsageError(f"Bad disk size {text!r}.", "Use a size like 2G or 4096M (setting vm.disk_size).")
    number, unit = match.groups()
    return int(number) * 1024 ** " KMGT".index(unit.upper() or " ")


def host_arch(machine: str) -> str:
    """labkit's architecture name for `platform.machine()` text (`x86_64`, `AMD64`, `arm64`, `aarch64`);
    UsageError for a CPU no guest is built for."""
    arch = MACHINE_ALIASES.get(machine.lower())
    if not arch:
        raise UsageError(f"No guest architecture for this {machine or 'unknown'} CPU.",
                         "Set vm.arch to x86_64 or aarch64 (it will run emulated, slowly).")
    return arch


def resolve_arch(setting: str, machine: str) -> str:
    """`x86_64` or `aarch64` for the `vm.arch` setting (`auto` = the host's own architecture)."""
    if setting == "auto":
        return host_arch(machine)
    if setting not in ARCHES:
        raise UsageError(f"Bad arch {setting!r}.", "Use auto, x86_64 or aarch64 (setting vm.arch or vm.up --arch).")
    return setting


def recipe_for(settings: dict, image: str, arch: str = "x86_64") -> dict:
    """The recipe named `image` from the settings (falling back to the built-in ones), for guest `arch`:
    the amd64 cloud kernel becomes that arch's kernel package."""
    recipes = {**RECIPES, **(settings.get("images") or {})}
    if image not in recipes:
        raise UsageError(f"Unknown image recipe '{image}'.",
                         f"Known recipes: {', '.join(sorted(recipes))} (setting vm.images).")
    recipe = copy.deepcopy({**RECIPES.get(image, RECIPES["chroot"]), **recipes[image]})
    # A cloud recipe's top-level url is its x86_64 image; `arches` gives the other architectures' url and checksum.
    per_arch = recipe.pop("arches", None) or {}
    if recipe.get("url") and arch != "x86_64":
        if arch not in per_arch:
            raise UsageError(f"Image recipe '{image}' has no {arch} image.",
                             f"Add vm.images.{image}.arches.{arch} (url and checksum), or use --arch x86_64.")
        recipe.update(per_arch[arch])
    if "packages" in recipe:
        amd64 = ARCHES["x86_64"]["kernel"]
        recipe["packages"] = [ARCHES[arch]["kernel"] if name == amd64 else name for name in recipe["packages"]]
    return recipe


def guest_file_bytes() -> dict[str, bytes]:
    """Contents of the shipped guest files, which are part of every image."""
    return {name: resource("scripts", "guest", name).read_bytes() for name in GUEST_FILES}


def recipe_hash(recipe: dict, suite: str, mirror: str, disk_size: int, guest_files: dict[str, bytes],
                arch: str = "x86_64") -> str:
    """A short digest of everything that ends up in an image, naming its cache directory.
    An aarch64 image's digest also covers its arch and INITRD_ONCE, an x86_64 one labkit's initramfs."""
    digest = hashlib.sha256()
    key = [IMAGE_FORMAT, recipe, suite, mirror, disk_size]
    if arch == "x86_64":
        key += [INITRAMFS_MODULES, hashlib.sha256(initramfs_init()).hexdigest()]
    else:
        key += [arch, INITRD_ONCE]
    digest.update(json.dumps(key, sort_keys=True).encode())
    if recipe.get("userland") == "busybox":
        digest.update(json.dumps(busybox_userland_hooks()).encode())
    for name in sorted(guest_files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(guest_files[name]).digest())
    return digest.hexdigest()[:12]


def initramfs_init() -> bytes:
    """The /init script of labkit's initramfs."""
    return resource("scripts", "guest", INITRAMFS_INIT).read_bytes()


def image_dir(settings: dict, image: str, arch: str = "x86_64") -> Path:
    """Cache directory the current recipe of `image` builds into for guest `arch`
    (`<recipe>-<hash>` for x86_64, `<recipe>-<arch>-<hash>` otherwise)."""
    recipe = recipe_for(settings, image, arch)
    key = recipe_hash(recipe, settings["suite"], settings["mirror"], parse_size(settings["disk_size"]), guest_file_bytes(), arch)
    name = f"{image}-{key}" if arch == "x86_64" else f"{image}-{arch}-{key}"
    return cache_dir(settings) / "images" / name


def busybox_userland_hooks() -> list[str]:
    """Hooks that make BusyBox the userland, as on Alpine: `/bin/ash`, and a link in /usr/local/bin
    (first on sshd's and root's PATH) for every applet but APPLETS_NOT_LINKED."""
    kept = " ".join(APPLETS_NOT_LINKED)
    return [
        'ln -sf /bin/busybox "$1"/bin/ash && chroot "$1" /usr/sbin/add-shell /bin/ash',
        'for applet in $(chroot "$1" /bin/busybox --list); do case " ' + kept + ' " in *" $applet "*) continue;; esac; '
        'ln -sf /bin/busybox "$1/usr/local/bin/$applet" || exit 1; done',
    ]


def customize_hooks(recipe: dict, overlay_tar: Path) -> list[str]:
    """mmdebstrap `--customize-hook` values: guest files, userland, login user, no shared host keys."""
    hooks = [
        f"tar-in {shlex.quote(str(overlay_tar))} /",
        # openssh-server generated host keys at install time; every VM gets its own from its seed.
        'rm -f "$1"/etc/ssh/ssh_host_*',
    ]
    if recipe.get("userland") == "busybox":
        hooks += busybox_userland_hooks()
    shell = shlex.quote(recipe.get("shell") or "/bin/bash")
    user = recipe["user"]
    if user == "root":
        if recipe.get("shell"):
            hooks.append(f'chroot "$1" usermod --shell {shell} root')
    else:
        groups = ",".join(recipe.get("groups") or [])
        options = f"--groups {shlex.quote(groups)} " if groups else ""
        hooks.append(f'chroot "$1" useradd --create-home --shell {shell} {options}{shlex.quote(user)}')
        # "*" rather than a locked "!": sshd then accepts key logins whatever its UsePAM says.
        hooks.append(f"chroot \"$1\" usermod -p '*' {shlex.quote(user)}")
        if recipe.get("sudo"):
            line = shlex.quote(f"{user} ALL=(ALL) NOPASSWD:ALL")
            hooks.append(f'echo {line} > "$1"/etc/sudoers.d/labkit && chmod 440 "$1"/etc/sudoers.d/labkit')
    if recipe.get("remove"):
        # Last, once nothing else needs them (bash is Essential to dpkg, hence the force).
        packages = " ".join(shlex.quote(name) for name in recipe["remove"])
        hooks.append(f'chroot "$1" dpkg --purge --force-remove-essential {packages}')
    return hooks


def write_overlay_tar(path: Path, recipe: dict) -> None:
    """Tarball of the guest files, owned by root, for mmdebstrap's `tar-in`."""
    contents = guest_file_bytes()
    services = "".join(f"::respawn:{command}\n" for command in recipe.get("services") or [])
    contents["inittab"] = contents["inittab"] + services.encode()

    def add(tar: tarfile.TarFile, name: str, mode: int, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
            link: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.mode, info.type, info.linkname, info.size = mode, kind, link, len(data)
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    with tarfile.open(path, "w") as tar:
        for directory in ("etc/labkit", "usr/lib/labkit", "etc/ssh/sshd_config.d"):
            add(tar, directory, 0o755, kind=tarfile.DIRTYPE)
        for name, (target, mode) in GUEST_FILES.items():
            add(tar, target, mode, contents[name])
        add(tar, INIT_PATH.lstrip("/"), 0o777, kind=tarfile.SYMTYPE, link="/bin/busybox")


def extract_boot_files(rootfs_tar: Path, dest: Path) -> str:
    """Copy the newest kernel and its initrd out of the rootfs tarball; returns the kernel version."""
    kernels: dict[str, tarfile.TarInfo] = {}
    initrds: dict[str, tarfile.TarInfo] = {}
    with tarfile.open(rootfs_tar) as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if member.isfile() and name.startswith("boot/vmlinuz-"):
                kernels[name.removeprefix("boot/vmlinuz-")] = member
            elif member.isfile() and name.startswith("boot/initrd.img-"):
                initrds[name.removeprefix("boot/initrd.img-")] = member
        versions = sorted(set(kernels) & set(initrds), key=_version_key)
        if not versions:
            raise TargetError("The image has no kernel with an initrd in /boot.",
                              "Check the recipe's packages (it needs linux-image-cloud-amd64).")
        version = versions[-1]
        for member, out in ((kernels[version], "vmlinuz"), (initrds[version], "initrd.img")):
            with tar.extractfile(member) as src, open(dest / out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return version


def write_initramfs(rootfs_tar: Path, version: str, dest: Path) -> None:
    """Write labkit's initramfs for kernel `version` to `dest`: an uncompressed cpio of BusyBox, the
    /init script and INITRAMFS_MODULES with their dependencies from the rootfs tarball, named in load order."""
    with tarfile.open(rootfs_tar) as tar:
        members = {member.name.removeprefix("./"): member for member in tar}

        def read(path: str) -> bytes:
            for name in (path, "usr/" + path):  # merged /usr: /bin and /lib link to /usr/bin and /usr/lib
                member = members.get(name)
                if member is not None and member.isfile():
                    with tar.extractfile(member) as src:
                        return src.read()
            raise TargetError(f"The image has no /{path} for its initramfs.",
                              "Keep busybox-static and the cloud kernel in the recipe's packages.")

        modules = f"lib/modules/{version}"
        deps = {}
        for line in read(f"{modules}/modules.dep").decode().splitlines():
            module, _, needs = line.partition(":")
            deps[module] = needs.split()
        paths = {Path(module).name.removesuffix(".ko"): module for module in deps}
        order: list[str] = []

        def visit(module: str) -> None:
            for dependency in reversed(deps[module]):  # modules.dep lists the last to load first
                visit(dependency)
            if module not in order:
                order.append(module)

        for name in INITRAMFS_MODULES:
            if name not in paths:
                raise TargetError(f"Kernel {version} has no module {name}.", "Use a Debian cloud kernel in the recipe.")
            visit(paths[name])
        entries = [("dev", 0o040755, b""), ("proc", 0o040755, b""), ("root", 0o040755, b""),
                   ("bin", 0o040755, b""), ("lib", 0o040755, b""), ("lib/modules", 0o040755, b""),
                   ("dev/console", 0o020600, b""), ("bin/busybox", 0o100755, read("bin/busybox")),
                   ("init", 0o100755, initramfs_init())]
        entries += [(f"lib/modules/{index:02d}-{Path(module).name}", 0o100644, read(f"{modules}/{module}"))
                    for index, module in enumerate(order, 1)]
    dest.write_bytes(cpio_newc(entries))


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """An uncompressed `newc` cpio archive (what the kernel unpacks as initramfs) of (name, mode, data)
    entries, owned by root; a character device is /dev/console (5, 1)."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], 1):
        rdev = (5, 1) if mode & 0o170000 == 0o020000 else (0, 0)
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(name) + 1, 0]
        out.extend(b"070701" + "".join(f"{field:08x}" for field in fields).encode() + name.encode() + b"\0")
        pad()
        out.extend(data)
        pad()
    return bytes(out)


def _version_key(version: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", version)]


# Which Debian package brings each host tool, for the "Install it" hint.
TOOL_PACKAGES = {
    "mmdebstrap": "mmdebstrap", "genext2fs": "genext2fs", "newuidmap": "uidmap",
    "tune2fs": "e2fsprogs", "e2fsck": "e2fsprogs", "mke2fs": "e2fsprogs",
    "qemu-system-x86_64": "qemu-system-x86", "qemu-system-aarch64": "qemu-system-arm", "qemu-img": "qemu-utils",
    "ssh-keygen": "openssh-client", "ssh": "openssh-client",
    "genisoimage": "genisoimage",
}


def find_tool(name: str) -> str:
    """Path of a host tool, also searching sbin (a normal user's PATH often lacks it)."""
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"]))
    if not found:
        raise TargetError(f"{name} not found.", f"Install it: sudo apt-get install {TOOL_PACKAGES[name]}")
    return found


def run_tool(argv: list[str], what: str, timeout: float = 60) -> str:
    """Run a short host tool and return its output; a failure stops provisioning with the tool's own message."""
    argv = [find_tool(argv[0]), *argv[1:]]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TargetError(f"{what} timed out after {timeout} s.", f"Command: {' '.join(argv)}") from None
    if done.returncode != 0:
        raise TargetError(f"{what} failed: {done.stderr.strip() or done.stdout.strip()}", f"Command: {' '.join(argv)}")
    return done.stdout


def binfmt_registered(arch: str, binfmt_dir: Path = Path("/proc/sys/fs/binfmt_misc")) -> bool:
    """Whether the kernel runs `arch` binaries through qemu-user-static (an enabled binfmt_misc entry)."""
    try:
        return (binfmt_dir / f"qemu-{arch}").read_text().startswith("enabled")
    except OSError:
        return False


def check_tools(arch: str = "x86_64") -> None:
    """Fail before a minute of work when a build tool, for a normal user a subordinate id range, or for a
    foreign `arch` the binfmt_misc registration of qemu-user-static is missing."""
    for tool in ("mmdebstrap", "genext2fs", "tune2fs", "e2fsck"):
        find_tool(tool)
    if arch != host_arch(platform.machine()) and not binfmt_registered(arch):
        raise TargetError(
            f"This Linux cannot run {arch} programs, which building an {arch} image needs (binfmt_misc).",
            "Register qemu-user-static once, as root: sudo scripts/setup (or: sudo apt-get install qemu-user-static "
            f"binfmt-support && sudo update-binfmts --enable qemu-{arch}).")
    if os.geteuid() != 0:
        import pwd  # POSIX only: image builds run on Linux, while this module is imported everywhere
        find_tool("newuidmap")
        user = pwd.getpwuid(os.getuid()).pw_name
        for table in ("/etc/subuid", "/etc/subgid"):
            if not _has_subids(Path(table), user, os.getuid()):
                raise TargetError(
                    f"User {user} has no subordinate ids in {table} (mmdebstrap's unshare mode needs them).",
                    f"Add them: sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}",
                )


def _has_subids(table: Path, user: str, uid: int) -> bool:
    try:
        lines = table.read_text().splitlines()
    except OSError:
        return False
    return any(line.split(":")[0] in (user, str(uid)) for line in lines if line.count(":") == 2)


def _run(argv: list[str], log: Path, timeout: float, progress: Callable[[str], None], phase: str,
         ok: tuple[int, ...]) -> None:
    """Run one build step with its output in `log`; bounded by `timeout`, progress every few seconds."""
    progress(phase)
    started = time.monotonic()
    next_note = started + PROGRESS_EVERY
    with open(log, "ab") as out:
        out.write(f"$ {shlex.join(argv)}\n".encode())
        out.flush()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while process.poll() is None:
                now = time.monotonic()
                if now - started > timeout:
                    raise TargetError(f"Image build step timed out after {int(timeout)} s: {argv[0]}.",
                                      f"See the build log: {log}")
                if now >= next_note:
                    progress(f"{phase} ({int(now - started)} s)")
                    next_note = now + PROGRESS_EVERY
                time.sleep(0.2)
        finally:
            _stop_group(process)
    if process.returncode not in ok:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise TargetError(f"Image build step failed ({os.path.basename(argv[0])}, exit {process.returncode}): {' | '.join(tail)}",
                          f"See the build log: {log}")


def _stop_group(process: subprocess.Popen) -> None:
    """End a build step that is still running: SIGTERM first, so that mmdebstrap removes its chroot
    (in unshare mode owned by subordinate ids, which the user could not delete afterwards)."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def pid_exists(pid: int) -> bool:
    """Whether a process `pid` runs: /proc on Linux, psutil where there is no /proc (macOS, Windows,
    where os.kill(pid, 0) would end the process)."""
    if Path("/proc/self").is_dir():
        return Path(f"/proc/{pid}").exists()
    import psutil  # a dependency of labkit, needed only off Linux
    return psutil.pid_exists(pid)


def _remove_stale_builds(images: Path) -> None:
    """Delete temporary build directories whose builder process is gone."""
    for tmp in images.glob(".build-*"):
        pid = tmp.name.split("-")[-2]
        if pid.isdigit() and not pid_exists(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def build_image(settings: dict, image: str, progress: Callable[[str], None], force: bool = False,
                arch: str = "x86_64") -> Path:
    """The cached image directory for recipe `image` and guest `arch`, building it first when missing (or
    `force`). A foreign `arch` runs the packages' scripts through qemu-user-static and binfmt_misc."""
    recipe = recipe_for(settings, image, arch)
    final = image_dir(settings, image, arch)
    if final.is_dir() and not force:
        return final
    images = final.parent
    try:
        images.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=images).close()
    except OSError as error:
        raise TargetError(f"Cache directory {images} is not writable ({error.strerror}).",
                          "Set vm.cache_dir to a writable directory.") from None
    check_tools(arch)
    _remove_stale_builds(images)
    disk_size = parse_size(settings["disk_size"])
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f".build-{image}-{os.getpid()}-", dir=images))
    # Outside `work`, so that a failed build's log survives the clean-up for the error's hint.
    log = images / f"{image}-build.log"
    log.unlink(missing_ok=True)

    native = arch == host_arch(platform.machine())
    # Every package script of a foreign arch runs emulated: the chroot image took 5 to 23 min on 2 loaded
    # cores here (about a minute natively), depending on the load.
    timeout = float(settings["build_timeout"]) * (1 if native else FOREIGN_BUILD_FACTOR)

    def step(what: str, argv: list[str], ok: tuple[int, ...] = (0,)) -> None:
        _run(argv, log, timeout, progress, f"Building image {image}: {what}", ok)

    try:
        overlay, rootfs_tar, disk = work / "guest.tar", work / "rootfs.tar", work / "rootfs.img"
        write_overlay_tar(overlay, recipe)
        step("installing Debian packages (about a minute)" if native else
             f"installing {arch} Debian packages, emulated (several minutes)", [
            find_tool("mmdebstrap"), "--mode=auto", "--variant=minbase", "--format=tar",
            f"--architectures={ARCHES[arch]['debian']}",
            "--include=" + ",".join(recipe["packages"]),
            '--aptopt=Acquire::Retries "3"',
            *(f"--dpkgopt={rule}" for rule in DPKG_EXCLUDES),
            *(f"--essential-hook={hook}" for hook in ([] if arch == "x86_64" else INITRD_ONCE_HOOKS[0])),
            # The initramfs first: mkinitramfs needs Debian's own tools, which a BusyBox userland then shadows.
            *(f"--customize-hook={hook}" for hook in ([] if arch == "x86_64" else INITRD_ONCE_HOOKS[1])),
            *(f"--customize-hook={hook}" for hook in customize_hooks(recipe, overlay)),
            settings["suite"], str(rootfs_tar), settings["mirror"],
        ])
        progress(f"Building image {image}: copying out the kernel and initrd")
        kernel = extract_boot_files(rootfs_tar, work)
        if arch == "x86_64":
            write_initramfs(rootfs_tar, kernel, work / "initrd.img")
        step(f"writing the {settings['disk_size']} disk image", [
            find_tool("genext2fs"), "-B", str(BLOCK_SIZE), "-b", str(disk_size // BLOCK_SIZE),
            "-N", str(disk_size // BYTES_PER_INODE), "-m", "0", "-a", str(rootfs_tar), str(disk),
        ])
        rootfs_tar.unlink()
        overlay.unlink()
        # ext2 -> journalled, extents, d_type (overlayfs upper dirs need it); e2fsck then fills in the types.
        features = "has_journal,extent,dir_index,filetype,uninit_bg"
        step("adding a journal", [find_tool("tune2fs"), "-L", "labkit-root", "-O", features, str(disk)])
        # e2fsck exits 1 when it fixed something, which is what it is run for here.
        step("checking the filesystem", [find_tool("e2fsck"), "-fy", str(disk)], ok=(0, 1))
        meta = {
            # Tells VMs whose overlay sits on this image whether it was rebuilt under them (force).
            "id": uuid.uuid4().hex,
            "image": image, "recipe": recipe, "suite": settings["suite"], "mirror": settings["mirror"],
            "kernel": kernel, "disk_size": disk_size, "arch": arch,
            "build_seconds": round(time.monotonic() - started, 1), "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (work / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
        shutil.move(log, work / "build.log")
        if force and final.exists():
            shutil.rmtree(final)
        try:
            work.rename(final)
        except OSError:
            if not final.is_dir():
                raise
            # Another build of the same recipe finished first; its image is identical.
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    progress(f"Built image {image} in {time.monotonic() - started:.0f} s: {final}")
    return final
