"""`check.chroot --inventory` at class scale: 52 real sshd servers on loopback, each with its own host
key and authorized key and serving one student's work directory, plus machines that are dead,
silent, refuse the key, changed their host key, hang, or have no shell. Every row of the class
table is asserted, and the JSON, JUnit and CSV reports of the same runs must agree with it.

The three report formats come from three class checks run side by side (each with its own pinned
host keys), which also shows that concurrent class checks do not disturb each other.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from labs import chroot
from tests import cli
from tests.sshd import free_port, keygen, start_sshd
from tests.students import EXPECTED, STEPS, expected_steps, prepare, staged_busybox

PER_STATE = {state: 3 for state in EXPECTED} | {"solved": 16}
MARKS = {"pass": "✓", "fail": "✗", "error": "!", "skip": "–"}
FORMATS = ("json", "xml", "csv")
CHECKS = str(sum(len(step.checks) for step in chroot.LAB.steps))  # a solved student passes them all
CONNECT_TIMEOUT, CHECK_TIMEOUT = 5, 10

# Machines without a report: (status, words its message must hold).
FAILURES = {
    "dead-1": ("unreachable", "Cannot connect"),
    "dead-2": ("unreachable", "Cannot connect"),
    "wrong-key-1": ("unreachable", "answered and refused the login"),
    "wrong-key-2": ("unreachable", "answered and refused the login"),
    "silent": ("unreachable", "No SSH server answered"),
    "changed-host-key": ("unreachable", "is not the one pinned"),
    "missing-key": ("unreachable", "does not exist"),
    "hung": ("error", f"did not finish within {CHECK_TIMEOUT}s"),
}
# Machines reached whose checks tell what is wrong: (step statuses, words of the first problem).
MISCONFIGURED = {
    "no-shell": ({"rootfs": "error"} | {step: "skip" for step in STEPS[1:]}, "rootfs.dirs: The check did not finish"),
    "no-workdir": ({"rootfs": "fail"} | {step: "skip" for step in STEPS[1:]}, "rootfs.dirs: The work directory"),
}


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    """The class: (inventory, expected rows by student, seeded state directories), servers running."""
    base = tmp_path_factory.mktemp("class-scale")
    busybox = staged_busybox(base)
    students = [(f"{state}-{number}", state) for state, count in PER_STATE.items() for number in range(1, count + 1)]
    for name, state in students:
        prepare(base / name / "home", state, busybox)
    configs = {name: "" for name, _ in students} | {
        "wrong-key-1": "", "wrong-key-2": "", "changed-host-key": "", "no-workdir": "",
        "hung": "ForceCommand exec sleep 40\n",
        "no-shell": "ForceCommand echo 'This account is currently not available.'; exit 1\n",
    }
    with ThreadPoolExecutor(16) as pool:
        servers = dict(zip(configs, pool.map(
            lambda name: start_sshd(base / name / "sshd", user="root", extra_config=configs[name]), configs)))
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nothing ever speaks SSH
    try:
        hosts = [{"name": name, "port": server.port, "key": str(server.client_key),
                  "workdir": str(base / name / "home")} for name, server in servers.items()]
        for host in hosts:
            if host["name"].startswith("wrong-key"):
                host["key"] = str(keygen(base / f"{host['name']}-not-authorized"))
            elif host["name"] == "no-workdir":
                host["workdir"] = str(base / "nobody" / "home")
            elif host["name"] in ("hung", "no-shell", "changed-host-key"):
                host["workdir"] = str(base / "solved-1" / "home")
        hosts += [{"name": "dead-1", "port": free_port()}, {"name": "dead-2", "port": free_port()},
                  {"name": "silent", "port": silent.getsockname()[1]},
                  {"name": "missing-key", "port": free_port(), "key": str(base / "no-such-key")}]
        # The machines that wait for their timeouts first, so that their waits overlap the others' checks.
        hosts.sort(key=lambda host: host["name"] not in ("hung", "silent"))
        inventory = base / "class.yaml"
        inventory.write_text("defaults: {user: root, host: 127.0.0.1}\nhosts:\n" +
                             "".join(f"  - {json.dumps(host)}\n" for host in hosts))
        expected = {name: expected_steps(state) for name, state in students}
        expected |= {name: steps for name, (steps, _) in MISCONFIGURED.items()}
        states = []
        for run in FORMATS:
            state = base / f"state-{run}"
            state.mkdir()
            # A pin from before the machine was recreated: its key must now be refused.
            kind, key = keygen(base / f"old-host-key-{run}").with_suffix(".pub").read_text().split()[:2]
            (state / "known_hosts").write_text(f"[127.0.0.1]:{servers['changed-host-key'].port} {kind} {key}\n")
            states.append(state)
        yield inventory, expected, states
    finally:
        silent.close()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda server: server.stop(), servers.values()))


def check_class(inventory: Path, state: Path, report: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, INVOKE_VM_STATE_DIR=str(state), COLUMNS="250",
               INVOKE_TARGET_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT), INVOKE_TARGET_CHECK_TIMEOUT=str(CHECK_TIMEOUT))
    return subprocess.Popen(cli.inv("check.chroot", "--inventory", str(inventory), "--report", str(report), *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env=env)


@pytest.fixture(scope="module")
def runs(classroom):
    """The three class checks, run side by side: {format: (exit status, stdout, report path)}."""
    inventory, _, states = classroom
    started = {}
    for run, state in zip(FORMATS, states):
        report = state.parent / f"class.{run}"
        started[run] = (check_class(inventory, state, report, "--parallel", "8"), report)
    results = {}
    for run, (process, report) in started.items():
        stdout, stderr = process.communicate(timeout=300)
        results[run] = (process.returncode, stdout + stderr, report)
    return results


def table_rows(output: str) -> dict[str, list[str]]:
    """The class table's body, cell by cell, keyed by student."""
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines() if line.startswith("│")]
    return {row[0]: row[1:] for row in rows}


