"""Report files, one writer per `--format`: JSON (design.md's format), JUnit XML and a CSV grade sheet
here; the autograding platforms' results files (Gradescope, GitHub Classroom, PrairieLearn) in
labs/autograders.py. A writer turns (lab name, results, whole_class) into the file's text."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from .autograders import AUTOGRADER_WRITERS, Writer, number, seconds
from .classpage import class_html
from .errors import UsageError
from .model import ERROR, FAIL, PASS, SKIP, LabReport

UNREACHABLE, HOST_ERROR = "unreachable", "error"


@dataclass
class HostFailure:
    """A host of a class run without a LabReport: it could not be reached (`unreachable`), or it was
    but its checks did not complete, e.g. they timed out (`error`)."""

    host: str
    message: str
    status: str = UNREACHABLE

    @property
    def reached(self) -> bool:
        return self.status != UNREACHABLE


Result = Union[LabReport, HostFailure]

_SUMMARY_KEYS = ("passed", "failed", "skipped", "errors", "points", "max_points")


def report_json(report: LabReport) -> dict:
    """One host's run in the JSON report format of design.md, plus "mode", "already_done", "notes" and
    "detail"; steps and summary carry `points` (earned) and `max_points` (what they are worth)."""
    return {
        "lab": report.lab,
        "host": report.host,
        "provider": report.provider,
        "mode": report.mode,
        "started": report.started,
        "duration_s": seconds(report.duration_s),
        "steps": [
            {"id": step.id, "status": step.status, "duration_s": seconds(step.duration_s),
             "already_done": step.already_done, "points": number(step.points), "max_points": number(step.max_points),
             "notes": step.notes}
            for step in report.steps
        ],
        "checks": [
            {"id": check.id, "step": check.step, "status": check.status, "message": check.message,
             "hint": check.hint, "duration_s": seconds(check.duration_s), "detail": check.detail}
            for check in report.checks
        ],
        "summary": {key: number(value) for key, value in report.summary.items()},
    }


def class_report_json(lab: str, results: list[Result]) -> dict:
    """A whole class in one document: each host's report, and totals a grader can read at a glance."""
    hosts: list[dict] = []
    summary = dict.fromkeys(_SUMMARY_KEYS, 0)
    for result in results:
        if isinstance(result, HostFailure):
            hosts.append({"host": result.host, "status": result.status, "message": result.message})
            continue
        hosts.append(report_json(result))
        for key, count in result.summary.items():
            summary[key] += count
    summary = {key: number(value) for key, value in summary.items()}
    summary["hosts"] = len(results)
    failures = [result for result in results if isinstance(result, HostFailure)]
    summary["unreachable"] = sum(not failure.reached for failure in failures)
    summary["host_errors"] = sum(failure.reached for failure in failures)
    return {"lab": lab, "hosts": hosts, "summary": summary}


def _labkit_json(lab: str, results: list[Result], whole_class: bool) -> str:
    """JSON for one host is that host's report, unless `whole_class` asks for the class format (an
    inventory of one student is still a class)."""
    if not whole_class and len(results) == 1 and isinstance(results[0], LabReport):
        data = report_json(results[0])
    else:
        data = class_report_json(lab, results)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# Characters XML 1.0 cannot carry even escaped (terminal escapes in command output, for one).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def _suite(name: str, cases: int, failures: int, errors: int, skipped: int, seconds: float) -> ET.Element:
    return ET.Element("testsuite", name=_xml_text(name), tests=str(cases), failures=str(failures),
                      errors=str(errors), skipped=str(skipped), time=f"{seconds:.3f}")


