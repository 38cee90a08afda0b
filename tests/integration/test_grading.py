"""Points and grading against real VMs: the autograder formats of `check.chroot` on a half-done and a
solved con0, `grade.chroot` of sample submissions on fresh VMs through the shipped Gradescope
`run_autograder` and the shipped GitHub Classroom workflow's command, and `grade.docker` of a
Dockerfile with images supplied offline (tests/docker_images.py: Docker Hub cannot be reached here).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from labs import chroot
from labs.cli import DEFAULTS
from labs.reporting import SilentReporter
from labs.runner import Runner
from labs.templates import render
from tests import cli
from tests.docker_images import offline_config, write_archive
from tests.remote import sh

pytestmark = pytest.mark.vm

VM = "con0"
REPO = cli.REPO
SCHEMAS = REPO / "tests" / "schemas"
SCHEMA_FILES = {"gradescope": "gradescope-results.schema.json", "classroom": "github-classroom-result.schema.json",
                "prairielearn": "prairielearn-results.schema.json"}
RUN_AUTOGRADER = REPO / "autograders" / "gradescope" / "run_autograder"
WORKFLOW = REPO / "autograders" / "classroom" / ".github" / "workflows" / "classroom.yml"


def valid(fmt: str, data: dict) -> dict:
    jsonschema.Draft202012Validator(json.loads((SCHEMAS / SCHEMA_FILES[fmt]).read_text())).validate(data)
    return data


@pytest.fixture(scope="module")
def env(qemu_settings):
    """The CLI's environment: the test VMs' state and image cache; a busybox URL of the user's is dropped."""
    # Each grading boots a VM of its own; on a machine shared with other VMs under TCG that can take
    # longer than the default two minutes.
    values = dict(os.environ, INVOKE_VM_STATE_DIR=str(qemu_settings["state_dir"]),
                  INVOKE_VM_CACHE_DIR=str(qemu_settings["cache_dir"]), INVOKE_VM_BOOT_TIMEOUT="600", COLUMNS="100")
    values.pop("INVOKE_CHROOT_BUSYBOX_URL", None)
    values.pop("GITHUB_OUTPUT", None)
    return values


def grading_vms(qemu_settings) -> list[str]:
    return sorted(path.name for path in (Path(qemu_settings["state_dir"]) / "vms").glob("grade-*"))


# --- check.chroot in every autograder format ----------------------------------------------------------

def check_formats(env: dict, tmp_path: Path, con0) -> dict[str, dict | str]:
    target = con0[1]
    written = {}
    for fmt in ("gradescope", "classroom", "prairielearn", "csv"):
        path = tmp_path / f"check.{fmt}"
        result = cli.labkit(env, "check.chroot", "--provider", "ssh", "--host", f"root@127.0.0.1:{target.port}",
                            "--key", str(target.key_path), "--report", str(path), "--format", fmt, timeout=600)
        assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr
        written[fmt] = path.read_text() if fmt == "csv" else valid(fmt, json.loads(path.read_text()))
        if fmt == "classroom":
            written["notices"] = [line for line in result.stdout.splitlines() if line.startswith("::notice")]
    return written


@pytest.fixture(scope="module")
def half_done(con0, remote, env, tmp_path_factory):
    """con0 with the rootfs, busybox and its symlinks done, nothing else: the formats of its check."""
    sh(remote, "rm -rf /root/rootfs /root/container.sh /root/.labkit")
    settings = json.loads(json.dumps(DEFAULTS["chroot"]))
    settings["busybox"]["source"] = "target"
    report = Runner(chroot.LAB, remote, SilentReporter(), settings).solve(list(chroot.LAB.steps[:3]))
    assert report.ok
    return check_formats(env, tmp_path_factory.mktemp("half"), con0)


