"""The QEMU provider's pure parts: KVM detection, command line, recipes, image cache keys, state files."""

import io
import json
import os
import select
import socket
import tarfile
import threading
from pathlib import Path

import pytest

from labs.errors import TargetError, UsageError
from labs.providers import qemu, vmimage
from labs.providers.qemu import (
    DEFAULTS,
    HostFacts,
    Launch,
    QemuProvider,
    VMStatus,
    choose_accel,
    cpu_has_virt,
    qemu_argv,
    ssh_banner,
)

INTEL = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme de pse tsc msr vmx sse sse2\n"
AMD = "processor\t: 0\nflags\t\t: fpu svm lm\n"
NO_VIRT = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr sse sse2 hypervisor\nbugs\t\t: vmx_ish\n"


def test_cpu_flags_decide_virtualisation_support():
    assert cpu_has_virt(INTEL)
    assert cpu_has_virt(AMD)
    assert not cpu_has_virt(NO_VIRT)
    assert not cpu_has_virt("")


def linux(cpuinfo: str, device_ok: bool) -> HostFacts:
    return HostFacts("Linux", "x86_64", "x86_64", kvm_device=device_ok, cpuinfo=cpuinfo)


def test_auto_accel_needs_both_device_and_cpu_flag():
    assert choose_accel("auto", linux(INTEL, True)).name == "kvm"
    assert choose_accel("auto", linux(INTEL, False)).name == "tcg"
    # What these machines have: /dev/kvm opens, but the CPU shows no vmx/svm and guests hang.
    assert choose_accel("auto", linux(NO_VIRT, True)).name == "tcg"


def test_explicit_accel_wins_and_nonsense_is_a_usage_error():
    assert choose_accel("tcg", linux(INTEL, True)).name == "tcg"
    assert choose_accel("kvm", linux(NO_VIRT, False)).name == "kvm"
    with pytest.raises(UsageError):
        choose_accel("turbo", linux(INTEL, True))


def launch(vm_dir, image_dir, accel, **more) -> Launch:
    return Launch("con0", vm_dir, image_dir, 2222, 1024, 2, accel, **more)


def test_qemu_command_line(tmp_path):
    vm_dir, image_dir = tmp_path / "vms" / "con0", tmp_path / "images" / "chroot-abc"
    argv = qemu_argv(launch(vm_dir, image_dir, "tcg"))
    joined = " ".join(argv)
    assert argv[0] == "qemu-system-x86_64"
    assert "-accel tcg" in joined and "-cpu host" not in joined
    assert f"-kernel {image_dir / 'vmlinuz'}" in joined and f"-initrd {image_dir / 'initrd.img'}" in joined
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in joined
    assert f"file={vm_dir / 'disk.qcow2'},format=qcow2" in joined
    assert f"file={vm_dir / 'seed.img'},format=raw,if=virtio,readonly=on" in joined
    assert f"-serial file:{vm_dir / 'serial.log'}" in joined
    assert "-daemonize" in argv and "-display none" in joined and "-m 1024 -smp 2" in joined
    append = argv[argv.index("-append") + 1]
    assert "console=ttyS0" in append and "root=/dev/vda" in append and f"init={vmimage.INIT_PATH}" in append
    assert "-cpu host" in " ".join(qemu_argv(launch(vm_dir, image_dir, "kvm")))


def test_disk_sizes():
    assert vmimage.parse_size("2G") == 2 * 1024**3
    assert vmimage.parse_size("512M") == 512 * 1024**2
    assert vmimage.parse_size("4096") == 4096
    with pytest.raises(UsageError):
        vmimage.parse_size("two gigs")