def junit_xml(lab: str, results: list[Result], whole_class: bool = True) -> str:
    """JUnit XML, so CI servers show each host as a suite and each check as a test; a suite's
    properties `points` and `max_points` carry the host's points."""
    root = ET.Element("testsuites", name=_xml_text(lab))
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for result in results:
        if isinstance(result, HostFailure):
            suite = _suite(result.host, 1, 0, 1, 0, 0.0)
            name = "checks-completed" if result.reached else "reachable"
            case = ET.SubElement(suite, "testcase", classname=_xml_text(lab), name=name, time="0.000")
            ET.SubElement(case, "error", message=_xml_text(result.message), type=result.status).text = \
                _xml_text(result.message)
            counts = {"tests": 1, "failures": 0, "errors": 1, "skipped": 0}
        else:
            summary = result.summary
            counts = {"tests": len(result.checks), "failures": summary["failed"],
                      "errors": summary["errors"], "skipped": summary["skipped"]}
            suite = _suite(result.host, counts["tests"], counts["failures"], counts["errors"],
                           counts["skipped"], result.duration_s)
            suite.set("timestamp", _xml_text(result.started))
            properties = ET.SubElement(suite, "properties")
            for name, value in (("points", result.points), ("max_points", result.max_points)):
                ET.SubElement(properties, "property", name=name, value=str(number(value)))
            for check in result.checks:
                case = ET.SubElement(suite, "testcase", classname=_xml_text(f"{lab}.{check.step}"),
                                     name=_xml_text(check.id), time=f"{check.duration_s:.3f}")
                if check.status in (FAIL, ERROR):
                    text = "\n".join(part for part in (
                        check.message,
                        f"saw: {check.detail}" if check.detail else "",
                        f"hint: {check.hint}" if check.hint else "",
                    ) if part)
                    tag = "failure" if check.status == FAIL else "error"
                    ET.SubElement(case, tag, message=_xml_text(check.message)).text = _xml_text(text)
                elif check.status == SKIP:
                    skipped = ET.SubElement(case, "skipped")
                    if check.message:
                        skipped.set("message", _xml_text(check.message))
        root.append(suite)
        for key, count in counts.items():
            totals[key] += count
    for key, count in totals.items():
        root.set(key, str(count))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def grade_csv(results: list[Result]) -> str:
    """A gradebook sheet: one row per host with the points earned per step (a column each), the total,
    what the steps are worth, and the run's status (pass, fail, or why a host has no points:
    unreachable, error)."""
    worth: dict[str, float] = {}
    for result in results:
        if isinstance(result, LabReport):
            for step in result.steps:
                worth.setdefault(step.id, step.max_points)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["host", *worth, "total", "max_points", "status"])
    for result in results:
        if isinstance(result, HostFailure):
            writer.writerow([result.host, *[""] * len(worth), "", number(sum(worth.values())), result.status])
            continue
        earned = {step.id: number(step.points) for step in result.steps}
        writer.writerow([result.host, *(earned.get(step_id, "") for step_id in worth), number(result.points),
                         number(result.max_points), PASS if result.ok else FAIL])
    return buffer.getvalue()


# Every --format, in the order help lists them, and the writer of each.
FORMATS = ("json", "junit", "csv", "html", "gradescope", "classroom", "prairielearn")
WRITERS: dict[str, Writer] = {"json": _labkit_json, "junit": junit_xml,
                              "csv": lambda lab, results, whole_class: grade_csv(results),
                              "html": lambda lab, results, whole_class: class_html(lab, results), **AUTOGRADER_WRITERS}
# Formats that describe one submission: a class run cannot write them.
SINGLE_SUBMISSION = ("gradescope", "classroom", "prairielearn")
SUFFIXES = {".json": "json", ".xml": "junit", ".csv": "csv", ".html": "html", ".htm": "html"}


def report_format(path: str | Path, fmt: str | None = None, *, whole_class: bool = False) -> str:
    """The format of the report at `path`: `fmt` when given (--format), else the one its suffix names
    (.json, .xml = JUnit, .csv, .html). UsageError for anything else, raised before the run starts."""
    if fmt:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise UsageError(f"Unknown report format '{fmt}'.", f"Choose one of: {', '.join(FORMATS)}.")
    else:
        fmt = SUFFIXES.get(Path(path).suffix.lower())
        if not fmt:
            raise UsageError(f"Unknown report format for '{path}'.",
                             "Use a path ending in .json, .xml (JUnit), .csv or .html, or name a format with --format.")
    if whole_class and fmt in SINGLE_SUBMISSION:
        raise UsageError(f"--format {fmt} reports on one submission, not a class.",
                         "Use json, junit, csv or html with --inventory.")
    return fmt


def write_report(path: str | Path, lab: str, results: list[Result], *, whole_class: bool = False,
                 fmt: str | None = None) -> str:
    """Write the report in format `fmt` (default: the one the path's suffix names) and return its text;
    readers never see a half-written file. `whole_class` asks for a class document even for one host."""
    target = Path(path)
    text = WRITERS[report_format(path, fmt, whole_class=whole_class)](lab, results, whole_class)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise UsageError(f"Cannot write the report {path}: {error.strerror or error}.",
                         "Choose a path in a directory you can write to.") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        # mkstemp creates the file private; a report is meant to be shared like any other file.
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
    return text

