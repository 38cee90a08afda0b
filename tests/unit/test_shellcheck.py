"""shellcheck on every script labkit runs on a target: the .sh files of the lab folders (with their
library in front, as the loader composes them), the scripts their steps render from templates, and the shell strings of the Python labs (each check,
clean-up, reset and demo shell, and the runner's batch of a lab's checks).

Scripts run under `sh` on the target (busybox ash, dash or bash), so they are checked as `-s sh`.
Codes left out, for every script:
- SC2016: checks type lines into a container's shell on purpose in single quotes: they expand there.
- SC2317: a lab's library defines functions that a given script does not call.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from labs.cli import LABS
from labs.folder import LAB_FILE, read, render_variable
from labs.runner import batch_script, preamble
from labs.templates import render

EXCLUDED = "SC2016,SC2317"
ROOT = Path(__file__).resolve().parents[2]
FOLDERS = sorted({path.parent for path in (ROOT / "labs" / "folders").glob(f"*/{LAB_FILE}")} |
                 {path.parent for path in (ROOT / "tests" / "fixtures" / "labs").glob(f"*/{LAB_FILE}")})


def shellcheck(text: str, tmp_path: Path, name: str) -> str:
    path = tmp_path / (name.replace("/", "_") + ".sh")
    path.write_text("#!/bin/sh\n" + text)
    result = subprocess.run(["shellcheck", "-s", "sh", "-e", EXCLUDED, "-f", "gcc", str(path)],
                            capture_output=True, text=True)
    return result.stdout


def python_lab_scripts() -> list:
    scripts = []
    for lab in LABS.values():
        variables = {"WORKDIR": "/root", "LOGIN_USER": "root"}
        scripts.append((f"{lab.name}/checks", preamble(variables) + batch_script(
            [check for step in lab.steps for check in step.checks], "@@token")))
        for step in lab.steps:
            scripts += [(f"{lab.name}/{check.id}", check.script) for check in step.checks]
            if step.shell:
                scripts.append((f"{lab.name}/{step.id}.shell", step.shell))
        scripts += [(f"{lab.name}/{kind}", text) for kind, text in (("cleanup", lab.cleanup), ("reset", lab.reset)) if text]
    return [pytest.param(name, text, id=name) for name, text in scripts]


@pytest.mark.parametrize("name,text", python_lab_scripts())
def test_lab_shell_passes_shellcheck(name, text, tmp_path):
    assert shellcheck(text, tmp_path, name) == ""


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda path: path.name)
def test_lab_folder_scripts_pass_shellcheck(folder, tmp_path):
    data = read(folder)
    library = (folder / data["library"]).read_text() + "\n" if "library" in data else ""
    findings = {path.name: shellcheck(library + path.read_text(), tmp_path, path.stem)
                for path in sorted(folder.glob("*.sh"))}
    assert {name: text for name, text in findings.items() if text} == {}


def test_excluded_codes_still_catch_a_bashism(tmp_path):
    """The check fails on a script that is not POSIX sh: the exclusions do not hide real findings."""
    assert "SC3010" in shellcheck('if [[ -d /tmp ]]; then echo yes; fi\n', tmp_path, "bashism")


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
def test_installed_scripts_pass_shellcheck(text, tmp_path):
    assert shellcheck(text.split("\n", 1)[1], tmp_path, "installed") == ""


@pytest.mark.parametrize("name", ["rc", "initramfs-init"])
def test_the_built_in_images_boot_scripts_pass_shellcheck(name):
    """The guest's own boot scripts (BusyBox sh): /etc/rc and the x86-64 initramfs's /init."""
    result = subprocess.run(["shellcheck", "-s", "sh", "-e", EXCLUDED, "-f", "gcc", str(ROOT / "scripts" / "guest" / name)],
                            capture_output=True, text=True)
    assert result.stdout == ""
