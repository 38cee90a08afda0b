"""Report files: the JSON format of design.md, JUnit that CI servers parse, and the CSV grade sheet."""

import csv
import json
import xml.etree.ElementTree as ET

import pytest

from labs.errors import UsageError
from labs.model import CheckResult, LabReport, StepResult
from labs.reports import HostFailure, class_report_json, grade_csv, junit_xml, report_json, write_report

STARTED = "2026-01-01T10:00:00+00:00"


def alice() -> LabReport:
    """A run with one check of each status, durations with more decimals than a report keeps."""
    return LabReport(
        "chroot", "alice@10.0.0.5:22", "ssh", STARTED, mode="check", duration_s=3.21456,
        steps=[StepResult("rootfs", "pass", 0.2104, already_done=True, max_points=1),
               StepResult("busybox", "fail", 1.5, max_points=2.5, notes=["busybox from the target's own /usr/bin/busybox"]),
               StepResult("proc", "skip", max_points=1)],
        checks=[
            CheckResult("rootfs.dirs", "rootfs", "pass", "rootfs/bin is missing", "Run mkdir", 0.0312),
            CheckResult("busybox.runs", "busybox", "fail", "busybox <does not> run & exits 127",
                        "Download it \"again\"", 0.5, "sh: \x1b[31mnot found\x1b[0m"),
            CheckResult("busybox.sha", "busybox", "error", "ssh: connection reset", "", 1.0),
            CheckResult("proc.mounted", "proc", "skip", "needs busybox"),
        ],
    )


def bob() -> LabReport:
    return LabReport("chroot", "bob@10.0.0.6:22", "ssh", STARTED, mode="check", duration_s=1.0,
                     steps=[StepResult("rootfs", "pass", 0.3, max_points=1), StepResult("busybox", "pass", 0.4, max_points=1)],
                     checks=[CheckResult("rootfs.dirs", "rootfs", "pass", duration_s=0.1),
                             CheckResult("busybox.runs", "busybox", "pass", duration_s=0.2)])


CAROL = HostFailure("carol@10.0.0.7:22", "ssh: connect to host 10.0.0.7 port 22: No route to host")
DAN = HostFailure("dan@10.0.0.8:22", "A command on dan did not finish within 60s.", "error")


def test_report_json_has_the_design_format():
    data = report_json(alice())
    assert {"lab", "host", "provider", "started", "duration_s", "steps", "checks", "summary"} <= data.keys()
    assert (data["lab"], data["host"], data["provider"], data["started"]) == (
        "chroot", "alice@10.0.0.5:22", "ssh", STARTED)
    assert data["duration_s"] == 3.215
    assert data["steps"][0] == {"id": "rootfs", "status": "pass", "duration_s": 0.21, "already_done": True,
                                "points": 1, "max_points": 1, "notes": []}
    assert data["steps"][1]["points"] == 0 and data["steps"][1]["max_points"] == 2.5
    assert data["steps"][1]["notes"] == ["busybox from the target's own /usr/bin/busybox"]
    for step in data["steps"]:
        assert {"id", "status", "duration_s"} <= step.keys()
        assert isinstance(step["duration_s"], float)
    assert data["checks"][0] == {"id": "rootfs.dirs", "step": "rootfs", "status": "pass",
                                 "message": "rootfs/bin is missing", "hint": "Run mkdir",
                                 "duration_s": 0.031, "detail": ""}
    assert [check["status"] for check in data["checks"]] == ["pass", "fail", "error", "skip"]
    assert data["summary"] == {"passed": 1, "failed": 1, "skipped": 1, "errors": 1, "points": 1, "max_points": 4.5}
    assert json.loads(json.dumps(data)) == data


def test_class_report_json_sums_hosts_and_lists_the_unreachable():
    data = class_report_json("chroot", [alice(), bob(), CAROL])
    assert data["lab"] == "chroot"
    assert data["hosts"][0] == report_json(alice())
    assert data["hosts"][1]["host"] == "bob@10.0.0.6:22"
    assert data["hosts"][2] == {"host": CAROL.host, "status": "unreachable", "message": CAROL.message}
    assert data["summary"] == {"passed": 3, "failed": 1, "skipped": 1, "errors": 1, "points": 3, "max_points": 6.5,
                               "hosts": 3, "unreachable": 1, "host_errors": 0}


