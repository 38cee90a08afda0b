"""An aarch64 con0, built on this x86-64 machine and booted under TCG: the whole chroot lab and the
self-check on it, once per run.

The image is built by mmdebstrap for arm64 through qemu-user-static and binfmt_misc (scripts/setup
registers it) into the shared image cache, keyed by its recipe and arch, so a run builds it at most
once. busybox comes from the VM itself (`--busybox target`: Debian's arm64 busybox-static), since
busybox.net cannot be reached from here. What this costs is printed (`-s`): image build, boot, lab.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from labs.providers import vmimage
from labs.providers.ssh import Remote
from tests import cli
from tests.integration.conftest import booted, progress as show, recording_provider
from tests.remote import sh

pytestmark = pytest.mark.vm

VM = "arm0"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    cache = os.environ.get("LABKIT_TEST_CACHE_DIR") or str(vmimage.default_dir("XDG_CACHE_HOME", ".cache"))
    return {"cache_dir": cache, "state_dir": str(tmp_path_factory.mktemp("arm-state")), "arch": "aarch64",
            "vms": {VM: "chroot"}}


@pytest.fixture(scope="module")
def arm0(settings):
    provider, messages = recording_provider(settings)
    started = time.monotonic()
    image = vmimage.build_image(provider.settings, "chroot", provider.progress, arch="aarch64")
    built = json.loads((image / "image.json").read_text())
    show(f"aarch64 image: built in {built['build_seconds']} s (cached after the first run), ready after "
         f"{time.monotonic() - started:.0f} s")
    yield from booted(provider, messages, VM)


@pytest.fixture(scope="module")
def env(settings, tmp_path_factory):
    config = tmp_path_factory.mktemp("arm-config") / "labkit.yaml"
    config.write_text(yaml.safe_dump({"vm": settings}))
    values = dict(os.environ, COLUMNS="160")
    values.pop("INVOKE_CHROOT_BUSYBOX_URL", None)
    return values, str(config)


def test_the_vm_is_an_aarch64_guest_under_tcg(arm0):
    provider, target, messages = arm0
    vm_dir = Path(provider.settings["state_dir"]) / "vms" / VM
    meta = json.loads((vm_dir / "vm.json").read_text())
    assert meta["arch"] == "aarch64" and Path(meta["image_dir"]).name.startswith("chroot-aarch64-")
    assert json.loads((Path(meta["image_dir"]) / "image.json").read_text())["arch"] == "aarch64"
    # Emulated, the initramfs is the slowest part of the build: made once, by labkit's hook.
    assert (Path(meta["image_dir"]) / "build.log").read_text().count("update-initramfs: Generating") == 1
    cmdline = Path(f"/proc/{provider._pid(VM)}/cmdline").read_bytes().split(b"\0")
    assert cmdline[0].endswith(b"qemu-system-aarch64") and b"virt" in cmdline and b"max,pauth-impdef=on" in cmdline
    booting = next(m for m in messages if m.startswith(f"Booting {VM}"))
    assert "TCG (an aarch64 guest on this x86_64 CPU is emulated): it will be slow" in booting
    remote = Remote(target)
    try:
        assert sh(remote, "uname -m").strip() == "aarch64"
        assert "ttyAMA0" in sh(remote, "cat /proc/cmdline")
        # The build diverted update-initramfs to make the initramfs once; the image has the real one back.
        assert sh(remote, "dpkg-divert --list | grep -c update-initramfs || true").strip() == "0"
        assert sh(remote, "test -L /usr/sbin/update-initramfs && echo link || head -c 2 /usr/sbin/update-initramfs") == "#!"
    finally:
        remote.close()
    # The first login was already checked against the pinned host key, as on x86-64.
    assert target.strict_host_key and (vm_dir / "known_hosts").read_text().count("\n") == 1


def test_vm_status_shows_arch_and_accelerator(arm0, env):
    values, config = env
    result = cli.labkit(values, "-f", config, "vm.status", "--provider", "qemu", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if f" {VM} " in line)
    assert "aarch64" in row and "TCG" in row and "running" in row


def test_lab_and_self_check_pass_on_aarch64(arm0, env, tmp_path):
    values, config = env
    report = tmp_path / "chroot.json"
    started = time.monotonic()
    result = cli.labkit(values, "-f", config, "lab.chroot", "--provider", "qemu", "--vm", VM,
                        "--busybox", "target", "--report", str(report), timeout=2400)
    show(f"lab.chroot on aarch64: {time.monotonic() - started:.0f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(report.read_text())
    assert data["summary"]["failed"] == 0 and data["summary"]["errors"] == 0
    assert all(step["status"] == "pass" for step in data["steps"])
    started = time.monotonic()
    check = cli.labkit(values, "-f", config, "check.chroot", "--provider", "qemu", "--vm", VM,
                       "--report", str(tmp_path / "check.json"), timeout=1200)
    show(f"check.chroot on aarch64: {time.monotonic() - started:.0f} s")
    assert check.returncode == 0, check.stdout + check.stderr
    checks = json.loads((tmp_path / "check.json").read_text())
    assert checks["summary"]["failed"] == 0 and checks["summary"]["passed"] > 0
