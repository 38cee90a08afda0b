"""Cloud recipes, published checksum files, the NoCloud seed's YAML, and the image cache's bookkeeping."""

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

from labs.errors import TargetError, UsageError
from labs.providers import cloudimage, imagecache, vmimage
from labs.providers.qemu import DEFAULTS, Launch, qemu_argv

SHA256 = "a" * 64
SHA512 = "b" * 128


def test_checksums_are_sha256_or_sha512_of_the_right_length():
    assert cloudimage.parse_checksum("x", f"sha256:{SHA256.upper()}") == ("sha256", SHA256)
    assert cloudimage.parse_checksum("x", f"sha512:{SHA512}") == ("sha512", SHA512)
    for bad in (f"sha512:{SHA256}", f"md5:{SHA256}", SHA256, "sha256:" + "g" * 64):
        with pytest.raises(UsageError):
            cloudimage.parse_checksum("x", bad)


def test_digest_is_found_in_the_forms_distributions_publish():
    sums = f"{'1' * 64} *jammy.img\n{SHA256}  bionic-server-cloudimg-amd64.img\n"
    assert cloudimage.digest_from_list(sums, "sha256", "bionic-server-cloudimg-amd64.img") == SHA256
    assert cloudimage.digest_from_list(sums, "sha256", "missing.img") is None
    assert cloudimage.digest_from_list(f"{SHA512}\n", "sha512", "alpine.qcow2") == SHA512
    assert cloudimage.digest_from_list(f"{SHA512}  alpine.qcow2\n", "sha512", "alpine.qcow2") == SHA512
    assert cloudimage.digest_from_list(f"SHA512 (alpine.qcow2) = {SHA512}\n", "sha512", "alpine.qcow2") == SHA512
    assert cloudimage.digest_from_list(f"{SHA256}\n", "sha512", "alpine.qcow2") is None


def test_shipped_cloud_recipes_are_valid_and_selectable():
    for name in ("alpine", "bionic"):
        recipe = vmimage.recipe_for(DEFAULTS, name)
        assert cloudimage.is_cloud(recipe)
        cloudimage.check_recipe(name, recipe)
    assert vmimage.recipe_for(DEFAULTS, "alpine")["user"] == "root"
    assert vmimage.recipe_for(DEFAULTS, "bionic")["user"] == "vagrant"
    # The default VMs stay on the mmdebstrap recipes.
    assert DEFAULTS["vms"] == {"con0": "chroot", "docker0": "docker"}
    assert not cloudimage.is_cloud(vmimage.recipe_for(DEFAULTS, "chroot"))


@pytest.mark.parametrize("change, wording", [
    ({"url": "ftp://host/x.img"}, "url must be"),
    ({"format": "vmdk"}, "format must be"),
    ({"checksum": "", "checksum_url": ""}, "has no checksum"),
    ({"checksum": "sha1:abc"}, "bad checksum"),
    ({"user": "root; reboot"}, "bad login user"),
])
def test_bad_cloud_recipes_are_usage_errors(change, wording):
    recipe = {"url": "https://example.org/x.img", "checksum": f"sha256:{SHA256}", "format": "qcow2", "user": "root", **change}
    with pytest.raises(UsageError, match=wording):
        cloudimage.check_recipe("x", recipe)


def test_cache_key_covers_url_and_checksum(tmp_path):
    settings = {"cache_dir": str(tmp_path)}
    one = cloudimage.download_dir(settings, "http://a/x.img", f"sha256:{SHA256}")
    assert one.parent == tmp_path / "images" and one.name.startswith("cloud-")
    assert one != cloudimage.download_dir(settings, "http://a/y.img", f"sha256:{SHA256}")
    assert one != cloudimage.download_dir(settings, "http://a/x.img", f"sha256:{'c' * 64}")


def _seed(tmp_path, recipe):
    key = tmp_path / "ssh_host_ed25519_key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nabc: def\n'\"#{{ x }}\n-----END OPENSSH PRIVATE KEY-----\n")
    key.with_name(key.name + ".pub").write_text("ssh-ed25519 AAAAHOST root@vm\n")
    values = cloudimage.seed_values("con0", recipe, "ssh-ed25519 AAAALOGIN labkit-con0\n", key)
    files = cloudimage.render_seed(values)
    return key, {name: yaml.safe_load(text) for name, text in files.items()}, files


