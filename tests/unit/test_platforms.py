"""Guests of two architectures and hosts of three systems, as pure functions of their facts.

macOS and Windows cannot run here (Linux only), so their accelerator choice and QEMU command lines
are pinned from facts handed in; the portable fallbacks that Linux does not take on its own (psutil
instead of /proc, the threaded terminal hand-over) are run here directly.
"""

import os
import socket
import threading
from pathlib import Path, PureWindowsPath

import pytest

from labs import chroot, terminal
from tests.unit.test_terminal import SocketChannel
from labs.errors import TargetError, UsageError
from labs.providers import cloudimage, imagecache, vmimage
from labs.providers.qemu import (
    Accel,
    HostFacts,
    Launch,
    QemuProvider,
    aarch64_firmware,
    accel_line,
    choose_accel,
    exclusive,
    process_cmdline,
    qemu_argv,
    qemu_binary,
)

VMX = "flags\t\t: fpu vmx sse2\n"
NO_VMX = "flags\t\t: fpu sse2 hypervisor\n"

# -- the accelerator: (system, machine, guest arch, more facts) -> accelerator -------------------------

CHOICES = {
    "linux-x86-kvm": (HostFacts("Linux", "x86_64", "x86_64", kvm_device=True, cpuinfo=VMX), "kvm"),
    "linux-x86-no-flag": (HostFacts("Linux", "x86_64", "x86_64", kvm_device=True, cpuinfo=NO_VMX), "tcg"),
    "linux-x86-no-device": (HostFacts("Linux", "x86_64", "x86_64", kvm_device=False, cpuinfo=VMX), "tcg"),
    # Arm CPUs have no vmx/svm flag: a usable /dev/kvm is enough.
    "linux-arm-kvm": (HostFacts("Linux", "aarch64", "aarch64", kvm_device=True), "kvm"),
    "linux-arm-no-device": (HostFacts("Linux", "aarch64", "aarch64"), "tcg"),
    "linux-x86-aarch64-guest": (HostFacts("Linux", "x86_64", "aarch64", kvm_device=True, cpuinfo=VMX), "tcg"),
    "macos-apple-silicon": (HostFacts("Darwin", "arm64", "aarch64", hv_support=True), "hvf"),
    "macos-apple-silicon-x86-guest": (HostFacts("Darwin", "arm64", "x86_64", hv_support=True), "tcg"),
    "macos-intel": (HostFacts("Darwin", "x86_64", "x86_64", hv_support=True), "hvf"),
    "macos-no-hypervisor": (HostFacts("Darwin", "arm64", "aarch64", hv_support=False), "tcg"),
    "windows-whpx": (HostFacts("Windows", "AMD64", "x86_64", whpx=True), "whpx"),
    "windows-no-whpx": (HostFacts("Windows", "AMD64", "x86_64", whpx=False), "tcg"),
    "windows-arm-aarch64-guest": (HostFacts("Windows", "ARM64", "aarch64", whpx=True), "whpx"),
    "freebsd": (HostFacts("FreeBSD", "amd64", "x86_64"), "tcg"),
}


@pytest.mark.parametrize("case", list(CHOICES))
def test_auto_chooses_the_hosts_own_accelerator(case):
    facts, expected = CHOICES[case]
    chosen = choose_accel("auto", facts)
    assert chosen.name == expected and chosen.reason
    line = accel_line(chosen)
    assert line.startswith(expected.upper()) and ("it will be slow" in line) == (expected == "tcg")


def test_tcg_reasons_say_what_is_missing():
    assert "emulated" in choose_accel("auto", CHOICES["linux-x86-aarch64-guest"][0]).reason
    assert "vmx/svm" in choose_accel("auto", CHOICES["linux-x86-no-flag"][0]).reason
    assert "kern.hv_support" in choose_accel("auto", CHOICES["macos-no-hypervisor"][0]).reason
    assert "Windows Hypervisor Platform" in choose_accel("auto", CHOICES["windows-no-whpx"][0]).reason


