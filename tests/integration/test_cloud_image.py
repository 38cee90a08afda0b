"""The cloud image path end to end, with a real cloud-init image served on loopback.

Alpine's and Ubuntu's servers cannot be reached from these machines, so their recipes are NOT tested
here (docs/providers.md says so). Everything else of the path is real: the image is a Debian
bookworm cloud-init image that `tests/cloud_image.py` builds without root mounts, served by an HTTP
server on 127.0.0.1; labkit downloads it with progress, verifies it, caches it, makes the VM an
overlay of it, writes the NoCloud seed, boots it through QEMU's firmware and its own bootloader,
and logs in with strict host key checking from the first connection. `inv lab.chroot` then runs
the whole lab on that VM, and `inv vm.prune` removes an unused download and keeps the VM's.

The downloads go to a cache of this module's own (tmp), never the user's shared one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from labs.errors import TargetError
from labs.providers import cloudimage
from labs.providers import vmimage
from labs.providers.ssh import Remote
from tests import cli, cloud_image
from tests.integration.conftest import booted, progress as show, recording_provider
from tests.remote import sh

pytestmark = pytest.mark.vm

VM = "cloud0"
HOST_BUSYBOX = "/bin/busybox"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The test cloud image (built once per machine into the test cache) and a SHA256SUMS beside it,
    served over HTTP on loopback: (server, sha256 hex)."""
    shared = Path(os.environ.get("LABKIT_TEST_CACHE_DIR") or vmimage.default_dir("XDG_CACHE_HOME", ".cache"))
    started = time.monotonic()
    image = cloud_image.build(shared, show)
    show(f"test cloud image ready in {time.monotonic() - started:.0f} s")
    root = tmp_path_factory.mktemp("www")
    for name in ("cloud.qcow2", "old.qcow2"):
        (root / name).symlink_to(image)
    digest = cloud_image.sha256(image)
    (root / "SHA256SUMS").write_text(f"{'0' * 64} *other.img\n{digest} *cloud.qcow2\n")
    server = cloud_image.Server(root)
    yield server, digest
    server.stop()


@pytest.fixture(scope="module")
def settings(served, tmp_path_factory):
    server, digest = served
    recipe = {"url": f"{server.url}/cloud.qcow2", "checksum": f"sha256:{digest}", "format": "qcow2", "user": "root"}
    cache = tmp_path_factory.mktemp("cloud-cache")
    yield {
        "cache_dir": str(cache),
        "state_dir": str(tmp_path_factory.mktemp("cloud-state")),
        "images": {
            "cloudtest": recipe,
            # The same image, its digest read from the published SHA256SUMS instead of pinned.
            "cloudsums": {**recipe, "checksum": "", "checksum_url": f"{server.url}/SHA256SUMS", "checksum_type": "sha256"},
            "badsum": {**recipe, "checksum": "sha256:" + "ab" * 32},
            "old": {**recipe, "url": f"{server.url}/old.qcow2"},
        },
        "vms": {VM: "cloudtest"},
        # It answers in about 20 s on a quiet machine, 85 s beside other busy VMs; a boot that hangs is
        # then tried again (vm.boot_attempts) long before the default 600 s, meant for slow laptops.
        "cloud_boot_timeout": 240,
    }
    shutil.rmtree(cache)  # hundreds of MiB that pytest would otherwise keep for three sessions


def images_dir(settings: dict) -> Path:
    return Path(settings["cache_dir"]) / "images"


def test_a_wrong_checksum_is_refused_and_nothing_is_cached(settings, served):
    _, digest = served
    with pytest.raises(TargetError) as raised:
        cloudimage.fetch(settings, "badsum", lambda message: None)
    message = raised.value.message
    assert "\n" not in message
    assert f"expected sha256:{'ab' * 32}" in message and f"got sha256:{digest}" in message
    assert not images_dir(settings).exists() or list(images_dir(settings).iterdir()) == []


@pytest.fixture(scope="module")
def fetched(settings, served):
    """The first download of the image: (Download, progress messages); the server's count of image
    requests is reset, as the refused download of a wrong checksum fetched it too."""
    server, _ = served
    messages: list[str] = []
    server.counts.clear()
    started = time.monotonic()
    download = cloudimage.fetch(settings, "cloudtest", messages.append)
    show(f"downloaded and verified in {time.monotonic() - started:.1f} s")
    return download, messages


def test_download_shows_bytes_and_percentage_and_is_verified(fetched, served):
    download, messages = fetched
    server, digest = served
    lines = [m for m in messages if m.startswith("Downloading cloudtest: ")]
    assert lines, messages
    assert all(re.fullmatch(r"Downloading cloudtest: \d+\.\d MiB of \d+\.\d MiB \(\d+%\)", line) for line in lines)
    # A line at most every second, not one per 1 MiB chunk of a several-hundred-MiB image.
    assert len(lines) < download.meta["size"] // cloudimage.CHUNK
    assert any(m.startswith("Downloaded cloudtest: ") for m in messages)
    assert download.meta["checksum"] == f"sha256:{digest}"
    assert cloud_image.sha256(download.image) == digest
    assert server.counts["/cloud.qcow2"] == 1


def test_the_cache_is_reused_without_a_second_download(fetched, settings, served):
    download, _ = fetched
    server, _ = served
    assert cloudimage.fetch(settings, "cloudtest", lambda m: None).path == download.path
    assert server.counts["/cloud.qcow2"] == 1


