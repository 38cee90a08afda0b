"""The lab folder format: lab.yaml validated against labs/lab.schema.json with one line per problem
naming the file and the field, compiled into the model of labs/model.py, and found through labs.paths."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from labs import folder, registry
from labs.errors import UsageError
from labs.model import Lab
from tests import cli

ROOT = Path(__file__).resolve().parents[2]
NAMESPACES = ROOT / "labs" / "folders" / "namespaces"


def write_lab(tmp_path: Path, data: dict, name: str = "broken") -> Path:
    lab = tmp_path / name
    lab.mkdir()
    (lab / "lab.yaml").write_text(yaml.safe_dump(data))
    (lab / "ok.sh").write_text("true\n")
    return lab


def valid() -> dict:
    return {"name": "tiny", "title": "A tiny lab", "steps": [
        {"id": "one", "title": "One", "explanation": "The first.", "solve": "ok.sh",
         "checks": [{"id": "one.done", "script": "ok.sh", "message": "Not done.", "hint": "Do it."}]},
        {"id": "two", "title": "Two", "explanation": "The second.", "solve": "true", "needs": ["one"],
         "checks": [{"id": "two.done", "script": "true", "message": "Not done.", "hint": "Do it."}]}]}


def broken(change) -> dict:
    data = valid()
    change(data)
    return data


CASES = {
    "missing hint": (lambda d: d["steps"][1]["checks"][0].pop("hint"), "steps[1].checks[0].hint: required"),
    "missing steps": (lambda d: d.pop("steps"), "steps: required"),
    "unknown field": (lambda d: d["steps"][0].update(solution="x"), "steps[0].solution: unknown field (not in the lab format)"),
    "bad step id": (lambda d: d["steps"][0].update(id="One Step"), "steps[0].id: 'One Step' does not match ^[a-z0-9][a-z0-9-]*$"),
    "points not a number": (lambda d: d["steps"][0].update(points="many"), "steps[0].points: 'many' is not of type 'integer'"),
    "no checks": (lambda d: d["steps"][0].update(checks=[]), "steps[0].checks: [] should be non-empty"),
    "missing script file": (lambda d: d["steps"][0].update(solve="missing.sh"), "steps[0].solve: no file missing.sh in {folder}"),
    "duplicate check id": (lambda d: d["steps"][1]["checks"][0].update(id="one.done"), "steps[1].checks[0].id: duplicate check id 'one.done'"),
    "needs a later step": (lambda d: d["steps"][0].update(needs=["two"]), "steps[0].needs: 'two' is not an earlier step"),
}


@pytest.mark.parametrize("case", CASES)
def test_malformed_lab_yaml_is_one_line_naming_file_and_field(tmp_path, case):
    change, expected = CASES[case]
    lab = write_lab(tmp_path, broken(change))
    with pytest.raises(UsageError) as error:
        folder.load(lab)
    assert error.value.message == f"{lab / 'lab.yaml'}: {expected.format(folder=lab)}"


def test_every_problem_is_its_own_line(tmp_path):
    data = broken(lambda d: (d.pop("title"), d["steps"][0]["checks"][0].pop("message")))
    lab = write_lab(tmp_path, data)
    with pytest.raises(UsageError) as error:
        folder.load(lab)
    assert error.value.message.splitlines() == [f"{lab / 'lab.yaml'}: steps[0].checks[0].message: required",
                                                f"{lab / 'lab.yaml'}: title: required"]


def test_yaml_syntax_error_names_the_line(tmp_path):
    lab = tmp_path / "syntax"
    lab.mkdir()
    (lab / "lab.yaml").write_text("name: x\nsteps: [\n")
    with pytest.raises(UsageError) as error:
        folder.load(lab)
    assert error.value.message.startswith(f"{lab / 'lab.yaml'}: line 3: not YAML")


def test_a_valid_folder_compiles_to_the_model(tmp_path):
    lab = folder.load(write_lab(tmp_path, valid()))
    assert isinstance(lab, Lab)
    assert lab.step_ids == ["one", "two"]
    assert lab.steps[0].checks[0].script == "true\n"
    assert lab.steps[1].needs == ("one",)
    assert lab.defaults == {"vm": "con0", "workdir": "", "variables": {}}


def test_checks_naming_one_probe_share_it(tmp_path):
    data = valid()
    data["steps"][0]["checks"][0]["probe"] = "ok.sh"
    data["steps"][1]["checks"][0]["probe"] = "ok.sh"
    lab = folder.load(write_lab(tmp_path, data))
    first, second = (step.checks[0].probe for step in lab.steps)
    assert first == second and first.script == "true\n"


def test_the_namespaces_lab_loads_with_its_library_in_every_check():
    lab = folder.load(NAMESPACES)
    assert lab.step_ids == ["rootfs", "mount", "pid", "proc", "uts", "net", "cgroup"]
    assert all("lk_container()" in check.script for step in lab.steps for check in step.checks)
    assert all(len(step.checks) >= 1 for step in lab.steps)
    variables = lab.variables(lab.defaults, "/root")
    assert variables["ROOTFS"] == "/root/ns-rootfs" and variables["SCRIPT"] == "/root/ns-container.sh"


def test_builtin_labs_are_entry_points():
    names = [lab.name for lab, _ in registry.installed()]
    assert {"chroot", "docker", "namespaces"} <= set(names)


def test_two_labs_of_one_name_are_refused(tmp_path):
    write_lab(tmp_path, broken(lambda d: d.update(name="chroot")), "chroot-again")
    with pytest.raises(UsageError, match="Two labs are named chroot"):
        registry.discover([str(tmp_path)])


def test_lab_new_scaffolds_a_valid_folder(tmp_path):
    lab = folder.scaffold(tmp_path / "mylab", "mylab")
    assert lab.name == "mylab" and lab.step_ids == ["greet"]
    with pytest.raises(UsageError, match="exists already"):
        folder.scaffold(tmp_path / "mylab", "mylab")
    with pytest.raises(UsageError, match="cannot be a lab name"):
        folder.scaffold(tmp_path / "My-Lab", "My-Lab")


def run_inv(tmp_path: Path, *args: str, paths: list[str]) -> subprocess.CompletedProcess:
    config = tmp_path / "labs-config.yaml"
    config.write_text(yaml.safe_dump({"labs": {"paths": paths}}))
    env = dict(os.environ, INVOKE_RUNTIME_CONFIG=str(config))
    return cli.labkit(env, *args, timeout=120)


def test_a_folder_in_labs_paths_gets_its_tasks_without_code(tmp_path):
    made = subprocess.run(cli.inv("lab.new", "greeter", "--dir", str(tmp_path / "extra")), capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert made.returncode == 0, made.stderr
    before = run_inv(tmp_path, "--list", paths=[])
    listed = run_inv(tmp_path, "--list", paths=[str(tmp_path / "extra")])
    assert listed.returncode == 0, listed.stderr
    assert "lab.greeter" not in before.stdout
    for name in ("lab.greeter", "check.greeter", "lab.namespaces", "check.namespaces", "lab.chroot", "check.docker"):
        assert name in listed.stdout


def test_a_malformed_folder_in_labs_paths_is_exit_2_naming_file_and_field(tmp_path):
    shutil.copytree(NAMESPACES, tmp_path / "labs" / "bad")
    text = (tmp_path / "labs" / "bad" / "lab.yaml").read_text().replace("name: namespaces", "name: bad")
    (tmp_path / "labs" / "bad" / "lab.yaml").write_text(text.replace("        hint: Mount proc after", "        tip: Mount proc after"))
    result = run_inv(tmp_path, "--list", paths=[str(tmp_path / "labs")])
    assert result.returncode == 2
    where = f"{tmp_path / 'labs' / 'bad' / 'lab.yaml'}: steps[3].checks[1]"
    assert result.stderr.splitlines()[:2] == [f"Error: {where}.hint: required",
                                              f"{where}.tip: unknown field (not in the lab format)"]


@pytest.mark.parametrize("task,flags", [
    ("lab.chroot", ["-b STRING, --busybox=STRING", "-f STRING, --from=STRING", "-r, --force", "-a, --pause"]),
    ("lab.docker", ["-a, --allow-destructive", "-f STRING, --from=STRING", "-u, --pause"]),
    ("check.docker", ["-i STRING, --inventory=STRING", "-t INT, --watch=INT", "-w STRING, --workdir=STRING"]),
])
def test_the_made_tasks_keep_the_flags_of_design_md(task, flags):
    """The per-lab factory gives the built-in labs the flags (and short flags) they had by hand."""
    shown = subprocess.run(cli.inv("--help", task), capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL).stdout
    assert [flag for flag in flags if flag not in shown] == []