def test_recipe_hash_covers_recipe_suite_and_guest_files():
    recipe = vmimage.recipe_for({}, "chroot")
    files = {"rc": b"#!/bin/sh\n", "inittab": b"::sysinit:/etc/labkit/rc\n"}
    base = vmimage.recipe_hash(recipe, "bookworm", "http://m", 2**31, files)
    assert base == vmimage.recipe_hash(dict(reversed(list(recipe.items()))), "bookworm", "http://m", 2**31, dict(reversed(list(files.items()))))
    assert base != vmimage.recipe_hash({**recipe, "packages": recipe["packages"] + ["vim"]}, "bookworm", "http://m", 2**31, files)
    assert base != vmimage.recipe_hash(recipe, "trixie", "http://m", 2**31, files)
    assert base != vmimage.recipe_hash(recipe, "bookworm", "http://m", 2**31, {**files, "rc": b"#!/bin/sh\necho\n"})


def test_image_dir_lives_in_the_cache_and_names_the_recipe(tmp_path):
    settings = {**DEFAULTS, "cache_dir": str(tmp_path)}
    path = vmimage.image_dir(settings, "chroot")
    assert path.parent == tmp_path / "images" and path.name.startswith("chroot-")
    assert vmimage.image_dir({**settings, "disk_size": "4G"}, "chroot") != path


def test_recipes_are_data_that_settings_can_override():
    assert vmimage.recipe_for({}, "chroot")["user"] == "root"
    docker = vmimage.recipe_for({}, "docker")
    assert docker["user"] == "vagrant" and docker["sudo"] and "docker.io" in docker["packages"]
    custom = vmimage.recipe_for({"images": {"chroot": {"packages": ["openssh-server"]}}}, "chroot")
    assert custom["packages"] == ["openssh-server"] and custom["user"] == "root"
    with pytest.raises(UsageError):
        vmimage.recipe_for({}, "windows")


def test_customize_hooks_create_only_non_root_users(tmp_path):
    root_hooks = vmimage.customize_hooks(vmimage.recipe_for({}, "chroot"), tmp_path / "guest.tar")
    assert root_hooks[0] == f"tar-in {tmp_path / 'guest.tar'} /"
    assert not any("useradd" in hook for hook in root_hooks)
    assert any("ssh_host_" in hook for hook in root_hooks)
    docker_hooks = " ".join(vmimage.customize_hooks(vmimage.recipe_for({}, "docker"), tmp_path / "guest.tar"))
    assert "useradd --create-home --shell /bin/bash --groups sudo vagrant" in docker_hooks
    assert "vagrant ALL=(ALL) NOPASSWD:ALL" in docker_hooks


def test_guest_overlay_is_owned_by_root_and_adds_services(tmp_path):
    path = tmp_path / "guest.tar"
    vmimage.write_overlay_tar(path, vmimage.recipe_for({}, "docker"))
    with tarfile.open(path) as tar:
        members = {member.name: member for member in tar}
        assert all(member.uid == 0 and member.gid == 0 for member in members.values())
        assert members["etc/labkit/rc"].mode == 0o755
        assert members[vmimage.INIT_PATH.lstrip("/")].linkname == "/bin/busybox"
        inittab = tar.extractfile(members["etc/inittab"]).read().decode()
    assert "::sysinit:/etc/labkit/rc" in inittab and "::respawn:/usr/sbin/dockerd" in inittab