def test_a_named_accelerator_is_used_as_said_and_nonsense_is_refused():
    facts = CHOICES["linux-x86-no-flag"][0]
    for name in ("kvm", "hvf", "whpx", "tcg"):
        assert choose_accel(name, facts) == Accel(name, "as vm.accel says")
    with pytest.raises(UsageError) as raised:
        choose_accel("hax", facts)
    assert "auto, kvm, hvf, whpx or tcg" in raised.value.hint


# -- QEMU command lines --------------------------------------------------------------------------------

def test_linux_aarch64_guest_under_tcg(tmp_path):
    argv = qemu_argv(Launch("con0", tmp_path / "vm", tmp_path / "img", 2222, 1024, 2, "tcg", arch="aarch64"))
    joined = " ".join(argv)
    assert argv[0] == "qemu-system-aarch64"
    assert "-M virt -accel tcg -cpu max,pauth-impdef=on" in joined
    assert "console=ttyAMA0" in argv[argv.index("-append") + 1]
    assert f"-kernel {tmp_path / 'img' / 'vmlinuz'}" in joined and "-daemonize" in argv
    assert "virtio-net-pci,netdev=net0" in argv and "unix:qmp.sock,server=on,wait=off" in argv


def test_linux_aarch64_guest_with_kvm_uses_the_host_cpu(tmp_path):
    joined = " ".join(qemu_argv(Launch("con0", tmp_path, tmp_path, 2222, 1024, 2, "kvm", arch="aarch64")))
    assert "-M virt -accel kvm -cpu host" in joined and "-cpu max" not in joined


def homebrew(tmp_path: Path) -> Path:
    """A Homebrew-like prefix: bin/qemu-system-aarch64 and share/qemu/edk2-aarch64-code.fd."""
    (tmp_path / "bin").mkdir(parents=True)
    (tmp_path / "share" / "qemu").mkdir(parents=True)
    (tmp_path / "bin" / "qemu-system-aarch64").write_text("")
    (tmp_path / "share" / "qemu" / "edk2-aarch64-code.fd").write_bytes(b"\0" * 16)
    return tmp_path / "bin" / "qemu-system-aarch64"


def test_macos_apple_silicon_cloud_image_command_line(tmp_path):
    """What a student on an M1 runs: an aarch64 cloud image under HVF, booted by Homebrew's UEFI firmware."""
    qemu = homebrew(tmp_path / "opt" / "homebrew")
    firmware = aarch64_firmware(str(qemu))
    assert firmware == tmp_path / "opt" / "homebrew" / "share" / "qemu" / "edk2-aarch64-code.fd"
    vm_dir = Path("/Users/student/Library/State/labkit/vms/con0")
    argv = qemu_argv(Launch("con0", vm_dir, Path("/Users/student/.cache/labkit/downloads/alpine"), 50022, 1024, 2, "hvf",
                            arch="aarch64", cloud=True, system="Darwin", qemu=str(qemu), firmware=firmware))
    assert argv[:8] == [str(qemu), "-name", "labkit-con0", "-M", "virt,highmem=off", "-accel", "hvf", "-cpu"]
    assert argv[8] == "host"
    assert f"if=pflash,format=raw,readonly=on,file={firmware}" in argv
    assert "-kernel" not in argv and f"file={vm_dir / 'seed.iso'},format=raw,if=virtio,readonly=on" in argv
    assert "hostfwd=tcp:127.0.0.1:50022-:22" in " ".join(argv)
    assert argv[-1] == "-daemonize" and "unix:qmp.sock,server=on,wait=off" in argv


def test_macos_intel_x86_cloud_image_uses_hvf_without_firmware(tmp_path):
    argv = qemu_argv(Launch("docker0", tmp_path, tmp_path, 2222, 1024, 2, "hvf", cloud=True, system="Darwin"))
    assert argv[:7] == ["qemu-system-x86_64", "-name", "labkit-docker0", "-M", "pc", "-accel", "hvf"]
    assert "-cpu" in argv and "pflash" not in " ".join(argv)