def test_seed_for_root_pins_the_host_key_and_authorizes_root(tmp_path):
    key, seed, files = _seed(tmp_path, {"user": "root"})
    user_data, meta_data = seed["user-data"], seed["meta-data"]
    assert files["user-data"].startswith("#cloud-config\n")
    assert user_data["ssh_keys"] == {"ed25519_private": key.read_text(), "ed25519_public": "ssh-ed25519 AAAAHOST root@vm"}
    assert user_data["ssh_deletekeys"] is True and user_data["ssh_genkeytypes"] == ["ed25519"]
    assert user_data["disable_root"] is False and "users" not in user_data
    assert user_data["ssh_authorized_keys"] == ["ssh-ed25519 AAAALOGIN labkit-con0"]
    assert user_data["hostname"] == meta_data["local-hostname"] == "con0"
    assert meta_data["instance-id"].startswith("labkit-con0-")


def test_seed_for_a_sudo_user_creates_it_with_the_key(tmp_path):
    _, seed, _ = _seed(tmp_path, {"user": "vagrant", "sudo": True, "groups": ["sudo", "docker"]})
    (user,) = seed["user-data"]["users"]
    assert user == {"name": "vagrant", "lock_passwd": True, "groups": "sudo,docker", "sudo": "ALL=(ALL) NOPASSWD:ALL",
                    "ssh_authorized_keys": ["ssh-ed25519 AAAALOGIN labkit-con0"]}
    assert "disable_root" not in seed["user-data"]


def test_seed_is_a_cidata_iso_readable_only_by_its_owner(tmp_path):
    files = {"user-data": "#cloud-config\nhostname: \"x\"\n", "meta-data": "instance-id: \"i\"\n"}
    seed = tmp_path / "seed.iso"
    cloudimage.write_seed(seed, files)
    data = seed.read_bytes()
    assert data[0x8001:0x8006] == b"CD001" and data[0x8028:0x8030] == b"cidata  "
    assert oct(seed.stat().st_mode & 0o777) == "0o600"
    assert list(tmp_path.iterdir()) == [seed]


def test_cloud_vms_boot_without_kernel_from_a_nocloud_seed(tmp_path):
    argv = qemu_argv(Launch("con0", tmp_path, tmp_path / "img", 2222, 1024, 2, "tcg", cloud=True))
    assert "-kernel" not in argv and "-append" not in argv
    assert f"file={tmp_path / 'seed.iso'},format=raw,if=virtio,readonly=on" in argv
    assert f"file={tmp_path / 'seed.img'},format=raw,if=virtio,readonly=on" in qemu_argv(
        Launch("con0", tmp_path, tmp_path / "img", 2222, 1024, 2, "tcg"))


def _cached(images: Path, name: str, meta: dict, size: int = 4096) -> Path:
    path = images / name
    path.mkdir(parents=True)
    (path / "image.json").write_text(json.dumps({"id": name, **meta}))
    (path / "image.qcow2").write_bytes(b"x" * size)
    return path


def test_prune_keeps_current_recipes_and_vm_bases_and_removes_the_rest(tmp_path):
    settings = {**DEFAULTS, "cache_dir": str(tmp_path / "cache"), "state_dir": str(tmp_path / "state"),
                "images": {**DEFAULTS["images"], "pinned": {"url": "http://h/p.img", "checksum": f"sha256:{SHA256}",
                                                            "format": "qcow2", "user": "root"}}}
    images = tmp_path / "cache" / "images"
    current_build = vmimage.image_dir(settings, "chroot")
    _cached(images, current_build.name, {"image": "chroot"})
    old_build = _cached(images, "chroot-000000000000", {"image": "chroot"})
    vm_base = _cached(images, "docker-111111111111", {"image": "docker"})
    pinned = cloudimage.download_dir(settings, "http://h/p.img", f"sha256:{SHA256}")
    _cached(images, pinned.name, {"source": "cloud", "url": "http://h/p.img", "format": "qcow2"})
    # Two downloads of an unpinned recipe's URL: the newest counts as current, the older goes.
    url = DEFAULTS["images"]["bionic"]["url"]
    older = _cached(images, "cloud-aaaaaaaaaaaa", {"source": "cloud", "url": url, "format": "qcow2", "downloaded": "2026-01-01"})
    newer = _cached(images, "cloud-bbbbbbbbbbbb", {"source": "cloud", "url": url, "format": "qcow2", "downloaded": "2026-02-01"})
    stale = images / ".download-x-999999999-abc"  # no such process
    stale.mkdir()
    (tmp_path / "state" / "vms" / "docker0").mkdir(parents=True)
    (tmp_path / "state" / "vms" / "docker0" / "vm.json").write_text(json.dumps({"image_dir": str(vm_base)}))

    listed = {entry.path.name: entry for entry in imagecache.entries(settings, tmp_path / "state")}
    assert listed["docker-111111111111"].used_by == ["docker0"] and listed[pinned.name].current
    assert listed[newer.name].name == "bionic-server-cloudimg-amd64.img" and listed[newer.name].kind == "cloud"
    assert listed[older.name].size >= 4096

    would = imagecache.prune(settings, tmp_path / "state", dry_run=True)
    assert sorted(entry.path for entry in would) == sorted([old_build, older, stale])
    assert old_build.exists() and older.exists()
    removed = imagecache.prune(settings, tmp_path / "state")
    assert sorted(entry.path for entry in removed) == sorted([old_build, older, stale])
    assert sorted(path.name for path in images.iterdir()) == sorted([current_build.name, vm_base.name, pinned.name, newer.name])
    assert imagecache.prune(settings, tmp_path / "state") == []


