"""A real cloud-init image for the tests, built without root mounts, and a loopback HTTP server for it.

The distribution cloud images (Alpine, Ubuntu) cannot be downloaded from our machines, so the tests
build one of the same kind: Debian bookworm with systemd, cloud-init (NoCloud only, trimmed to the
modules labkit's seed needs), sshd and the cloud kernel, on a partitioned disk that boots through
QEMU's firmware with its own bootloader:

- partition 1: FAT16 `/boot` with the kernel, its initrd and SYSLINUX (`syslinux --install` works on
  an image file; files go in with mtools);
- partition 2: ext4 root, written from mmdebstrap's tarball by genext2fs (which keeps root ownership
  without privileges), upgraded with tune2fs;
- the partition table written by sfdisk into the disk file, SYSLINUX's MBR in its first 440 bytes.

Nothing is mounted, so a normal user can build it too. The qcow2 is cached by the hash of this
file's build inputs in `<cache>/test-images/`, so a test session (and every later one on the same
machine) builds it once.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from labs.providers import vmimage

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ["systemd-sysv", "udev", "cloud-init", "openssh-server", "linux-image-cloud-amd64", "sudo"]
MIB = 1024 * 1024
BOOT_START, BOOT_SIZE = 1 * MIB, 96 * MIB
ROOT_START, ROOT_SIZE = BOOT_START + BOOT_SIZE, 1536 * MIB
SYSLINUX_MBR = "/usr/lib/syslinux/mbr/mbr.bin"

# Only what the seed needs: the NoCloud data source, no network rendering (networkd does DHCP), and
# the modules that set the hostname, make users and install ssh keys. Under TCG each module costs.
CLOUD_CFG = """\
datasource_list: [NoCloud, None]
network: {config: disabled}
cloud_init_modules: [set_hostname, update_hostname, users_groups, ssh]
cloud_config_modules: []
cloud_final_modules: []
"""
NETWORK = "[Match]\nName=en* eth*\n[Network]\nDHCP=ipv4\n"
# Not quiet, and SYSLINUX on the serial line too: a boot that hangs shows in serial.log where it stopped.
SYSLINUX_CFG = ("SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL /vmlinuz\n"
                "  INITRD /initrd.img\n  APPEND root=/dev/vda2 rw console=ttyS0 net.ifnames=0\n")
HOOKS = [
    'rm -f "$1"/etc/ssh/ssh_host_*',
    f"printf '%s' '{CLOUD_CFG}' > \"$1\"/etc/cloud/cloud.cfg.d/90-labkit-test.cfg",
    f"printf '%s' '{NETWORK}' > \"$1\"/etc/systemd/network/80-dhcp.network",
    'chroot "$1" systemctl enable systemd-networkd',
    # Time-wasters at boot under TCG that a test VM does not need.
    # cloud-config and cloud-final run no module here (see CLOUD_CFG) but cost 10 s of CPU each.
    'chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service'
    ' systemd-networkd-wait-online.service cloud-config.service cloud-final.service'
    ' getty-static.service serial-getty@ttyS0.service',
    'printf "/dev/vda2 / ext4 rw 0 1\\n" > "$1"/etc/fstab',
]


# Bump when the procedure below changes in a way the inputs of build_key do not show.
BUILD_FORMAT = 1


def build_key() -> str:
    """Digest of everything the image is made from."""
    inputs = [BUILD_FORMAT, SUITE, MIRROR, PACKAGES, BOOT_SIZE, ROOT_SIZE, CLOUD_CFG, NETWORK, SYSLINUX_CFG, HOOKS]
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:12]


def _run(argv: list[str], log) -> None:
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def build(cache: Path, progress=print) -> Path:
    """The cached test cloud image (qcow2), built when missing. Returns its path."""
    final = cache / "test-images" / f"cloudinit-{build_key()}.qcow2"
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".build-") as tmp, \
            open(final.parent / "cloudinit-build.log", "w") as log:
        work = Path(tmp)
        rootfs_tar, boot, root, disk = work / "rootfs.tar", work / "boot.img", work / "root.img", work / "disk.img"
        progress("Test cloud image: mmdebstrap (systemd, cloud-init, sshd, kernel)")
        _run(["mmdebstrap", "--mode=auto", "--variant=minbase", "--format=tar", "--include=" + ",".join(PACKAGES),
              '--aptopt=Acquire::Retries "3"', *(f"--dpkgopt={rule}" for rule in vmimage.DPKG_EXCLUDES),
              *(f"--customize-hook={hook}" for hook in HOOKS), SUITE, str(rootfs_tar), MIRROR], log)
        vmimage.extract_boot_files(rootfs_tar, work)
        progress("Test cloud image: boot partition (FAT, SYSLINUX)")
        (work / "syslinux.cfg").write_text(SYSLINUX_CFG)
        _run(["mkfs.vfat", "-F", "16", "-n", "BOOT", "-C", str(boot), str(BOOT_SIZE // 1024)], log)
        _run(["mcopy", "-i", str(boot), str(work / "vmlinuz"), str(work / "initrd.img"), str(work / "syslinux.cfg"), "::"], log)
        _run(["syslinux", "--install", str(boot)], log)
        progress("Test cloud image: root partition (ext4 from the tarball)")
        _run(["genext2fs", "-B", "4096", "-b", str(ROOT_SIZE // 4096), "-N", str(ROOT_SIZE // 16384), "-m", "0",
              "-a", str(rootfs_tar), str(root)], log)
        rootfs_tar.unlink()
        _run(["tune2fs", "-O", "has_journal,extent,dir_index,filetype,uninit_bg", str(root)], log)
        subprocess.run(["e2fsck", "-fy", str(root)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        progress("Test cloud image: partitioned disk, MBR, qcow2")
        with open(disk, "wb") as out:
            out.truncate(ROOT_START + ROOT_SIZE)
        table = (f"label: dos\nstart={BOOT_START // 512}, size={BOOT_SIZE // 512}, type=6, bootable\n"
                 f"start={ROOT_START // 512}, size={ROOT_SIZE // 512}, type=83\n")
        log.write(f"$ sfdisk {disk}\n{table}")
        log.flush()
        subprocess.run(["sfdisk", "-q", str(disk)], input=table, text=True, check=True, stdout=log, stderr=subprocess.STDOUT)
        _run(["dd", f"if={SYSLINUX_MBR}", f"of={disk}", "bs=440", "count=1", "conv=notrunc", "status=none"], log)
        for part, start in ((boot, BOOT_START), (root, ROOT_START)):
            _run(["dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={start // MIB}", "conv=notrunc,sparse", "status=none"], log)
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(disk), str(work / "image.qcow2")], log)
        (work / "image.qcow2").rename(final)
    for older in final.parent.glob("cloudinit-*.qcow2"):
        if older != final:
            older.unlink(missing_ok=True)  # an earlier build of this file's image: keep the cache bounded
    progress(f"Test cloud image built in {time.monotonic() - started:.0f} s: {final}")
    return final


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


class Server:
    """A loopback HTTP server for one directory that counts the GET requests per path."""

    def __init__(self, directory: Path):
        counts: dict[str, int] = {}
        self.counts = counts

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                counts[self.path] = counts.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    import sys
    print(build(Path(sys.argv[1])))