def _tar_with(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_newest_kernel_with_an_initrd_is_extracted(tmp_path):
    _tar_with(tmp_path / "root.tar", {
        "./boot/vmlinuz-6.1.0-9-cloud-amd64": b"k9", "./boot/initrd.img-6.1.0-9-cloud-amd64": b"i9",
        "./boot/vmlinuz-6.1.0-10-cloud-amd64": b"k10", "./boot/initrd.img-6.1.0-10-cloud-amd64": b"i10",
        "./boot/vmlinuz-6.1.0-11-cloud-amd64": b"no initrd for this one",
    })
    assert vmimage.extract_boot_files(tmp_path / "root.tar", tmp_path) == "6.1.0-10-cloud-amd64"
    assert (tmp_path / "vmlinuz").read_bytes() == b"k10" and (tmp_path / "initrd.img").read_bytes() == b"i10"


def _cpio_members(data: bytes) -> list[tuple[str, int, bytes]]:
    """(name, mode, data) of each member of a newc cpio archive, the trailer left out."""
    members, offset = [], 0
    while True:
        fields = [int(data[offset + 6 + 8 * i:offset + 14 + 8 * i], 16) for i in range(13)]
        name_end = offset + 110 + fields[11]
        name = data[offset + 110:name_end - 1].decode()
        start = name_end + (-name_end % 4)
        if name == "TRAILER!!!":
            return members
        members.append((name, fields[1], data[start:start + fields[6]]))
        offset = start + fields[6] + (-(start + fields[6]) % 4)


def test_the_initramfs_carries_busybox_init_and_the_virtio_modules_in_load_order(tmp_path):
    version = "6.1.0-10-cloud-amd64"
    modules = f"./usr/lib/modules/{version}"
    dep = ("kernel/drivers/virtio/virtio.ko:\nkernel/drivers/virtio/virtio_ring.ko:\n"
           "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n"
           "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n"
           "kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko\n"
           "kernel/net/core/failover.ko:\nkernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko\n"
           "kernel/fs/unused.ko:\n")
    files = {"./usr/bin/busybox": b"busybox", f"{modules}/modules.dep": dep.encode()}
    for line in dep.splitlines():
        files[f"{modules}/{line.split(':')[0]}"] = line.split(":")[0].encode()
    _tar_with(tmp_path / "root.tar", files)
    vmimage.write_initramfs(tmp_path / "root.tar", version, tmp_path / "initrd.img")
    members = {name: (mode, data) for name, mode, data in _cpio_members((tmp_path / "initrd.img").read_bytes())}
    assert members["init"] == (0o100755, vmimage.initramfs_init()) and members["bin/busybox"][1] == b"busybox"
    assert members["dev/console"][0] == 0o020600
    loaded = [name.split("/")[-1] for name in members if name.startswith("lib/modules/") and name.endswith(".ko")]
    assert loaded == ["01-virtio.ko", "02-virtio_ring.ko", "03-virtio_pci.ko", "04-virtio_blk.ko", "05-failover.ko",
                      "06-virtio_net.ko", "07-virtio-rng.ko"]
    assert members["lib/modules/03-virtio_pci.ko"][1] == b"kernel/drivers/virtio/virtio_pci.ko"


def test_an_initramfs_without_a_module_it_needs_is_a_target_error(tmp_path):
    version = "6.1.0-10-cloud-amd64"
    _tar_with(tmp_path / "root.tar", {"./usr/bin/busybox": b"busybox",
                                      f"./usr/lib/modules/{version}/modules.dep": b"kernel/fs/unused.ko:\n"})
    with pytest.raises(TargetError, match="no module virtio_pci"):
        vmimage.write_initramfs(tmp_path / "root.tar", version, tmp_path / "initrd.img")


def test_an_image_without_kernel_is_a_target_error(tmp_path):
    _tar_with(tmp_path / "root.tar", {"./etc/hostname": b"x"})
    with pytest.raises(TargetError):
        vmimage.extract_boot_files(tmp_path / "root.tar", tmp_path)


def test_unwritable_cache_dir_is_a_target_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TargetError, match="not writable"):
        QemuProvider({"cache_dir": str(blocker / "cache")}).build_image("chroot")


def test_defaults_document_every_setting():
    assert set(DEFAULTS) == {"cache_dir", "state_dir", "memory", "cpus", "disk_size", "boot_timeout", "build_timeout",
                             "mirror", "suite", "accel", "arch", "images", "vms", "cloud_boot_timeout",
                             "boot_attempts"}
    assert DEFAULTS["vms"]["con0"] == "chroot" and DEFAULTS["mirror"] == "http://deb.debian.org/debian"


def test_xdg_directories_are_the_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert QemuProvider({}).state_dir == tmp_path / "state" / "labkit"
    assert vmimage.cache_dir({}) == tmp_path / "cache" / "labkit"


