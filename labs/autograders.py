"""Results files of the autograding platforms, one submission each: Gradescope's results.json, a GitHub
Classroom runner result, and PrairieLearn's results.json. Every step is one test, worth its points
when all its checks pass; the hint and what the checks saw are the test's output.

The field lists follow the platforms' published specifications (see each writer); the JSON Schemas
that tests/unit/test_autograders.py validates against are in tests/schemas/.
"""

from __future__ import annotations

import base64
import json
import math
import os
from typing import Callable, TextIO

from .errors import UsageError
from .model import ERROR, PASS, CheckResult, LabReport, StepResult

# (lab name, results, whole_class) -> the report file's text. A result is a LabReport, or a
# labs.reports.HostFailure (a host without one: .host, .message, .status).
Writer = Callable[[str, list, bool], str]

# Characters of evidence per test: enough for a failing command's last lines, and far below
# PrairieLearn's 1 MB limit for a whole file.
OUTPUT_LIMIT = 8000


def seconds(value: float) -> float:
    return round(float(value), 3)


def number(value: float) -> int | float:
    """Points as people write them, in every format: 3, not 3.0; 1.5 stays 1.5."""
    return int(value) if float(value).is_integer() else round(float(value), 3)


def _single(results: list, name: str):
    if len(results) != 1:
        raise UsageError(f"--format {name} reports on one submission, not {len(results)} hosts.",
                         "Use json, junit, csv or html for a class.")
    return results[0]


def _clip(text: str) -> str:
    return text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + "\n[... cut]"


def _fenced(text: str) -> str:
    """`text` as a Markdown code block whose fence does not occur in it."""
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}\n{text}\n{fence}"


def _checks_of(report: LabReport, step: StepResult) -> list[CheckResult]:
    return [check for check in report.checks if check.step == step.id]


def _message(checks: list[CheckResult]) -> str:
    """What a student reads first: the first problem of the step and its hint."""
    for check in checks:
        if check.status != PASS and (check.message or check.hint):
            return " ".join(part for part in (check.message, f"Hint: {check.hint}" if check.hint else "") if part)
    return ""


def _evidence(checks: list[CheckResult], markdown: bool) -> str:
    """Per check: its status and id, then for a problem its message and hint, and what it saw (`detail`)."""
    parts = []
    for check in checks:
        head = f"{check.status}: {check.id}"
        lines = [f"**{head}**" if markdown else head]
        if check.status != PASS:
            lines += [line for line in (check.message, f"Hint: {check.hint}" if check.hint else "") if line]
        if check.detail:
            lines.append("Saw:\n" + _fenced(check.detail) if markdown else f"Saw: {check.detail}")
        parts.append(("\n\n" if markdown else "\n").join(lines))
    return _clip("\n\n".join(parts))


def _run_errors(report: LabReport) -> list[str]:
    """Errors of the run rather than of the work: unreachable target, bad input, a check that did not finish."""
    return [" ".join(part for part in (check.message, check.hint) if part)
            for check in report.checks if check.status == ERROR]


def _summary(lab: str, report: LabReport) -> str:
    return f"{lab}: {number(report.points)} of {number(report.max_points)} points."


def gradescope(lab: str, result) -> dict:
    """results.json per Gradescope's autograder specification ("Autograder Specifications", docs/specs.md
    of gradescope/autograder_samples): the top-level score, execution_time (whole seconds), output and
    tests; each step one test numbered in the lab's order, scored its points when it passed, with
    status passed|failed, Markdown output, and visibility hidden for a hidden step."""
    if not isinstance(result, LabReport):
        return {"score": 0, "output": f"labkit could not grade {result.host}: {result.message}",
                "output_format": "text", "stdout_visibility": "hidden", "tests": []}
    tests = []
    for index, step in enumerate(result.steps, 1):
        tests.append({
            "name": step.title or step.id,
            "number": str(index),
            "score": number(step.points),
            "max_score": number(step.max_points),
            "status": "passed" if step.status == PASS else "failed",
            "output": _evidence(_checks_of(result, step), markdown=True) or f"{step.status}: no checks ran",
            "output_format": "md",
            "tags": [lab, step.id],
            "visibility": "visible" if step.visible else "hidden",
            "extra_data": {"step": step.id, "status": step.status, "duration_s": seconds(step.duration_s)},
        })
    return {
        "score": number(result.points),
        "execution_time": math.ceil(result.duration_s),
        "output": "\n\n".join([_summary(lab, result), *_run_errors(result)]),
        "output_format": "md",
        "stdout_visibility": "hidden",
        "tests": tests,
        "extra_data": {"lab": lab, "host": result.host, "provider": result.provider, "mode": result.mode,
                       "started": result.started},
    }