def test_half_done_con0_earns_the_points_of_its_done_steps(half_done):
    # chroot-shell is a demonstration that leaves nothing behind: its checks pass once busybox runs.
    earned = {"rootfs": 1, "busybox": 1, "symlinks": 1, "chroot-shell": 1}
    gradescope = half_done["gradescope"]
    assert gradescope["score"] == 4
    assert [(t["tags"][1], t["score"], t["max_score"]) for t in gradescope["tests"]] == [
        (step.id, earned.get(step.id, 0), points) for step, points in zip(chroot.LAB.steps, (1, 1, 1, 1, 2, 3, 1))]
    assert "container.sh is missing." in gradescope["tests"][4]["output"]
    classroom = half_done["classroom"]
    assert (classroom["status"], classroom["max_score"], sum(t["score"] for t in classroom["tests"])) == ("fail", 10, 4)
    assert half_done["notices"] == ["::notice title=Autograding complete::Points 4/10",
                                    '::notice title=Autograding report::{"totalPoints":4,"maxPoints":10}']
    prairielearn = half_done["prairielearn"]
    assert prairielearn["gradable"] is True and prairielearn["score"] == 0.4
    rows = [line.split(",") for line in half_done["csv"].splitlines()]
    assert rows[0] == ["host", *chroot.LAB.step_ids, "total", "max_points", "status"]
    assert rows[1][1:] == ["1", "1", "1", "1", "0", "0", "0", "4", "10", "fail"]


def test_solved_con0_earns_every_point(half_done, con0, remote, env, tmp_path):
    settings = json.loads(json.dumps(DEFAULTS["chroot"]))
    settings["busybox"]["source"] = "target"
    assert Runner(chroot.LAB, remote, SilentReporter(), settings).solve().ok
    solved = check_formats(env, tmp_path, con0)
    assert solved["gradescope"]["score"] == 10
    assert all(t["status"] == "passed" and t["score"] == t["max_score"] for t in solved["gradescope"]["tests"])
    assert (solved["classroom"]["status"], sum(t["score"] for t in solved["classroom"]["tests"])) == ("pass", 10)
    assert solved["notices"][0] == "::notice title=Autograding complete::Points 10/10"
    assert solved["prairielearn"]["score"] == 1
    assert solved["csv"].splitlines()[1].endswith(",10,10,pass")


def test_an_unreachable_target_still_writes_the_results_file(env, tmp_path):
    path = tmp_path / "results.json"
    result = cli.labkit(env, "check.chroot", "--provider", "ssh", "--host", "root@127.0.0.1:9", "--key",
                        str(tmp_path / "no-key"), "--report", str(path), "--format", "prairielearn", timeout=120)
    assert result.returncode in (2, 3), result.stdout + result.stderr
    data = valid("prairielearn", json.loads(path.read_text()))
    assert data["gradable"] is False and data["score"] == 0.0
    assert result.stderr.splitlines()[0].removeprefix("Error: ") in data["format_errors"][0]


# --- grade.chroot through the shipped autograders ---------------------------------------------------------

def container_sh(line_end: str = "\n") -> bytes:
    """The workshop's container.sh, with its #!/bin/ash, as a student hands it in."""
    values = chroot.container_sh_values(DEFAULTS["chroot"], "/bin/ash")
    return render("container.sh.j2", values, "chroot.container_sh").replace("\n", line_end).encode()


# Runs the shell straight in the rootfs: changes land in the rootfs itself, no snapshot.
NO_OVERLAY = b'#!/bin/ash\n# container.sh without an overlay\nPS1="C-# " chroot "$1" /bin/busybox sh\n'

SAMPLES = {"correct": (container_sh(), 6, [2, 3, 1]), "crlf": (container_sh("\r\n"), 0, [0, 0, 0]),
           "no-overlay": (NO_OVERLAY, 2, [2, 0, 0])}


def autograder_env(env: dict, root: Path, lab: str = "chroot", config: Path | None = None) -> dict:
    values = dict(env, AUTOGRADER_ROOT=str(root), LABKIT_LAB=lab,
                  LABKIT=f"{sys.executable} -m invoke --search-root {REPO}")
    if config:
        values["LABKIT_CONFIG"] = str(config)
    return values