def test_stale_pidfile_reads_as_stopped(tmp_path):
    vm_dir = tmp_path / "vms" / "con0"
    vm_dir.mkdir(parents=True)
    (vm_dir / "vm.json").write_text(json.dumps({"name": "con0", "image": "chroot", "user": "root", "port": 2222}))
    (vm_dir / "qemu.pid").write_text(f"{os.getpid()}\n")  # alive, but not this VM's QEMU
    provider = QemuProvider({"state_dir": str(tmp_path), "accel": "tcg"})
    # A vm.json from before guests had an arch: x86_64; stopped, so the accelerator it would boot with now.
    assert provider.status() == [VMStatus("con0", state="stopped", image="chroot", arch="x86_64",
                                          accel="TCG (as vm.accel says): it will be slow (software emulation)")]
    with pytest.raises(TargetError) as error:
        provider.target("con0")
    assert error.value.message == "VM 'con0' is not running." and error.value.hint == "Start it with: inv vm.up con0"


def test_unknown_vm_names_are_usage_errors(tmp_path):
    provider = QemuProvider({"state_dir": str(tmp_path)})
    for call in (provider.up, provider.target, provider.down, provider.destroy):
        with pytest.raises(UsageError, match="Unknown VM 'nope'"):
            call("nope")
    with pytest.raises(UsageError):
        provider.up("../con0")


def _serve_once(reply: bytes) -> int:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer():
        with server:
            connection, _ = server.accept()
            with connection:
                if reply:
                    connection.sendall(reply)
                connection.recv(1)

    threading.Thread(target=answer, daemon=True).start()
    return server.getsockname()[1]


def test_only_an_ssh_banner_counts_as_ready():
    port = _serve_once(b"SSH-2.0-OpenSSH_9.2\r\n")
    assert ssh_banner(port, timeout=2.0)
    port = _serve_once(b"")  # accepted but silent, like QEMU's forwarder before sshd runs
    assert not ssh_banner(port, timeout=0.5)


def _probe_while(serve, timeout: float) -> bool:
    """ssh_banner against a loopback listener whose connections `serve(server, stop)` handles in a
    thread until `stop` is set; the listener is closed afterwards."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(server, stop), daemon=True)
    thread.start()
    try:
        return ssh_banner(server.getsockname()[1], timeout=timeout)
    finally:
        stop.set()
        thread.join()
        server.close()


def test_waiting_for_sshd_keeps_few_connections_open():
    """A silent listener, like a guest whose sshd is slow: the probes must not pile up on it."""
    seen, most = [0], [0]

    def watch(server, stop):
        server.setblocking(False)
        open_ones = []
        while not stop.is_set():
            ready = select.select([server, *open_ones], [], [], 0.05)[0]
            for sock in ready:
                if sock is server:
                    open_ones.append(server.accept()[0])
                    seen[0] += 1
                elif not sock.recv(64):
                    open_ones.remove(sock)
                    sock.close()
            most[0] = max(most[0], len(open_ones))
        for sock in open_ones:
            sock.close()

    assert not _probe_while(watch, timeout=4.0)
    # At 0, 0.3, 0.75, 1.4, 2.4 and 3.4 s at the most, and never more than four at once (a fixed
    # 0.3 s interval without a limit would hold some thirteen open).
    assert 2 <= seen[0] <= 6 and most[0] <= 4


def test_a_refused_probe_is_retried_soon():
    """A listener that closes every connection at once, like a guest whose network is up before its sshd:
    the probes follow each other closely instead of backing off, yet at a bounded rate."""
    seen = [0]

    def refuse(server, stop):
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                server.accept()[0].close()
                seen[0] += 1
            except TimeoutError:
                pass

    assert not _probe_while(refuse, timeout=3.0)
    # Backing off alone would connect five times (0, 0.3, 0.75, 1.4 and 2.4 s); one every 0.2 s at most.
    assert 6 <= seen[0] <= 3.0 / qemu.PROBE_REFUSED_RETRY + 1


def test_a_hung_build_step_is_stopped_at_its_timeout(tmp_path):
    log = tmp_path / "build.log"
    with pytest.raises(TargetError, match="timed out after 1 s") as error:
        vmimage._run(["sleep", "60"], log, 1, lambda message: None, "sleeping", (0,))
    assert str(log) in error.value.hint
