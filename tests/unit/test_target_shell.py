"""Every script labkit sends to a target is POSIX sh, as ShellCheck reads it (`--shell=sh`).

The scripts are collected the way they are sent: checks, clean-up and reset scripts, the runner's
batch script and preamble, the SSH stop script, the rendered container.sh, and the scripts the steps'
actions run, which a recording stand-in for the SSH connection collects here (only to read their
text: how they behave on BusyBox ash, dash and bash is tests/integration/test_target_shells.py's job).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from labs import chroot, docker
from labs.cli import DEFAULTS
from labs.providers.ssh import CommandResult, stop_script
from labs.providers.target import SSHTarget
from labs.reporting import SilentReporter
from labs.runner import StepContext, batch_script, preamble
from labs.templates import render

VARIABLES = {"WORKDIR": "/root", "LOGIN_USER": "root", "ROOTFS": "/root/rootfs", "SCRIPT": "/root/container.sh"}


class RecordingRemote:
    """Collects the scripts an action would run; every command "succeeds" and prints `stdout`."""

    def __init__(self, stdout: str = ""):
        self.target = SSHTarget("lint", "127.0.0.1", 22, "root", None, Path("/dev/null"), "ssh")
        self.scripts: list[str] = []
        self.stdout = stdout

    def run(self, script: str, **_) -> CommandResult:
        self.scripts.append(script)
        return CommandResult(0, self.stdout, "", 0.0)

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        pass

    def reconnect(self) -> None:
        pass


def settings(lab: str, tmp_path: Path, **overrides) -> dict:
    values = copy.deepcopy(DEFAULTS[lab])
    values["state_dir"] = str(tmp_path)
    values.update(overrides)
    return values


def action_scripts(lab, settings_: dict, stdout: str = "") -> list[str]:
    remote = RecordingRemote(stdout)
    for step in lab.steps:
        step.action(StepContext(remote, settings_, VARIABLES, SilentReporter(), step))
    return remote.scripts


def target_scripts(tmp_path: Path) -> dict[str, str]:
    """name -> script, for every kind of script labkit runs on a target."""
    scripts: dict[str, str] = {}
    for lab in (chroot.LAB, docker.LAB):
        checks = [check for step in lab.steps for check in step.checks]
        for check in checks:
            scripts[f"{lab.name} check {check.id}"] = check.script
        scripts[f"{lab.name} batch"] = preamble(VARIABLES) + batch_script(checks, "@@labkit-0123456789ab")
        scripts[f"{lab.name} cleanup"] = lab.cleanup
        scripts[f"{lab.name} reset"] = lab.reset
        for step in lab.steps:
            if step.shell:
                scripts[f"{lab.name} {step.id} demo shell"] = step.shell
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF")
    for source in ("url", "target", str(busybox)):
        recorded = action_scripts(chroot.LAB, settings("chroot", tmp_path, busybox={**DEFAULTS["chroot"]["busybox"], "source": source}),
                                  stdout="/bin/busybox\n")
        scripts.update({f"chroot action ({source}) {i}": script for i, script in enumerate(recorded)})
    scripts.update({f"docker action {i}": s for i, s in enumerate(action_scripts(docker.LAB, settings("docker", tmp_path)))})
    scripts["docker restart"] = docker.RESTART_DOCKER
    scripts["chroot find busybox"] = chroot.FIND_TARGET_BUSYBOX
    scripts["ssh stop"] = stop_script("0123456789abcdef")
    values = chroot.container_sh_values(DEFAULTS["chroot"], "/bin/sh")
    scripts["container.sh"] = render("container.sh.j2", values, "chroot.container_sh")
    return scripts


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    return target_scripts(tmp_path_factory.mktemp("lint"))


def test_the_collection_covers_every_kind_of_script(scripts):
    names = " ".join(scripts)
    for kind in ("check overlay.isolated", "check install.daemon", "batch", "reset", "cleanup", "ssh stop",
                 "container.sh", "chroot action (url)", "chroot action (target)", "docker action", "demo shell"):
        assert kind in names, kind
    assert any("cp /bin/busybox" in script for script in scripts.values())
    assert any("mv -f /tmp/labkit-upload-" in script for script in scripts.values())


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck is not installed (scripts/setup installs it)")
def test_every_target_script_is_posix_sh_for_shellcheck(scripts):
    problems = {}
    for name, script in scripts.items():
        # Warnings and errors: POSIX portability (SC3xxx) and real bugs. Infos (word splitting on
        # purpose, as in `kill $pids`) and style are not the question here.
        result = subprocess.run(["shellcheck", "--shell=sh", "--severity=warning", "--format=json", "-"],
                                input=script, capture_output=True, text=True)
        found = json.loads(result.stdout or "[]")
        if found:
            problems[name] = [f"SC{item['code']} line {item['line']}: {item['message']}" for item in found]
    assert problems == {}


def test_shellcheck_finds_the_kind_of_fault_it_is_here_for():
    """The lint itself: the faults this issue is about are ones shellcheck reports in sh mode."""
    for script in ('[[ -x "$f" ]] && echo yes', 'source ./vars', "echo $'a\\tb'", 'f() { local x=1; echo "$x"; }'):
        result = subprocess.run(["shellcheck", "--shell=sh", "--severity=warning", "-"], input=script,
                                capture_output=True, text=True)
        assert result.returncode != 0, script
