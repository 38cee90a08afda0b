"""The autograding platforms' results files, validated against JSON Schemas written from each
platform's published specification (tests/schemas/), and their points checked against the lab's."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import jsonschema
import pytest

from labs import chroot, docker
from labs.autograders import classroom_announce
from labs.cli import DEFAULTS
from labs.errors import UsageError
from labs.model import CheckResult, LabReport, StepResult, failed_run
from labs.reports import HostFailure, report_format, write_report

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
SCHEMA_FILES = {"gradescope": "gradescope-results.schema.json", "classroom": "github-classroom-result.schema.json",
                "prairielearn": "prairielearn-results.schema.json"}
STARTED = "2026-11-30T04:00:00+00:00"


def validator(fmt: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / SCHEMA_FILES[fmt]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def checked(lab, done: int, settings: dict | None = None, detail: str = "") -> LabReport:
    """A check of `lab` where the first `done` steps pass, the next fails (with evidence), the rest are skipped."""
    report = LabReport(lab.name, "con0", "qemu", STARTED, mode="check", duration_s=12.3)
    for index, step in enumerate(lab.steps):
        status = "pass" if index < done else "fail" if index == done else "skip"
        report.steps.append(StepResult(step.id, status, 0.2504))
        for number, check in enumerate(step.checks):
            if status == "fail" and number == 0:
                report.checks.append(CheckResult(check.id, step.id, "fail", check.message, check.hint, 0.25,
                                                 detail or "what the check saw"))
            elif status == "skip" or status == "fail":
                report.checks.append(CheckResult(check.id, step.id, "skip", "Skipped: an earlier step is not done."))
            else:
                report.checks.append(CheckResult(check.id, step.id, "pass", duration_s=0.25, detail="fine"))
    report.award(lab, settings or {})
    return report


def written(tmp_path: Path, fmt: str, results) -> dict:
    path = tmp_path / f"{fmt}.json"
    write_report(path, results[0].lab if isinstance(results[0], LabReport) else "chroot", results, fmt=fmt)
    data = json.loads(path.read_text())
    validator(fmt).validate(data)
    assert path.stat().st_size < 1_000_000
    return data


SOLVED, HALF = len(chroot.LAB.steps), 3  # con0 solved; con0 with rootfs, busybox and symlinks done


@pytest.mark.parametrize("fmt", ["gradescope", "classroom", "prairielearn"])
@pytest.mark.parametrize("done", [SOLVED, HALF, 0])
def test_every_format_passes_its_specification(tmp_path, fmt, done):
    written(tmp_path, fmt, [checked(chroot.LAB, done)])


@pytest.mark.parametrize("fmt", ["gradescope", "classroom", "prairielearn"])
def test_a_run_that_failed_still_passes_its_specification(tmp_path, fmt):
    failure = failed_run(chroot.LAB, "con0", "check", "Cannot connect to root@127.0.0.1:2222: Connection refused.",
                         "Start it with: inv vm.up con0", {})
    written(tmp_path, fmt, [failure])
    written(tmp_path, fmt, [HostFailure("con0", "unreachable")])


def test_gradescope_points_per_step_and_total(tmp_path):
    solved = written(tmp_path, "gradescope", [checked(chroot.LAB, SOLVED)])
    assert solved["score"] == 10 and solved["execution_time"] == 13
    assert [(t["number"], t["name"], t["score"], t["max_score"], t["status"]) for t in solved["tests"]] == [
        ("1", "Prepare the rootfs directories", 1, 1, "passed"), ("2", "Put busybox into the rootfs", 1, 1, "passed"),
        ("3", "Install the busybox symlinks", 1, 1, "passed"), ("4", "Play with the container", 1, 1, "passed"),
        ("5", "Create container.sh", 2, 2, "passed"), ("6", "Run containers on an overlay filesystem", 3, 3, "passed"),
        ("7", "Mount proc in a container, and see why not to", 1, 1, "passed")]
    half = written(tmp_path, "gradescope", [checked(chroot.LAB, HALF, detail="no shell answered in the chroot")])
    assert half["score"] == 3
    assert [t["score"] for t in half["tests"]] == [1, 1, 1, 0, 0, 0, 0]
    assert sum(t["max_score"] for t in half["tests"]) == 10
    failing = half["tests"][3]
    assert failing["status"] == "failed" and failing["output_format"] == "md"
    check = chroot.LAB.steps[3].checks[0]
    assert check.message in failing["output"] and check.hint in failing["output"]
    assert "no shell answered in the chroot" in failing["output"]


def test_gradescope_evidence_fence_survives_backticks(tmp_path):
    data = written(tmp_path, "gradescope", [checked(chroot.LAB, 0, detail="```\nrm -rf /")])
    assert "````\n```\nrm -rf /\n````" in data["tests"][0]["output"]


def test_course_points_and_hidden_steps(tmp_path):
    report = checked(chroot.LAB, SOLVED, {"points": {"overlay": 5, "proc": 0.5}, "hidden": ["proc"]})
    data = written(tmp_path, "gradescope", [report])
    assert data["score"] == 11.5
    assert data["tests"][5]["max_score"] == 5 and data["tests"][6]["max_score"] == 0.5
    assert [t["visibility"] for t in data["tests"]] == ["visible"] * 6 + ["hidden"]


@pytest.mark.parametrize("setting, message", [
    ({"points": {"overlays": 3}}, "Unknown step 'overlays' in the setting chroot.points."),
    ({"hidden": ["nope"]}, "Unknown step 'nope' in the setting chroot.hidden."),
    ({"points": {"overlay": -1}}, "The setting chroot.points.overlay is -1, not a number of points."),
    ({"points": {"overlay": "three"}}, "The setting chroot.points.overlay is 'three', not a number of points."),
    ({"points": ["overlay"]}, "The settings chroot.points and chroot.hidden are malformed."),
])
def test_bad_points_settings_are_usage_errors(setting, message):
    with pytest.raises(UsageError) as raised:
        chroot.LAB.grading(setting)
    assert raised.value.message == message


def test_default_points_of_the_labs():
    assert sum(points for points, _ in chroot.LAB.grading(DEFAULTS["chroot"]).values()) == 10
    assert sum(points for points, _ in docker.LAB.grading(DEFAULTS["docker"]).values()) == 13


def test_classroom_result_and_what_github_reads(tmp_path):
    data = written(tmp_path, "classroom", [checked(chroot.LAB, HALF)])
    assert (data["version"], data["status"], data["max_score"]) == (1, "fail", 10)
    assert [(t["status"], t["score"]) for t in data["tests"]] == [("pass", 1)] * 3 + [("fail", 0)] * 4
    assert data["tests"][3]["message"].startswith(chroot.LAB.steps[3].checks[0].message)
    outputs, out = tmp_path / "github_output", io.StringIO()
    outputs.write_text("earlier=1\n")
    classroom_announce(json.dumps(data), out, {"GITHUB_OUTPUT": str(outputs)})
    lines = outputs.read_text().splitlines()
    assert lines[0] == "earlier=1" and lines[1].startswith("result=")
    assert json.loads(base64.b64decode(lines[1][len("result="):])) == data
    assert out.getvalue().splitlines() == ["::notice title=Autograding complete::Points 3/10",
                                           '::notice title=Autograding report::{"totalPoints":3,"maxPoints":10}']
    solved = written(tmp_path, "classroom", [checked(chroot.LAB, SOLVED)])
    assert solved["status"] == "pass" and sum(t["score"] for t in solved["tests"]) == 10


def test_classroom_without_github_output_only_prints(tmp_path):
    out = io.StringIO()
    classroom_announce(json.dumps(written(tmp_path, "classroom", [checked(chroot.LAB, SOLVED)])), out, {})
    assert "Points 10/10" in out.getvalue()


def test_prairielearn_score_is_a_fraction_and_errors_are_not_gradable(tmp_path):
    half = written(tmp_path, "prairielearn", [checked(chroot.LAB, HALF)])
    assert half["gradable"] is True and half["score"] == 0.3
    assert [(t["points"], t["max_points"]) for t in half["tests"]][3:5] == [(0, 1), (0, 2)]
    failure = failed_run(chroot.LAB, "grade-chroot-1", "grade", "--submission /x: no such directory.",
                         "Give the directory holding the student's container.sh.", {})
    data = written(tmp_path, "prairielearn", [failure])
    assert data["gradable"] is False and data["format_errors"] == [
        "--submission /x: no such directory. Give the directory holding the student's container.sh."]


def test_the_schemas_reject_what_the_specifications_do_not_allow():
    """Each schema can fail: a field of the wrong type, an unknown status, a missing required field."""
    with pytest.raises(jsonschema.ValidationError):
        validator("gradescope").validate({"tests": [{"score": 1, "status": "pass"}]})
    with pytest.raises(jsonschema.ValidationError):
        validator("gradescope").validate({"tests": [{"name": "no score anywhere"}]})
    with pytest.raises(jsonschema.ValidationError):
        validator("classroom").validate({"version": 1, "status": "pass", "max_score": 1,
                                         "tests": [{"name": "x", "status": "pass", "score": 1}]})
    with pytest.raises(jsonschema.ValidationError):
        validator("prairielearn").validate({"score": 3})
    with pytest.raises(jsonschema.ValidationError):
        validator("prairielearn").validate({"message": "no score"})
    validator("prairielearn").validate({"gradable": False, "format_errors": "x"})


def test_single_submission_formats_refuse_a_class(tmp_path):
    with pytest.raises(UsageError) as raised:
        report_format(tmp_path / "r.json", "gradescope", whole_class=True)
    assert raised.value.message == "--format gradescope reports on one submission, not a class."
    with pytest.raises(UsageError):
        write_report(tmp_path / "r.json", "chroot", [checked(chroot.LAB, 1), checked(chroot.LAB, 2)], fmt="classroom")
    with pytest.raises(UsageError) as raised:
        report_format(tmp_path / "r.json", "yaml")
    assert raised.value.message == "Unknown report format 'yaml'."
