"""Distribution cloud images as an image source: download, verify, cache, and a NoCloud seed per VM.

A *cloud recipe* (in the `vm.images` setting, beside the mmdebstrap recipes of `vmimage`) names an
image that a distribution publishes instead of packages to install:

| key             | meaning                                                                          |
|-----------------|----------------------------------------------------------------------------------|
| `url`           | the image (`https://`, `http://` or `file://`); its presence makes a cloud recipe |
| `checksum`      | its published digest, `sha256:HEX` or `sha512:HEX` (pinned in the recipe), or    |
| `checksum_url`  | the distribution's checksum file (`SHA256SUMS` lines or a lone `.sha512` digest) |
| `checksum_type` | `sha256` or `sha512`: the digest in `checksum_url`                               |
| `format`        | `qcow2` or `raw`                                                                 |
| `user`          | the login user (`root`, or a user cloud-init creates)                            |
| `sudo`, `groups`| that user's passwordless sudo and supplementary groups                           |

The download is cached once per URL and digest in `<cache_dir>/images/cloud-<hash>/` (`image.<format>`
and `image.json`), written to a temporary directory first and renamed into place only after its
digest matched, so a failed or interrupted download leaves nothing behind. Each VM's disk is a
copy-on-write qcow2 overlay of it; the image boots with its own bootloader through QEMU's firmware.

Keys, the login user and the VM's SSH host key reach the guest through a cloud-init NoCloud seed
(https://cloudinit.readthedocs.io/en/latest/reference/datasources/nocloud.html): an ISO 9660 volume
labelled `cidata` holding `user-data` and `meta-data`, written by genisoimage without root. The
host key goes into cloud-init's `ssh_keys`, so the host pins it before the first connection.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labs.errors import TargetError, UsageError
from labs.providers import vmimage

ALGORITHMS = {"sha256": 64, "sha512": 128}
FORMATS = ("qcow2", "raw")
PROGRESS_EVERY = 1.0
CHUNK = 1024 * 1024
TIMEOUT = 60

# Untested here: these machines cannot reach Alpine's or Ubuntu's servers (see docs/providers.md).
RECIPES: dict[str, dict] = {
    # Alpine's official cloud-init image for QEMU ("nocloud", BIOS boot); a .sha512 file beside it.
    "alpine": {
        "url": "https://dl-cdn.alpinelinux.org/alpine/v3.22/releases/cloud/nocloud_alpine-3.22.4-x86_64-bios-cloudinit-r0.qcow2",
        "checksum_url": "https://dl-cdn.alpinelinux.org/alpine/v3.22/releases/cloud/nocloud_alpine-3.22.4-x86_64-bios-cloudinit-r0.qcow2.sha512",
        "checksum_type": "sha512",
        "format": "qcow2",
        "user": "root",
        "sudo": False,
        "groups": [],
        "arches": {"aarch64": {
            "url": "https://dl-cdn.alpinelinux.org/alpine/v3.22/releases/cloud/nocloud_alpine-3.22.4-aarch64-uefi-cloudinit-r0.qcow2",
            "checksum_url": "https://dl-cdn.alpinelinux.org/alpine/v3.22/releases/cloud/nocloud_alpine-3.22.4-aarch64-uefi-cloudinit-r0.qcow2.sha512",
        }},
    },
    # The Ubuntu 18.04 cloud image that bakerx pulls (its .img is a qcow2), with Ubuntu's SHA256SUMS.
    "bionic": {
        "url": "https://cloud-images.ubuntu.com/bionic/current/bionic-server-cloudimg-amd64.img",
        "checksum_url": "https://cloud-images.ubuntu.com/bionic/current/SHA256SUMS",
        "checksum_type": "sha256",
        "format": "qcow2",
        "user": "vagrant",
        "sudo": True,
        "groups": ["sudo"],
        "arches": {"aarch64": {
            "url": "https://cloud-images.ubuntu.com/bionic/current/bionic-server-cloudimg-arm64.img",
            "checksum_url": "https://cloud-images.ubuntu.com/bionic/current/SHA256SUMS",
        }},
    },
}


def is_cloud(recipe: dict) -> bool:
    """Whether a recipe names a cloud image (it has a `url`) rather than an mmdebstrap build."""
    return bool(recipe.get("url"))


def check_recipe(name: str, recipe: dict) -> None:
    """UsageError naming the first bad key of a cloud recipe."""
    hint = f"Fix the recipe in the setting vm.images.{name} (see docs/providers.md)."
    if urllib.parse.urlsplit(str(recipe["url"])).scheme not in ("http", "https", "file"):
        raise UsageError(f"Image recipe '{name}': url must be http, https or file.", hint)
    if recipe.get("format") not in FORMATS:
        raise UsageError(f"Image recipe '{name}': format must be qcow2 or raw, not {recipe.get('format')!r}.", hint)
    if recipe.get("checksum"):
        parse_checksum(name, recipe["checksum"])
    elif not recipe.get("checksum_url") or recipe.get("checksum_type") not in ALGORITHMS:
        raise UsageError(f"Image recipe '{name}' has no checksum.",
                         "Give checksum: sha256:HEX (or sha512:HEX), or checksum_url with checksum_type sha256|sha512.")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", str(recipe.get("user", ""))):
        raise UsageError(f"Image recipe '{name}': bad login user {recipe.get('user')!r}.", hint)


def parse_checksum(name: str, text: str) -> tuple[str, str]:
    """(`sha256`|`sha512`, lower-case hex) from `ALGO:HEX`; UsageError otherwise."""
    algorithm, _, digest = str(text).partition(":")
    digest = digest.strip().lower()
    if ALGORITHMS.get(algorithm) != len(digest) or not re.fullmatch(r"[0-9a-f]+", digest):
        raise UsageError(f"Image recipe '{name}': bad checksum {text!r}.", "Write it as sha256:<64 hex digits> or sha512:<128 hex digits>.")
    return algorithm, digest


def digest_from_list(text: str, algorithm: str, filename: str) -> str | None:
    """The digest for `filename` in a published checksum file: `SHA256SUMS` lines (`HEX *name` or
    `HEX  name`), BSD lines (`SHA512 (name) = HEX`), or a file holding one digest alone."""
    size = ALGORITHMS[algorithm]
    lone = []
    for line in text.splitlines():
        bsd = re.fullmatch(r"\s*SHA\d+\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)\s*", line)
        words = [bsd.group(2), bsd.group(1)] if bsd else line.split()
        if not words or len(words[0]) != size or not re.fullmatch(r"[0-9a-fA-F]+", words[0]):
            continue
        if len(words) == 1:
            lone.append(words[0].lower())
        elif words[1].lstrip("*").rsplit("/", 1)[-1] == filename:
            return words[0].lower()
    return lone[0] if len(lone) == 1 else None


@dataclass
class Download:
    """A cached cloud image: its directory, the image file and what `image.json` says of it."""

    path: Path
    meta: dict

    @property
    def image(self) -> Path:
        return self.path / f"image.{self.meta['format']}"


def download_dir(settings: dict, url: str, checksum: str) -> Path:
    """Cache directory of the image at `url` with digest `checksum` (`ALGO:HEX`)."""
    key = hashlib.sha256(f"{url}\0{checksum}".encode()).hexdigest()[:12]
    return vmimage.cache_dir(settings) / "images" / f"cloud-{key}"


def cached_downloads(settings: dict) -> list[Download]:
    """Every complete cloud image in the cache."""
    found = []
    for meta_file in sorted((vmimage.cache_dir(settings) / "images").glob("cloud-*/image.json")):
        try:
            found.append(Download(meta_file.parent, json.loads(meta_file.read_text())))
        except (OSError, ValueError):
            continue
    return found


def _open(url: str):
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "labkit"}), timeout=TIMEOUT)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise TargetError(f"Cannot download {url}: {reason}.",
                          "Check the network, or point the recipe's url at a copy (file:// works).") from None


def resolve_checksum(name: str, recipe: dict, progress: Callable[[str], None]) -> str:
    """`ALGO:HEX` of the recipe's image: pinned, or read from the distribution's checksum file."""
    if recipe.get("checksum"):
        return ":".join(parse_checksum(name, recipe["checksum"]))
    algorithm = recipe["checksum_type"]
    progress(f"Reading the published checksum of {name}: {recipe['checksum_url']}")
    with _open(recipe["checksum_url"]) as response:
        text = response.read(4 * CHUNK).decode("utf-8", "replace")
    filename = urllib.parse.urlsplit(recipe["url"]).path.rsplit("/", 1)[-1]
    digest = digest_from_list(text, algorithm, filename)
    if not digest:
        raise TargetError(f"No {algorithm} digest for {filename} in {recipe['checksum_url']}.",
                          f"Pin it instead: set vm.images.{name}.checksum to {algorithm}:HEX.")
    return f"{algorithm}:{digest}"


def _size(count: float) -> str:
    return f"{count / CHUNK:.1f} MiB"


def fetch(settings: dict, name: str, progress: Callable[[str], None], arch: str = "x86_64") -> Download:
    """The cached image of cloud recipe `name` for guest `arch`, downloaded and verified first when missing.

    Raises TargetError when it cannot be downloaded or its digest differs from the published one
    (then nothing is cached), UsageError for a malformed recipe or one without an `arch` image."""
    recipe = vmimage.recipe_for(settings, name, arch)
    check_recipe(name, recipe)
    try:
        checksum = resolve_checksum(name, recipe, progress)
    except TargetError:
        if recipe.get("checksum"):
            raise
        # Offline with an unpinned recipe: the newest cached download of the same URL will do.
        same = [item for item in cached_downloads(settings) if item.meta.get("url") == recipe["url"]]
        if not same:
            raise
        chosen = max(same, key=lambda item: item.meta.get("downloaded", ""))
        progress(f"Published checksum of {name} unreachable: using the cached download of {chosen.meta['downloaded']}")
        return chosen
    final = download_dir(settings, recipe["url"], checksum)
    if (final / "image.json").is_file():
        return Download(final, json.loads((final / "image.json").read_text()))
    images = final.parent
    try:
        images.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".download-{name}-{os.getpid()}-", dir=images))
    except OSError as error:
        raise TargetError(f"Cache directory {images} is not writable ({error.strerror}).",
                          "Set vm.cache_dir to a writable directory.") from None
    try:
        meta = _download(recipe, name, checksum, work, progress)
        (work / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            work.rename(final)
        except OSError:
            if not (final / "image.json").is_file():
                raise
            shutil.rmtree(work, ignore_errors=True)  # another process finished the same download first
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Download(final, json.loads((final / "image.json").read_text()))


def _download(recipe: dict, name: str, checksum: str, work: Path, progress: Callable[[str], None]) -> dict:
    """Stream the image into `work`, hashing it on the way; returns its image.json."""
    algorithm, expected = checksum.split(":")
    digest = hashlib.new(algorithm)
    started = time.monotonic()
    target = work / f"image.{recipe['format']}"
    with _open(recipe["url"]) as response, open(target, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done, next_note = 0, 0.0
        while block := response.read(CHUNK):
            out.write(block)
            digest.update(block)
            done += len(block)
            if (now := time.monotonic()) >= next_note:
                share = f" of {_size(total)} ({100 * done // total}%)" if total else ""
                progress(f"Downloading {name}: {_size(done)}{share}")
                next_note = now + PROGRESS_EVERY
    progress(f"Downloaded {name}: {_size(done)} in {time.monotonic() - started:.0f} s; verifying")
    if digest.hexdigest() != expected:
        raise TargetError(f"Checksum mismatch for {recipe['url']}: expected {algorithm}:{expected}, got {algorithm}:{digest.hexdigest()}; nothing was cached.",
                          "Check the recipe's checksum, or retry if the download was damaged.")
    return {"id": uuid.uuid4().hex, "source": "cloud", "recipe": name, "url": recipe["url"], "checksum": checksum,
            "format": recipe["format"], "size": done, "downloaded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def create_overlay(download: Download, disk: Path, disk_size: int) -> None:
    """A qcow2 overlay on the cached image, grown to `disk_size` bytes when the image is smaller
    (cloud-init's growpart then grows the root partition)."""
    fmt = download.meta["format"]
    info = vmimage.run_tool(["qemu-img", "info", "--output=json", "-f", fmt, str(download.image)], "Reading the cloud image")
    size = max(int(json.loads(info)["virtual-size"]), disk_size)
    vmimage.run_tool(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(download.image), "-F", fmt, str(disk), str(size)],
          "Creating the overlay disk")