def classroom(lab: str, result) -> dict:
    """A GitHub Classroom runner result, the object classroom-resources/autograding-command-grader
    base64-encodes into its `result` output and autograding-grading-reporter reads: version 1,
    status pass|fail|error, max_score, and tests with name, status, score, message, test_code,
    filename, line_no and duration (milliseconds); one test per step."""
    if not isinstance(result, LabReport):
        return {"version": 1, "status": "error", "max_score": 0,
                "tests": [{"name": lab, "status": "error", "score": 0, "message": result.message,
                           "test_code": f"labkit check.{lab}", "filename": "", "line_no": 0, "duration": 0}]}
    tests = []
    for step in result.steps:
        checks = _checks_of(result, step)
        tests.append({"name": step.title or step.id, "status": {PASS: "pass", ERROR: "error"}.get(step.status, "fail"),
                      "score": number(step.points), "message": _message(checks) or _evidence(checks, markdown=False),
                      "test_code": f"labkit check.{lab}: step {step.id}", "filename": "", "line_no": 0,
                      "duration": round(step.duration_s * 1000)})
    statuses = {test["status"] for test in tests} | ({"error"} if _run_errors(result) else set())
    status = "error" if "error" in statuses else "fail" if "fail" in statuses else "pass"
    return {"version": 1, "status": status, "max_score": number(result.max_points), "tests": tests}


def prairielearn(lab: str, result) -> dict:
    """/grade/results/results.json per PrairieLearn's "External Grading" documentation
    (docs/externalGrading.md): score from 0 to 1, message, and tests with name, description, points,
    max_points, message and output. A run that could not judge the work (unreachable VM, bad input,
    a check that did not finish) is `gradable: false` with `format_errors`: no attempt is charged."""
    if not isinstance(result, LabReport):
        return {"gradable": False, "score": 0.0, "format_errors": [result.message], "message": result.message,
                "tests": []}
    tests = [{"name": step.title or step.id, "description": f"Step {step.id} of the {lab} lab.",
              "points": number(step.points), "max_points": number(step.max_points),
              "message": _message(_checks_of(result, step)), "output": _evidence(_checks_of(result, step), markdown=False)}
             for step in result.steps]
    errors = _run_errors(result)
    data = {"gradable": not errors,
            "score": round(result.points / result.max_points, 4) if result.max_points else 0.0,
            "message": _summary(lab, result), "tests": tests}
    if errors:
        data["format_errors"] = errors
    return data


def _writer(name: str, build: Callable[[str, object], dict]) -> Writer:
    def write(lab: str, results: list, whole_class: bool = False) -> str:
        return json.dumps(build(lab, _single(results, name)), indent=2, ensure_ascii=False) + "\n"
    return write


AUTOGRADER_WRITERS: dict[str, Writer] = {
    "gradescope": _writer("gradescope", gradescope),
    "classroom": _writer("classroom", classroom),
    "prairielearn": _writer("prairielearn", prairielearn),
}


def classroom_announce(text: str, out: TextIO, environ: dict | None = None) -> None:
    """Tell GitHub Classroom the outcome of a `classroom` report (`text`): the runner result,
    base64-encoded, as the step output `result` in $GITHUB_OUTPUT when that is set, and on `out` the
    two notices autograding-grading-reporter posts, "Points X/Y" (title "Autograding complete") and
    {"totalPoints":X,"maxPoints":Y} (title "Autograding report"), when there are points to give."""
    environ = os.environ if environ is None else environ
    data = json.loads(text)
    encoded = base64.b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()
    if environ.get("GITHUB_OUTPUT"):
        with open(environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as handle:
            handle.write(f"result={encoded}\n")
    total, maximum = number(sum(test["score"] for test in data["tests"])), data["max_score"]
    if maximum:
        summary = json.dumps({"totalPoints": total, "maxPoints": maximum}, separators=(",", ":"))
        out.write(f"::notice title=Autograding complete::Points {total}/{maximum}\n"
                  f"::notice title=Autograding report::{summary}\n")
        out.flush()