def test_an_aarch64_cloud_image_without_firmware_is_a_clear_error(tmp_path):
    with pytest.raises(TargetError) as raised:
        qemu_argv(Launch("con0", tmp_path, tmp_path, 2222, 1024, 2, "hvf", arch="aarch64", cloud=True, system="Darwin"))
    assert "edk2-aarch64-code.fd" in raised.value.message and "brew install qemu" in raised.value.hint


def test_windows_whpx_command_line():
    """Windows: qemu-system-x86_64.exe with WHPX, backslash paths, QMP over loopback TCP, no -daemonize."""
    vm_dir = PureWindowsPath(r"C:\Users\student\AppData\Local\labkit\vms\docker0")
    image = PureWindowsPath(r"C:\Users\student\AppData\Local\labkit\cache\downloads\bionic")
    argv = qemu_argv(Launch("docker0", vm_dir, image, 50022, 2048, 2, "whpx", cloud=True, system="Windows", qmp_port=50023))
    assert argv[0] == qemu_binary("x86_64", "Windows") == "qemu-system-x86_64.exe"
    assert argv[3:7] == ["-M", "pc", "-accel", "whpx"]
    assert r"file=C:\Users\student\AppData\Local\labkit\vms\docker0\disk.qcow2,format=qcow2,if=virtio" in argv
    assert r"file:C:\Users\student\AppData\Local\labkit\vms\docker0\serial.log" in argv
    assert r"C:\Users\student\AppData\Local\labkit\vms\docker0\qemu.pid" in argv
    assert "tcp:127.0.0.1:50023,server=on,wait=off" in argv
    assert "-daemonize" not in argv and not any("unix:" in part for part in argv)


# -- guest architectures in recipes and the image cache -------------------------------------------------

def test_the_kernel_package_follows_the_arch():
    assert "linux-image-cloud-amd64" in vmimage.recipe_for({}, "docker", "x86_64")["packages"]
    arm = vmimage.recipe_for({}, "docker", "aarch64")["packages"]
    assert "linux-image-cloud-arm64" in arm and "linux-image-cloud-amd64" not in arm and "docker.io" in arm


def test_the_image_cache_key_includes_the_arch(tmp_path):
    settings = {"cache_dir": str(tmp_path), "suite": "bookworm", "mirror": "http://m", "disk_size": "2G"}
    x86, arm = vmimage.image_dir(settings, "chroot", "x86_64"), vmimage.image_dir(settings, "chroot", "aarch64")
    assert x86 != arm and arm.name.startswith("chroot-aarch64-") and not x86.name.startswith("chroot-aarch64")


def test_arch_settings():
    assert vmimage.resolve_arch("auto", "arm64") == "aarch64"
    assert vmimage.resolve_arch("auto", "AMD64") == "x86_64"
    assert vmimage.resolve_arch("aarch64", "x86_64") == "aarch64"
    with pytest.raises(UsageError):
        vmimage.resolve_arch("arm", "x86_64")
    with pytest.raises(UsageError):
        vmimage.resolve_arch("auto", "riscv64")


def test_cloud_recipes_name_an_image_per_arch():
    settings = {"images": cloudimage.RECIPES}
    alpine = vmimage.recipe_for(settings, "alpine", "aarch64")
    assert "aarch64-uefi" in alpine["url"] and cloudimage.is_cloud(alpine) and "arches" not in alpine
    assert "x86_64-bios" in vmimage.recipe_for(settings, "alpine", "x86_64")["url"]
    assert vmimage.recipe_for(settings, "bionic", "aarch64")["url"].endswith("-arm64.img")
    with pytest.raises(UsageError) as raised:
        vmimage.recipe_for({"images": {"mine": {"url": "https://x/y.qcow2", "checksum": "sha256:" + "0" * 64}}},
                           "mine", "aarch64")
    assert "has no aarch64 image" in raised.value.message


def test_prune_keeps_the_current_image_of_every_arch(tmp_path):
    settings = {"cache_dir": str(tmp_path), "suite": "bookworm", "mirror": "http://m", "disk_size": "2G"}
    current = imagecache._current_dirs(settings)
    assert vmimage.image_dir(settings, "chroot", "aarch64") in current and vmimage.image_dir(settings, "chroot") in current