def seed_values(vm: str, recipe: dict, authorized_key: str, host_key: Path) -> dict:
    """What the user-data and meta-data templates need."""
    return {
        "hostname": vm,
        "instance_id": f"labkit-{vm}-{uuid.uuid4().hex[:8]}",
        "user": recipe["user"],
        "sudo": bool(recipe.get("sudo")),
        "groups": list(recipe.get("groups") or []),
        "authorized_key": authorized_key.strip(),
        "host_key_private": host_key.read_text(),
        "host_key_public": host_key.with_name(host_key.name + ".pub").read_text().strip(),
    }


def render_seed(values: dict) -> dict[str, str]:
    """user-data and meta-data from templates/cloud-init-*.j2 (every value quoted by the `yaml` filter)."""
    # Imported here: the QEMU provider, which imports this module, must load with the standard library
    # alone (a normal user's vm.up may run under the system Python; see test_qemu_provider.py).
    from labs.templates import render
    return {name: render(f"cloud-init-{name}.j2", values, "vm") for name in ("user-data", "meta-data")}


def write_seed(path: Path, files: dict[str, str]) -> None:
    """The NoCloud seed: an ISO 9660 volume `cidata` (Joliet and Rock Ridge names), mode 600 as it
    carries the VM's private host key."""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        vmimage.run_tool(["genisoimage", "-quiet", "-output", str(path), "-volid", "cidata", "-joliet", "-rock",
               *(str(Path(tmp) / name) for name in files)], "Writing the NoCloud seed")
    path.chmod(0o600)
