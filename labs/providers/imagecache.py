"""What the image cache holds, and pruning what nothing uses any more (`inv vm.status`, `inv vm.prune`).

The cache (`<cache_dir>/images/`) holds mmdebstrap builds (`<recipe>-<hash>/`, see `vmimage`) and
cloud image downloads (`cloud-<hash>/`, see `cloudimage`). A changed recipe builds or downloads into
a new directory and leaves the old one behind; pruning removes every entry that is

- not what a current recipe (the `vm.images` setting, built-in ones included) builds or downloads, and
- not the base of any existing VM's overlay disk (`vm.json` in the state directory), running or not,

plus leftovers of builds and downloads whose process is gone. For a cloud recipe that reads its
digest from a published checksum file, the newest download of its URL counts as current, so that
pruning works offline.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from labs.errors import UsageError
from labs.providers import cloudimage, vmimage


@dataclass
class CacheEntry:
    """One directory of the image cache: `kind` is `mmdebstrap`, `cloud` or `partial` (an abandoned
    build or download); `size` in bytes on disk; `used_by` the VMs based on it."""

    path: Path
    kind: str
    name: str
    size: int
    current: bool = False
    used_by: list[str] = field(default_factory=list)

    @property
    def keep(self) -> bool:
        return self.current or bool(self.used_by)


def disk_usage(path: Path) -> int:
    """Bytes allocated on disk under `path` (sparse images count what they occupy)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def _current_dirs(settings: dict) -> set[Path]:
    """Cache directories that the current recipes build or download into."""
    current = set()
    downloads = cloudimage.cached_downloads(settings)
    for name, arch in itertools.product({**vmimage.RECIPES, **(settings.get("images") or {})}, vmimage.ARCHES):
        try:
            recipe = vmimage.recipe_for(settings, name, arch)
        except UsageError:  # a cloud recipe without an image for this arch
            continue
        if not cloudimage.is_cloud(recipe):
            current.add(vmimage.image_dir(settings, name, arch))
        elif recipe.get("checksum"):
            checksum = ":".join(cloudimage.parse_checksum(name, recipe["checksum"]))
            current.add(cloudimage.download_dir(settings, recipe["url"], checksum))
        else:
            same = [item for item in downloads if item.meta.get("url") == recipe["url"]]
            if same:
                current.add(max(same, key=lambda item: item.meta.get("downloaded", "")).path)
    return current


def _vm_bases(state_dir: Path) -> dict[Path, list[str]]:
    """Image directory -> names of the VMs whose overlay disk is based on it."""
    bases: dict[Path, list[str]] = {}
    for meta_file in sorted((state_dir / "vms").glob("*/vm.json")):
        try:
            image_dir = json.loads(meta_file.read_text())["image_dir"]
        except (OSError, ValueError, KeyError):
            continue
        bases.setdefault(Path(image_dir), []).append(meta_file.parent.name)
    return bases


def _owner_alive(path: Path) -> bool:
    """Whether the process that named a `.build-NAME-PID-*` or `.download-NAME-PID-*` directory runs."""
    pid = path.name.rsplit("-", 2)[-2]
    return not pid.isdigit() or vmimage.pid_exists(int(pid))


def entries(settings: dict, state_dir: Path) -> list[CacheEntry]:
    """Every directory of the image cache, with its size and what keeps it."""
    images = vmimage.cache_dir(settings) / "images"
    if not images.is_dir():
        return []
    current, bases = _current_dirs(settings), _vm_bases(state_dir)
    found = []
    for path in sorted(images.iterdir()):
        if not path.is_dir():
            continue
        if path.name.startswith("."):
            if not _owner_alive(path):
                found.append(CacheEntry(path, "partial", path.name, disk_usage(path)))
            continue
        try:
            meta = json.loads((path / "image.json").read_text())
        except (OSError, ValueError):
            continue  # not ours, or being renamed into place
        cloud = meta.get("source") == "cloud"
        name = meta.get("url", "").rsplit("/", 1)[-1] if cloud else meta.get("image", path.name)
        found.append(CacheEntry(path, "cloud" if cloud else "mmdebstrap", name, disk_usage(path),
                                current=path in current, used_by=bases.get(path, [])))
    return found


def prune(settings: dict, state_dir: Path, dry_run: bool = False) -> list[CacheEntry]:
    """Remove (unless `dry_run`) the cache entries nothing keeps; returns them."""
    unused = [entry for entry in entries(settings, state_dir) if not entry.keep]
    if not dry_run:
        for entry in unused:
            shutil.rmtree(entry.path, ignore_errors=True)
    return unused


def human_size(size: int) -> str:
    """`12 B`, `4.0 KiB`, `340.0 MiB`, `1.2 GiB`."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
