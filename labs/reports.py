"""Report files for graders and CI: JSON (design.md's format), JUnit XML and a CSV grade sheet."""

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

from .errors import UsageError
from .model import ERROR, FAIL, SKIP, LabReport

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


_SUMMARY_KEYS = ("passed", "failed", "skipped", "errors")


def _seconds(value: float) -> float:
    return round(float(value), 3)


def report_json(report: LabReport) -> dict:
    """One host's run in the JSON report format of design.md, plus "mode", "already_done", "notes" and "detail"."""
    return {
        "lab": report.lab,
        "host": report.host,
        "provider": report.provider,
        "mode": report.mode,
        "started": report.started,
        "duration_s": _seconds(report.duration_s),
        "steps": [
            {"id": step.id, "status": step.status, "duration_s": _seconds(step.duration_s),
             "already_done": step.already_done, "notes": step.notes}
            for step in report.steps
        ],
        "checks": [
            {"id": check.id, "step": check.step, "status": check.status, "message": check.message,
             "hint": check.hint, "duration_s": _seconds(check.duration_s), "detail": check.detail}
            for check in report.checks
        ],
        "summary": report.summary,
    }


def class_report_json(lab: str, results: list[LabReport | HostFailure]) -> dict:
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
    summary["hosts"] = len(results)
    failures = [result for result in results if isinstance(result, HostFailure)]
    summary["unreachable"] = sum(not failure.reached for failure in failures)
    summary["host_errors"] = sum(failure.reached for failure in failures)
    return {"lab": lab, "hosts": hosts, "summary": summary}


# Characters XML 1.0 cannot carry even escaped (terminal escapes in command output, for one).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def _suite(name: str, cases: int, failures: int, errors: int, skipped: int, seconds: float) -> ET.Element:
    return ET.Element("testsuite", name=_xml_text(name), tests=str(cases), failures=str(failures),
                      errors=str(errors), skipped=str(skipped), time=f"{seconds:.3f}")


def junit_xml(lab: str, results: list[LabReport | HostFailure]) -> str:
    """JUnit XML, so CI servers show each host as a suite and each check as a test."""
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


def grade_csv(results: list[LabReport | HostFailure]) -> str:
    """One row per host with each step's status, the sheet a teacher pastes into a gradebook."""
    step_ids: list[str] = []
    for result in results:
        if isinstance(result, LabReport):
            step_ids += [step.id for step in result.steps if step.id not in step_ids]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["host", *step_ids, "passed", "failed"])
    for result in results:
        if isinstance(result, HostFailure):
            writer.writerow([result.host, *[result.status] * len(step_ids), "", ""])
            continue
        statuses = {step.id: step.status for step in result.steps}
        summary = result.summary
        writer.writerow([result.host, *(statuses.get(step_id, "") for step_id in step_ids),
                         summary["passed"], summary["failed"]])
    return buffer.getvalue()


FORMATS = (".json", ".xml", ".csv")


def report_format(path: str | Path) -> str:
    """The report format a path asks for by its suffix; a usage error for any other, said early."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"Unknown report format for '{path}'.",
                         "Use a path ending in .json, .xml (JUnit) or .csv.")
    return suffix


def write_report(path: str | Path, lab: str, results: list[LabReport | HostFailure], *,
                 whole_class: bool = False) -> None:
    """Write the report the path's suffix asks for; readers never see a half-written file.

    JSON for one host is that host's report, unless `whole_class` asks for the class format (an
    inventory of one student is still a class).
    """
    target = Path(path)
    suffix = report_format(path)
    if suffix == ".json":
        if not whole_class and len(results) == 1 and isinstance(results[0], LabReport):
            data = report_json(results[0])
        else:
            data = class_report_json(lab, results)
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    elif suffix == ".xml":
        text = junit_xml(lab, results)
    else:
        text = grade_csv(results)
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