def test_a_foreign_arch_build_needs_binfmt(tmp_path):
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    (tmp_path / "qemu-riscv64").write_text("disabled\n")
    assert vmimage.binfmt_registered("aarch64", tmp_path)
    assert not vmimage.binfmt_registered("riscv64", tmp_path) and not vmimage.binfmt_registered("arm", tmp_path)


def test_a_vm_keeps_the_arch_it_was_created_with(tmp_path):
    vm_dir = tmp_path / "vms" / "con0"
    vm_dir.mkdir(parents=True)
    (vm_dir / "vm.json").write_text('{"name": "con0", "image": "chroot", "arch": "aarch64", "user": "root", "port": 0}')
    with pytest.raises(UsageError) as raised:
        QemuProvider({"state_dir": str(tmp_path)}).up("con0", arch="x86_64")
    assert "created as aarch64" in raised.value.message and "vm.destroy con0" in raised.value.hint


# -- busybox per CPU -----------------------------------------------------------------------------------

def test_busybox_url_follows_the_targets_cpu():
    settings = {"busybox": {"url": "https://example/busybox-i686", "urls": {"aarch64": chroot.ARMV8_URL}, "sha256": ""}}
    assert chroot.busybox_url(settings, "x86_64") == "https://example/busybox-i686"
    assert chroot.busybox_url(settings, "aarch64").endswith("/1.31.0-defconfig-multiarch-musl/busybox-armv8l")
    assert chroot._expected_sha256({**settings, "state_dir": "/nonexistent"}, chroot.ARMV8_URL)[0] == \
        "141adb1b625a6f44c4b114f76b4387b4ea4f7ab802b88eb40e0d2f6adcccb1c3"


# -- portable process, lock and terminal code ----------------------------------------------------------

def test_process_command_lines_without_proc_come_from_psutil(tmp_path):
    """macOS and Windows have no /proc: a missing proc directory makes labkit ask psutil."""
    mine = process_cmdline(os.getpid(), tmp_path / "no-proc")
    assert mine is not None and mine == process_cmdline(os.getpid()).rstrip("\0")
    assert process_cmdline(2**22 + 12345, tmp_path / "no-proc") is None


def test_the_vm_lock_is_exclusive_across_holders(tmp_path):
    lock = tmp_path / ".con0.lock"
    with exclusive(lock, 1, "busy"):
        other = threading.Thread(target=lambda: results.append(_try(lock)))
        results: list = []
        other.start()
        other.join()
    assert results == ["busy"]
    with exclusive(lock, 1, "busy"):
        pass


def _try(lock: Path) -> str:
    try:
        with exclusive(lock, 0.6, "busy"):
            return "got it"
    except TargetError as error:
        return error.message


def test_console_keys_become_ansi_sequences():
    assert terminal.console_key("a", lambda: "") == "a"
    assert terminal.console_key("\xe0", lambda: "H") == "\x1b[A"
    assert terminal.console_key("\x00", lambda: "S") == "\x1b[3~"
    assert terminal.console_key("\xe0", lambda: "?") == ""


def test_threaded_hand_over_pumps_a_pipe_and_the_channel():
    """The Windows path of attach (no termios, no select on files), run here with a pipe as stdin."""
    local, far = socket.socketpair()
    stdin_read, stdin_write = os.pipe()
    out_read, out_write = os.pipe()
    os.write(stdin_write, b"echo hi\n")
    os.close(stdin_write)

    def program():
        data = b""
        while chunk := far.recv(100):
            data += chunk
        far.sendall(b"got " + data)
        far.close()
    remote = threading.Thread(target=program)
    remote.start()
    terminal._attach_threaded(SocketChannel(local), stdin_read, out_write)
    remote.join(5)
    os.close(out_write)
    assert os.read(out_read, 100) == b"got echo hi\n"
    for fd in (stdin_read, out_read):
        os.close(fd)
    local.close()