def test_a_running_build_is_not_pruned(tmp_path):
    images = tmp_path / "images"
    running = images / f".build-chroot-{os.getpid()}-abc"
    running.mkdir(parents=True)
    assert imagecache.prune({**DEFAULTS, "cache_dir": str(tmp_path)}, tmp_path / "state") == []
    assert running.exists()


def test_sizes_read_as_people_write_them():
    assert [imagecache.human_size(n) for n in (12, 4096, 340 * 2**20, 3 * 2**30 // 2)] == \
        ["12 B", "4.0 KiB", "340.0 MiB", "1.5 GiB"]


def _file_recipe(tmp_path, size=3 * cloudimage.CHUNK + 5):
    """A small 'image' on this machine, reached through a file:// URL (urllib's real download path)."""
    image = tmp_path / "www" / "tiny.qcow2"
    image.parent.mkdir()
    image.write_bytes(os.urandom(size))
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    return image, digest, {"url": image.as_uri(), "checksum": f"sha256:{digest}", "format": "qcow2", "user": "root"}


def test_a_file_url_is_downloaded_verified_and_cached_once(tmp_path):
    image, digest, recipe = _file_recipe(tmp_path)
    settings = {**DEFAULTS, "cache_dir": str(tmp_path / "cache"), "images": {"tiny": recipe}}
    messages = []
    download = cloudimage.fetch(settings, "tiny", messages.append)
    assert download.image.read_bytes() == image.read_bytes() and download.meta["checksum"] == f"sha256:{digest}"
    assert messages[0] == "Downloading tiny: 1.0 MiB of 3.0 MiB (33%)"
    assert messages[-1].startswith("Downloaded tiny: 3.0 MiB in ")
    image.unlink()  # a second fetch must not need the source
    assert cloudimage.fetch(settings, "tiny", messages.append).path == download.path


def test_a_checksum_mismatch_names_both_digests_and_caches_nothing(tmp_path):
    image, digest, recipe = _file_recipe(tmp_path)
    settings = {**DEFAULTS, "cache_dir": str(tmp_path / "cache"), "images": {"tiny": {**recipe, "checksum": f"sha256:{SHA256}"}}}
    with pytest.raises(TargetError) as raised:
        cloudimage.fetch(settings, "tiny", lambda m: None)
    assert raised.value.message == (f"Checksum mismatch for {image.as_uri()}: expected sha256:{SHA256}, "
                                    f"got sha256:{digest}; nothing was cached.")
    assert list((tmp_path / "cache" / "images").iterdir()) == []


def test_offline_an_unpinned_recipe_uses_its_newest_cached_download(tmp_path):
    image, digest, recipe = _file_recipe(tmp_path, size=1000)
    sums = tmp_path / "www" / "SHA256SUMS"
    sums.write_text(f"{digest} *tiny.qcow2\n")
    unpinned = {**recipe, "checksum": "", "checksum_url": sums.as_uri(), "checksum_type": "sha256"}
    settings = {**DEFAULTS, "cache_dir": str(tmp_path / "cache"), "images": {"tiny": unpinned}}
    first = cloudimage.fetch(settings, "tiny", lambda m: None)
    assert first.meta["checksum"] == f"sha256:{digest}"
    sums.unlink()
    messages = []
    assert cloudimage.fetch(settings, "tiny", messages.append).path == first.path
    assert messages[-1].startswith("Published checksum of tiny unreachable: using the cached download of ")
    with pytest.raises(TargetError, match="Cannot download"):
        cloudimage.fetch({**settings, "cache_dir": str(tmp_path / "empty")}, "tiny", lambda m: None)