@pytest.mark.parametrize("sample", list(SAMPLES))
def test_run_autograder_grades_a_submission_on_a_fresh_vm(sample, env, qemu_settings, tmp_path):
    data, points, per_step = SAMPLES[sample]
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    (root / "submission" / "container.sh").write_bytes(data)  # as uploaded: not executable
    result = subprocess.run([str(RUN_AUTOGRADER)], cwd=root, env=autograder_env(env, root), capture_output=True,
                            text=True, timeout=1200, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    report = valid("gradescope", json.loads((root / "results" / "results.json").read_text()))
    assert (report["score"], [t["score"] for t in report["tests"]]) == (points, per_step), result.stdout[-3000:] + result.stderr
    assert [t["tags"][1] for t in report["tests"]] == ["container-script", "overlay", "proc"]
    assert sum(t["max_score"] for t in report["tests"]) == 6
    assert "Preparing the grading VM grade-chroot-" in result.stdout
    if sample == "crlf":
        assert "CR LF" in report["tests"][0]["output"] and "sed -i 's/\\r$//' container.sh" in report["tests"][0]["output"]
    assert grading_vms(qemu_settings) == []  # destroyed after grading


def test_run_autograder_without_a_submission_reports_the_error(env, tmp_path):
    root = tmp_path / "autograder"
    root.mkdir()
    result = subprocess.run([str(RUN_AUTOGRADER)], cwd=root, env=autograder_env(env, root), capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    report = valid("gradescope", json.loads((root / "results" / "results.json").read_text()))
    assert report["score"] == 0 and f"--submission {root}/submission: no such directory." in report["output"]


def test_run_autograder_writes_results_when_labkit_cannot_start(env, tmp_path):
    root = tmp_path / "autograder"
    root.mkdir()
    values = dict(autograder_env(env, root), LABKIT=str(tmp_path / "no-such-labkit"))
    result = subprocess.run([str(RUN_AUTOGRADER)], cwd=root, env=values, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    report = valid("gradescope", json.loads((root / "results" / "results.json").read_text()))
    assert report["score"] == 0 and "labkit exit status 127" in report["output"]


def test_classroom_workflow_command_grades_the_repository(env, qemu_settings, tmp_path):
    workflow = yaml.safe_load(WORKFLOW.read_text())
    job = workflow["jobs"]["run-autograding-tests"]
    step = next(step for step in job["steps"] if step.get("id") == "labkit")
    repository = tmp_path / "student-repo"
    repository.mkdir()
    (repository / "container.sh").write_bytes(container_sh())
    outputs = tmp_path / "github_output"
    outputs.touch()
    values = dict(env, **workflow["env"], GITHUB_OUTPUT=str(outputs),
                  PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    assert shutil.which("labkit", path=values["PATH"]), "scripts/setup installs the labkit command into .venv"
    result = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=repository, env=values, capture_output=True,
                            text=True, timeout=1200, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    notices = [line for line in result.stdout.splitlines() if line.startswith("::notice")]
    assert notices == ["::notice title=Autograding complete::Points 6/6",
                       '::notice title=Autograding report::{"totalPoints":6,"maxPoints":6}']
    encoded = outputs.read_text().strip().removeprefix("result=")
    data = valid("classroom", json.loads(base64.b64decode(encoded)))
    assert data == json.loads((repository / "labkit-classroom.json").read_text())
    assert (data["status"], data["max_score"]) == ("pass", 6)
    assert grading_vms(qemu_settings) == []


# --- grade.docker -------------------------------------------------------------------------------------------

def test_grade_docker_of_a_dockerfile_with_offline_images(env, qemu_settings, tmp_path):
    """The docker lab's image from offline archives; the Dockerfile is the course's offline one (a
    stand-in mvn, no apt: the workshop's JDK and Maven cannot be installed without the internet)."""
    archive = write_archive(tmp_path / "labkit-test-images.tar")
    config = tmp_path / "labkit.yaml"
    config.write_text(yaml.safe_dump({"docker": offline_config(archive)}))
    settings = {**DEFAULTS["docker"], **offline_config(archive)}
    settings["dockerfile"] = {**DEFAULTS["docker"]["dockerfile"], **offline_config(archive)["dockerfile"]}
    from labs import docker
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    (root / "submission" / "Dockerfile").write_text(
        render("Dockerfile.j2", docker.dockerfile_values(settings), "docker.dockerfile"))
    result = subprocess.run([str(RUN_AUTOGRADER)], cwd=root, env=autograder_env(env, root, "docker", config),
                            capture_output=True, text=True, timeout=2400, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    report = valid("gradescope", json.loads((root / "results" / "results.json").read_text()))
    assert [(t["tags"][1], t["score"], t["max_score"]) for t in report["tests"]] == [
        ("dockerfile", 2, 2), ("build", 2, 2), ("run-mvn", 2, 2)], result.stdout[-3000:] + result.stderr
    assert grading_vms(qemu_settings) == []
