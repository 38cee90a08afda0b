"""shellcheck on every script labkit runs on a target, as it is sent, in one policy: POSIX sh
(`-s sh`: the target's shell may be BusyBox ash, dash or bash), every severity, two codes left out.

The scripts are collected the way they are sent: every lab's checks, probes, batch, clean-up, reset
and demo shells; the scripts the built-in labs' actions run, which a recording stand-in for the SSH
connection collects here (only to read their text: how they behave on BusyBox ash, dash and bash is
tests/integration/test_target_shells.py's job); the SSH stop script; the rendered container.sh; the
.sh files of the lab folders (with their library in front, as the loader composes them) and the
scripts their steps install; and the built-in images' own boot scripts.

Codes left out, for every script:
- SC2016: checks type lines into a container's shell on purpose in single quotes: they expand there.
- SC2317: a lab's library defines functions that a given script does not call.
Anything else meant (a list of pids split on purpose) says so with a `# shellcheck disable` line.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest

from labs import chroot, docker
from labs.cli import DEFAULTS, LABS
from labs.folder import LAB_FILE, read, render_variable
from labs.providers.ssh import CommandResult, stop_script
from labs.providers.target import SSHTarget
from labs.reporting import SilentReporter
from labs.runner import StepContext, batch_script, preamble
from labs.templates import render

EXCLUDED = "SC2016,SC2317"
ROOT = Path(__file__).resolve().parents[2]
FOLDERS = sorted({path.parent for path in (ROOT / "labs" / "folders").glob(f"*/{LAB_FILE}")} |
                 {path.parent for path in (ROOT / "tests" / "fixtures" / "labs").glob(f"*/{LAB_FILE}")})


def shellcheck(text: str) -> str:
    """shellcheck's findings on `text` as a sh script ("" when clean)."""
    result = subprocess.run(["shellcheck", "-s", "sh", "-e", EXCLUDED, "-f", "gcc", "-"],
                            input="#!/bin/sh\n" + text, capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr  # 2 and up: shellcheck itself failed
    return result.stdout


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
    for lab in LABS.values():
        checks = [check for step in lab.steps for check in step.checks]
        for check in checks:
            scripts[f"{lab.name} check {check.id}"] = check.script
            if check.probe:
                scripts[f"{lab.name} probe {check.probe.id}"] = check.probe.script
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
    for kind in ("check overlay.isolated", "probe", "check install.daemon", "namespaces check", "batch", "reset", "cleanup",
                 "ssh stop", "container.sh", "chroot action (url)", "chroot action (target)", "docker action", "demo shell"):
        assert kind in names, kind
    assert any("cp /bin/busybox" in script for script in scripts.values())
    assert any("mv -f /tmp/labkit-upload-" in script for script in scripts.values())


def test_every_script_sent_to_a_target_passes_shellcheck(scripts):
    problems = {name: findings for name, script in scripts.items() if (findings := shellcheck(script))}
    assert problems == {}


def test_the_policy_still_catches_what_it_is_here_for():
    """The exclusions hide no real finding: bashisms, and an unquoted variable split by accident."""
    for script, code in (('if [[ -d /tmp ]]; then echo yes; fi\n', "SC3010"), ("source ./vars\n", "SC3046"),
                         ("echo $'a\\tb'\n", "SC3003"), ('f() { local x=1; echo "$x"; }\n', "SC3043"),
                         ('x="a b"; ls $x\n', "SC2086")):
        assert code in shellcheck(script), script


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda path: path.name)
def test_lab_folder_scripts_pass_shellcheck(folder):
    data = read(folder)
    library = (folder / data["library"]).read_text() + "\n" if "library" in data else ""
    findings = {path.name: shellcheck(library + path.read_text())
                for path in sorted(folder.glob("*.sh"))}
    assert {name: text for name, text in findings.items() if text} == {}


def rendered_scripts() -> list:
    """Every .sh a folder lab's steps install, rendered as the step renders it."""
    scripts = []
    for folder in FOLDERS:
        data = read(folder)
        settings = {"vm": data.get("vm", "con0"), "workdir": "", "variables": data.get("variables", {})}
        variables = {name: render_variable(value, {"workdir": "/root"}) for name, value in settings["variables"].items()}
        for step in data["steps"]:
            for item in step.get("install", []):
                text = render(item["template"], {**item.get("values", {}), "settings": settings, "variables": variables},
                              data["name"], directory=str(folder))
                if text.startswith("#!/bin/sh"):
                    scripts.append(pytest.param(text, id=f"{folder.name}/{step['id']}/{item['template']}"))
    return scripts


@pytest.mark.parametrize("text", rendered_scripts())
def test_installed_scripts_pass_shellcheck(text):
    assert shellcheck(text.split("\n", 1)[1]) == ""


@pytest.mark.parametrize("name", ["rc", "initramfs-init"])
def test_the_built_in_images_boot_scripts_pass_shellcheck(name):
    """The guest's own boot scripts (BusyBox sh): /etc/rc and the x86-64 initramfs's /init."""
    assert shellcheck((ROOT / "scripts" / "guest" / name).read_text()) == ""
