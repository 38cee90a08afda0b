"""Small Docker images built without Docker, as `docker save` archives, for tests without Docker Hub.

The images are named for what they are (labkit-test/...), and the tests map the lab's image names to
them through the toolkit's configuration. Their filesystem: Debian's static busybox with its applet
links, plus dash as /bin/sh and GNU rm (with their libraries), so that `rm -rf --no-preserve-root /`
typed into `sh` means what it says (busybox's sh would run its own rm, which lacks that option).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

BASE = "labkit-test/base:offline"
HELLO = "labkit-test/hello:offline"
HELLO_TEXT = "Hello from Docker! (labkit's offline test image, not Docker's hello-world)"
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _rootfs_layer() -> bytes:
    """An uncompressed layer tar: busybox and its applets in /bin, GNU rm in /usr/bin with its libraries."""
    files = {"bin/busybox": Path("/bin/busybox"), "usr/bin/rm": Path(shutil.which("rm") or "/usr/bin/rm"),
             "bin/sh": Path(shutil.which("dash") or "/bin/dash")}
    libraries = subprocess.run(["ldd", str(files["usr/bin/rm"]), str(files["bin/sh"])],
                               capture_output=True, text=True, check=True).stdout
    for word in libraries.split():
        if word.startswith("/") and Path(word).exists():
            files[word.lstrip("/")] = Path(word).resolve()
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        directories = {"bin", "tmp", "usr", "usr/bin", "usr/local", "usr/local/bin", "etc", "root"}
        directories |= {str(parent) for name in files for parent in Path(name).parents if str(parent) != "."}
        for directory in sorted(directories):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            layer.addfile(info)
        for name, source in sorted(files.items()):
            data = source.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            layer.addfile(info, io.BytesIO(data))
        for applet in applets:
            if applet not in ("busybox", "rm", "sh"):
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                layer.addfile(info)
        info = tarfile.TarInfo("bin/rm")
        info.type, info.linkname = tarfile.SYMTYPE, "/usr/bin/rm"
        layer.addfile(info)
    return buffer.getvalue()


def write_archive(path: Path) -> Path:
    """One `docker save` archive holding both test images (one shared layer, two configurations)."""
    layer = _rootfs_layer()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    manifest = []
    members: dict[str, bytes] = {"layer/layer.tar": layer}
    for tag, command in ((BASE, ["sh"]), (HELLO, ["echo", HELLO_TEXT])):
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": [PATH], "Cmd": command},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "labkit tests: tests/docker_images.py"}],
        }, sort_keys=True).encode()
        name = hashlib.sha256(config).hexdigest() + ".json"
        members[name] = config
        manifest.append({"Config": name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]})
    members["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


# A Dockerfile for CI: the workshop's instructions cannot install a JDK and Maven inside an emulated VM
# in reasonable time, so this one installs nothing and puts a small stand-in `mvn` script in the image.
MVN_STANDIN = ("RUN mkdir -p /usr/local/bin && printf '#!/bin/sh\\ncase \"$1\" in --version) "
               "echo \"Apache Maven (offline stand-in from labkit tests)\";; *) echo \"[ERROR] No goals have been "
               "specified for this build.\"; exit 1;; esac\\n' > /usr/local/bin/mvn && chmod 755 /usr/local/bin/mvn")


def offline_config(archive: Path) -> dict:
    """labkit configuration (the `docker` section) that supplies every image from `archive`."""
    return {
        "install_method": "package",
        "preload": [str(archive)],
        "images": {"hello": HELLO, "base": BASE},
        "expect": {"hello": "Hello from Docker!", "mvn": "Apache Maven"},
        "dockerfile": {"apt_update": False, "packages": [], "extra_instructions": [MVN_STANDIN]},
    }