def test_every_student_has_a_correct_row(classroom, runs):
    _, expected, _ = classroom
    for run, (status, output, _) in runs.items():
        assert status == 1, output
        rows = table_rows(output)
        assert len(rows) == len(expected) + len(FAILURES) == 56, output
        for name, steps in expected.items():
            marks = [MARKS[steps[step]] for step in STEPS]
            assert rows[name][:len(STEPS)] == marks, (run, name, rows[name])
            passed, total = rows[name][len(STEPS)].split("/")
            problem = rows[name][len(STEPS) + 1]
            if name.startswith("solved"):
                assert (passed, total, problem) == (CHECKS, CHECKS, "")
            else:
                assert int(passed) < int(total) == int(CHECKS) and problem
        for name, (kind, words) in FAILURES.items():
            assert rows[name][:len(STEPS) + 1] == [""] * len(STEPS) + ["—"], (run, name, rows[name])
            assert rows[name][-1].startswith(f"{kind}: ") and words in rows[name][-1], (run, name, rows[name])
        for name, (_, words) in MISCONFIGURED.items():
            assert rows[name][-1].startswith(words), (run, name, rows[name])
        assert "16 of 56 machines passed every check, 32 failed a check, 7 could not be reached, " \
               "1 did not finish the checks." in output


def test_every_machine_is_logged_once_as_it_finishes(classroom, runs):
    _, expected, _ = classroom
    _, output, _ = runs["json"]
    logged = [line.split()[1] for line in output.splitlines() if line[:2] in ("✓ ", "✗ ", "! ")]
    assert sorted(logged) == sorted([*expected, *FAILURES])


def test_json_report_agrees_with_the_table(runs):
    _, output, path = runs["json"]
    rows = table_rows(output)
    report = json.loads(path.read_text())
    assert report["lab"] == "chroot" and len(report["hosts"]) == len(rows)
    for host in report["hosts"]:
        row = rows[host["host"]]
        if "steps" in host:
            assert [MARKS[step["status"]] for step in host["steps"]] == row[:len(STEPS)]
            assert f"{host['summary']['passed']}/{len(host['checks'])}" == row[len(STEPS)]
            problem = next((c for c in host["checks"] if c["status"] in ("fail", "error")), None)
            assert row[-1] == (f"{problem['id']}: {problem['message']}" if problem else "")
        else:
            assert row[-1].rstrip("…") in f"{host['status']}: {host['message']}"
    assert (report["summary"]["hosts"], report["summary"]["unreachable"], report["summary"]["host_errors"]) == (56, 7, 1)


def test_junit_report_agrees_with_the_table(runs):
    _, output, path = runs["xml"]
    rows = table_rows(output)
    suites = {suite.get("name"): suite for suite in ElementTree.parse(path).getroot().iter("testsuite")}
    assert set(suites) == set(rows)
    for name, suite in suites.items():
        row = rows[name]
        if row[len(STEPS)] == "—":
            error = suite.find("testcase/error")
            assert row[-1].startswith(f"{error.get('type')}: ") and row[-1].rstrip("…")[len(error.get("type")) + 2:] \
                in error.get("message")
            continue
        passed, total = map(int, row[len(STEPS)].split("/"))
        cases = suite.findall("testcase")
        assert len(cases) == int(suite.get("tests")) == total
        assert sum(not list(case) for case in cases) == passed
        failed_steps = {case.get("classname").split(".", 1)[1] for case in cases if case.find("failure") is not None}
        assert failed_steps == {step for step, mark in zip(STEPS, row) if mark == "✗"}
        errored_steps = {case.get("classname").split(".", 1)[1] for case in cases if case.find("error") is not None}
        assert errored_steps == {step for step, mark in zip(STEPS, row) if mark == "!"}


def test_csv_report_agrees_with_the_table(runs):
    _, output, path = runs["csv"]
    rows = table_rows(output)
    with path.open(newline="") as handle:
        sheet = {line["host"]: line for line in csv.DictReader(handle)}
    assert set(sheet) == set(rows)
    for name, line in sheet.items():
        row = rows[name]
        if row[len(STEPS)] == "—":
            status = row[-1].split(":", 1)[0]
            assert [line[step] for step in STEPS] == [""] * len(STEPS) and line["status"] == status
            continue
        earned = {step: float(line[step]) for step in STEPS}
        assert [earned[step] > 0 for step in STEPS] == [mark == "✓" for mark in row[:len(STEPS)]]
        assert float(line["total"]) == sum(earned.values())
        assert (line["status"] == "pass") == (not any(mark in ("✗", "!") for mark in row[:len(STEPS)]))


def test_exit_status_3_only_when_no_machine_could_be_reached(classroom, tmp_path):
    inventory, _, _ = classroom
    hosts = [line for line in inventory.read_text().splitlines()
             if any(f'"{name}"' in line for name in ("dead-1", "dead-2", "wrong-key-1", "missing-key"))]
    nobody = tmp_path / "nobody.yaml"
    nobody.write_text("defaults: {user: root, host: 127.0.0.1}\nhosts:\n" + "\n".join(hosts) + "\n")
    process = check_class(nobody, tmp_path / "state", tmp_path / "nobody.json")
    output = "".join(process.communicate(timeout=120))
    assert process.returncode == 3, output
    assert "Error: no machine of the inventory could be reached." in output
    assert json.loads((tmp_path / "nobody.json").read_text())["summary"]["unreachable"] == 4
