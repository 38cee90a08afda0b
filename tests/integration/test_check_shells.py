"""The chroot lab's diagnosing checks, run on this machine under BusyBox ash, dash and bash: each names
its cause the same way in every shell (the VMs run them under one shell only). A rootfs is built in a
temporary directory from Debian's static busybox; the checks chroot into it, so this needs root."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from labs import chroot
from labs.model import Check, Step
from labs.runner import judge, preamble

SHELLS = {"ash": ["/bin/busybox", "ash"], "dash": ["dash"], "bash": ["bash", "--posix"]}
CHECKS = {check.id: (step, check) for step in chroot.LAB.steps for check in step.checks}

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("dash"),
                                reason="chroot needs root, and the test needs dash")  # CI runs as root


def run(check_id: str, workdir: Path, shell: list[str]):
    step, check = CHECKS[check_id]
    variables = {"WORKDIR": str(workdir), "LOGIN_USER": "root", **chroot.variables({"rootfs": "rootfs", "script": "container.sh"}, str(workdir))}
    done = subprocess.run([*shell, "-c", preamble(variables) + check.script], capture_output=True, text=True, timeout=60)
    return judge(check, step, done.returncode == 0, (done.stdout + done.stderr).splitlines(), 0.0)


@pytest.fixture
def workdir(tmp_path):
    rootfs = tmp_path / "rootfs"
    for sub in ("bin", "sbin", "usr/bin", "usr/sbin"):
        (rootfs / sub).mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    subprocess.run(["chroot", str(rootfs), "/bin/busybox", "--install", "-s"], check=True)
    script = tmp_path / "container.sh"
    script.write_text("#!/bin/sh\necho container\n")
    script.chmod(0o755)
    return tmp_path


def empty(w): (w / "rootfs/bin/busybox").write_bytes(b"")
def html(w): (w / "rootfs/bin/busybox").write_text("<!DOCTYPE html>\n<html><title>404</title></html>\n")
def dynamic(w): shutil.copy("/bin/ls", w / "rootfs/bin/busybox")
def other_cpu(w):
    path = w / "rootfs/bin/busybox"
    data = bytearray(path.read_bytes()); data[18] = 183; path.write_bytes(bytes(data))
def outside(w):
    for link in (w / "rootfs/bin").iterdir():
        if link.is_symlink():
            link.unlink(); link.symlink_to(w / "rootfs/bin/busybox")
def hard_links(w):
    for link in (w / "rootfs/bin").iterdir():
        if link.is_symlink():
            link.unlink(); os.link(w / "rootfs/bin/busybox", link)
def crlf(w): (w / "container.sh").write_bytes(b"#!/bin/sh\r\necho container\r\n")
def bom(w): (w / "container.sh").write_bytes(b"\xef\xbb\xbf#!/bin/sh\necho container\n")
def no_shebang(w): (w / "container.sh").write_text("\n#!/bin/sh\necho container\n")
def ash(w): (w / "container.sh").write_text("#!/bin/ash\necho container\n")


STATES = {
    "busybox-empty": (empty, "busybox.runs", "empty file"),
    "busybox-html": (html, "busybox.runs", "web page"),
    "busybox-dynamic": (dynamic, "busybox.runs", "dynamically linked"),
    "busybox-other-cpu": (other_cpu, "busybox.runs", "another CPU"),
    "symlinks-outside": (outside, "symlinks.installed", "outside the rootfs"),
    "symlinks-hard-links": (hard_links, "symlinks.installed", "hard links"),
    "script-crlf": (crlf, "container-script.interpreter", "Windows line endings"),
    "script-bom": (bom, "container-script.interpreter", "byte order mark"),
    "script-no-shebang": (no_shebang, "container-script.interpreter", "does not start with a #! line"),
}


@pytest.mark.parametrize("shell", list(SHELLS))
@pytest.mark.parametrize("state", list(STATES))
def test_a_cause_is_named_alike_in_every_shell(workdir, state, shell):
    make, check_id, words = STATES[state]
    assert run(check_id, workdir, SHELLS[shell]).status == "pass"
    make(workdir)
    result = run(check_id, workdir, SHELLS[shell])
    assert result.status == "fail" and words in result.message, result


@pytest.mark.parametrize("shell", list(SHELLS))
def test_ash_is_named_only_where_there_is_none(workdir, shell):
    ash(workdir)
    result = run("container-script.interpreter", workdir, SHELLS[shell])
    if Path("/bin/ash").exists():
        assert result.status == "pass"
    else:
        assert result.status == "fail" and "only Alpine" in result.message


@pytest.mark.parametrize("shell", list(SHELLS))
def test_every_check_script_of_both_labs_parses_in_every_shell(shell):
    from labs import docker
    for lab in (chroot.LAB, docker.LAB):
        for step in lab.steps:
            for check in step.checks:
                parsed = subprocess.run([*SHELLS[shell], "-n", "-c", check.script], capture_output=True, text=True)
                assert parsed.returncode == 0, (check.id, parsed.stderr)