def test_a_published_checksum_file_gives_the_same_cached_image(fetched, settings, served):
    download, _ = fetched
    server, _ = served
    assert cloudimage.fetch(settings, "cloudsums", lambda m: None).path == download.path
    assert server.counts["/SHA256SUMS"] == 1 and server.counts["/cloud.qcow2"] == 1


@pytest.fixture(scope="module")
def cloud0(settings, fetched):
    """The VM booted from the cloud image: (provider, target, progress messages, boot seconds)."""
    yield from booted(*recording_provider(settings), VM)


@pytest.fixture(scope="module")
def remote(cloud0):
    connection = Remote(cloud0[1])
    yield connection
    connection.close()


def test_the_vm_is_an_overlay_of_the_download_booted_by_its_own_bootloader(cloud0, fetched):
    provider, target, messages = cloud0
    download, _ = fetched
    vm_dir = Path(provider.settings["state_dir"]) / "vms" / VM
    meta = json.loads((vm_dir / "vm.json").read_text())
    assert meta["source"] == "cloud" and meta["image_dir"] == str(download.path)
    info = json.loads(vmimage.run_tool(["qemu-img", "info", "-U", "--output=json", str(vm_dir / "disk.qcow2")], "info"))
    assert info["backing-filename"] == str(download.image) and info["backing-filename-format"] == "qcow2"
    pid = next(status.pid for status in provider.status() if status.name == VM)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"-kernel" not in cmdline and any(b"seed.iso" in arg for arg in cmdline)
    assert any(m.startswith(f"{VM} is up: root@127.0.0.1:") for m in messages)


def test_the_seed_sets_hostname_login_and_the_pinned_host_key(cloud0, remote):
    provider, target, _ = cloud0
    vm_dir = Path(provider.settings["state_dir"]) / "vms" / VM
    # The connection itself was made with strict checking against the pin written before boot.
    assert target.strict_host_key
    assert (vm_dir / "known_hosts").read_text().split()[1:] == (vm_dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    assert sh(remote, "hostname").strip() == VM
    assert sh(remote, "id -un").strip() == "root"
    assert (vm_dir / "id_ed25519.pub").read_text().split()[1] in sh(remote, "cat /root/.ssh/authorized_keys")
    assert sh(remote, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2] == \
        (vm_dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    assert sh(remote, "ls /etc/ssh/ | grep -c '^ssh_host_.*_key$'").strip() == "1"
    # The test image runs only cloud-init's first two stages (tests/cloud_image.py): both done, no error.
    status = json.loads(sh(remote, "cat /run/cloud-init/status.json"))["v1"]
    assert status["datasource"].startswith("DataSourceNoCloud")
    assert all(status[stage]["finished"] and status[stage]["errors"] == [] for stage in ("init-local", "init"))
    user_data = yaml.safe_load(sh(remote, "cat /var/lib/cloud/instance/user-data.txt"))
    assert user_data["hostname"] == VM and "PRIVATE" in user_data["ssh_keys"]["ed25519_private"]


def test_ssh_command_logs_in_with_strict_checking(cloud0):
    provider, _, _ = cloud0
    argv = provider.ssh_command(VM) + ["-o", "BatchMode=yes", "hostname"]
    assert "StrictHostKeyChecking=yes" in argv
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and done.stdout.strip() == VM, done.stderr


@pytest.fixture(scope="module")
def env(settings, tmp_path_factory):
    """The CLI's environment and a config file naming the cloud recipes and VM."""
    config = tmp_path_factory.mktemp("config") / "labkit.yaml"
    config.write_text(yaml.safe_dump({"vm": settings}))
    values = dict(os.environ, COLUMNS="120")
    values.pop("INVOKE_CHROOT_BUSYBOX_URL", None)
    return values, str(config)


def test_lab_chroot_passes_on_the_cloud_vm(cloud0, env, tmp_path):
    values, config = env
    report = tmp_path / "chroot.json"
    result = cli.labkit(values, "-f", config, "lab.chroot", "--provider", "qemu", "--vm", VM,
                        "--busybox", HOST_BUSYBOX, "--report", str(report), timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(report.read_text())
    assert data["summary"]["failed"] == 0 and data["summary"]["errors"] == 0
    assert all(step["status"] == "pass" for step in data["steps"])


def test_prune_removes_an_unused_image_and_keeps_the_vms(cloud0, fetched, settings, env):
    download, _ = fetched
    old = cloudimage.fetch(settings, "old", lambda m: None)
    assert old.path != download.path and old.path.is_dir()
    values, _ = env
    # Recipes of today: neither cloud recipe any more; the VM still stands on `cloudtest`'s image.
    config = Path(env[1]).with_name("pruning.yaml")
    config.write_text(yaml.safe_dump({"vm": {**settings, "images": {}, "vms": {VM: "chroot"}}}))
    status = cli.labkit(values, "-f", str(config), "vm.status", "--provider", "qemu", timeout=120)
    assert status.returncode == 0, status.stderr
    assert f"VM {VM}" in status.stdout and "nothing (inv vm.prune removes it)" in status.stdout
    dry = cli.labkit(values, "-f", str(config), "vm.prune", "--dry-run", timeout=120)
    assert dry.returncode == 0 and f"Would remove {old.path}" in dry.stdout, dry.stdout + dry.stderr
    assert old.path.is_dir()
    done = cli.labkit(values, "-f", str(config), "vm.prune", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Removed {old.path}" in done.stdout and "Removed 1 cached image(s), freed" in done.stdout
    assert not old.path.exists() and download.path.is_dir()