def test_a_host_reached_whose_checks_did_not_finish_is_an_error_not_unreachable():
    data = class_report_json("chroot", [bob(), CAROL, DAN])
    assert data["hosts"][2] == {"host": DAN.host, "status": "error", "message": DAN.message}
    assert (data["summary"]["unreachable"], data["summary"]["host_errors"]) == (1, 1)
    assert not CAROL.reached and DAN.reached
    suites = ET.fromstring(junit_xml("chroot", [CAROL, DAN])).findall("testsuite")
    assert [suite.find("testcase").get("name") for suite in suites] == ["reachable", "checks-completed"]
    assert [suite.find("testcase/error").get("type") for suite in suites] == ["unreachable", "error"]
    rows = list(csv.reader(grade_csv([bob(), DAN]).splitlines()))
    assert rows[2] == ["dan@10.0.0.8:22", "", "", "", "2", "error"]


def test_junit_xml_parses_and_counts_agree_with_the_summary():
    root = ET.fromstring(junit_xml("chroot", [alice(), bob()]))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [suite.get("name") for suite in suites] == ["alice@10.0.0.5:22", "bob@10.0.0.6:22"]
    for suite, report in zip(suites, [alice(), bob()]):
        summary = report.summary
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases) == len(report.checks)
        assert int(suite.get("failures")) == summary["failed"] == len(suite.findall("testcase/failure"))
        assert int(suite.get("errors")) == summary["errors"] == len(suite.findall("testcase/error"))
        assert int(suite.get("skipped")) == summary["skipped"] == len(suite.findall("testcase/skipped"))
        assert float(suite.get("time")) == pytest.approx(report.duration_s, abs=0.001)
    assert root.get("tests") == "6" and root.get("failures") == "1" and root.get("errors") == "1"


def test_junit_testcases_carry_step_message_and_hint():
    suite = ET.fromstring(junit_xml("chroot", [alice()])).find("testsuite")
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert list(cases) == ["rootfs.dirs", "busybox.runs", "busybox.sha", "proc.mounted"]
    assert cases["busybox.runs"].get("classname") == "chroot.busybox"
    assert cases["rootfs.dirs"].get("time") == "0.031"
    failure = cases["busybox.runs"].find("failure")
    assert failure.get("message") == "busybox <does not> run & exits 127"
    assert "hint: Download it \"again\"" in failure.text
    assert "not found" in failure.text and "\x1b" not in failure.text
    assert cases["busybox.sha"].find("error").get("message") == "ssh: connection reset"
    assert cases["proc.mounted"].find("skipped") is not None
    assert list(cases["rootfs.dirs"]) == []


def test_junit_unreachable_host_is_a_suite_with_one_error():
    suite = ET.fromstring(junit_xml("chroot", [CAROL])).find("testsuite")
    assert suite.get("name") == CAROL.host
    assert (suite.get("tests"), suite.get("errors"), suite.get("failures")) == ("1", "1", "0")
    error = suite.find("testcase/error")
    assert error.get("message") == CAROL.message


def test_write_json_for_one_host_and_for_a_class(tmp_path):
    single = tmp_path / "reports" / "nested" / "alice.json"
    write_report(single, "chroot", [alice()])
    assert json.loads(single.read_text()) == report_json(alice())
    whole = tmp_path / "class.json"
    write_report(str(whole), "chroot", [alice(), CAROL])
    assert json.loads(whole.read_text()) == class_report_json("chroot", [alice(), CAROL])
    write_report(whole, "chroot", [alice()], whole_class=True)
    assert json.loads(whole.read_text()) == class_report_json("chroot", [alice()])


def test_write_junit(tmp_path):
    path = tmp_path / "junit.xml"
    write_report(path, "chroot", [alice(), bob(), CAROL])
    assert len(ET.parse(path).getroot().findall("testsuite")) == 3


def test_write_csv_has_a_row_per_host(tmp_path):
    path = tmp_path / "grades.csv"
    write_report(path, "chroot", [alice(), bob(), CAROL])
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["host", "rootfs", "busybox", "proc", "total", "max_points", "status"],
        ["alice@10.0.0.5:22", "1", "0", "0", "1", "4.5", "fail"],
        ["bob@10.0.0.6:22", "1", "1", "", "2", "2", "pass"],
        ["carol@10.0.0.7:22", "", "", "", "", "4.5", "unreachable"],
    ]


def test_write_replaces_an_existing_report_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    write_report(path, "chroot", [bob()])
    assert json.loads(path.read_text())["host"] == "bob@10.0.0.6:22"
    assert [entry.name for entry in tmp_path.iterdir()] == ["report.json"]


def test_unknown_suffix_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError) as raised:
        write_report(tmp_path / "out" / "x.txt", "chroot", [alice()])
    assert raised.value.message == f"Unknown report format for '{tmp_path / 'out' / 'x.txt'}'."
    assert raised.value.hint == "Use a path ending in .json, .xml (JUnit), .csv or .html, or name a format with --format."
    assert not (tmp_path / "out").exists()
