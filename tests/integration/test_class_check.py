"""`check.chroot --inventory` against real sshd servers on loopback, each serving a student's state.

Each "student" is a directory prepared by the test (the inventory's workdir); the checks reach it over
SSH exactly as they would reach a VM, which shows they do not assume a VM of ours.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from labs.chroot import container_sh_values
from labs.cli import DEFAULTS
from labs.templates import render
from tests import cli
from tests.browser import chromium, open_page, script_errors
from tests.sshd import free_port, keygen, start_sshd
from tests.students import serve_students, write_inventory



def prepare(home: Path, state: str) -> None:
    """Lay out a student's work directory in the given state."""
    home.mkdir(parents=True)
    rootfs = home / "rootfs"
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin"):
        (rootfs / directory).mkdir(parents=True)
    if state == "rootfs-only":
        return
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    subprocess.run(["chroot", str(rootfs), "/bin/busybox", "--install", "-s"], check=True)
    settings = {"container_sh": DEFAULTS["chroot"]["container_sh"]}
    script = home / "container.sh"
    script.write_text(render("container.sh.j2", container_sh_values(settings, "/bin/sh"), "chroot.container_sh"))
    script.chmod(0o755 if state != "script-not-executable" else 0o644)


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    base = tmp_path_factory.mktemp("class")
    client_key = keygen(base / "teacher_key")
    servers, hosts = serve_students(base, client_key, {"ada": "solved", "bob": "rootfs-only",
                                                       "cy": "script-not-executable"}, prepare)
    hosts.append(f"  - {{name: dead, host: 127.0.0.1, port: {free_port()}}}")
    # This student's machine only accepts a key of its own, not the teacher's.
    servers.append(start_sshd(base / "wrongkey" / "sshd", user="root"))
    hosts.append(f"  - {{name: wrongkey, host: 127.0.0.1, port: {servers[-1].port}}}")
    inventory = write_inventory(base / "class.yaml", client_key, hosts)
    yield base, inventory
    for server in servers:
        server.stop()


def run_check(base: Path, inventory: Path, report: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, INVOKE_VM_STATE_DIR=str(base / "state"), COLUMNS="160")
    return cli.labkit(env, "check.chroot", "--inventory", str(inventory), "--parallel", "4", "--report", str(report),
                      timeout=300)


def test_class_check_reports_every_student(classroom):
    base, inventory = classroom
    result = run_check(base, inventory, base / "class.json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads((base / "class.json").read_text())
    by_host = {entry["host"]: entry for entry in report["hosts"]}
    assert set(by_host) == {"ada", "bob", "cy", "dead", "wrongkey"}
    assert {c["status"] for c in by_host["ada"]["checks"]} == {"pass"}
    bob = {s["id"]: s["status"] for s in by_host["bob"]["steps"]}
    assert bob["rootfs"] == "pass" and bob["busybox"] == "fail" and bob["proc"] == "skip"
    cy = [c["id"] for c in by_host["cy"]["checks"] if c["status"] == "fail"]
    assert cy == ["container-script.executable"]
    assert by_host["dead"]["status"] == "unreachable" and "Cannot connect" in by_host["dead"]["message"]
    assert by_host["wrongkey"]["status"] == "unreachable" and "answered and refused the login" in by_host["wrongkey"]["message"]
    assert report["summary"]["unreachable"] == 2
    for name in ("ada", "bob", "cy", "dead", "wrongkey"):
        assert name in result.stdout


def test_junit_and_csv_agree_with_json(classroom):
    base, inventory = classroom
    run_check(base, inventory, base / "class.xml")
    run_check(base, inventory, base / "class.csv")
    run_check(base, inventory, base / "class.json")
    report = json.loads((base / "class.json").read_text())
    suites = {suite.get("name"): suite for suite in ElementTree.parse(base / "class.xml").getroot().iter("testsuite")}
    assert set(suites) == {"ada", "bob", "cy", "dead", "wrongkey"}
    assert suites["ada"].get("failures") == "0"
    assert int(suites["cy"].get("failures")) == 1
    rows = {row["host"]: row for row in csv.DictReader((base / "class.csv").open())}
    assert rows["ada"]["overlay"] == "3" and rows["bob"]["busybox"] == "0"
    assert rows["dead"]["rootfs"] == "" and rows["dead"]["status"] == "unreachable"
    ada = next(h for h in report["hosts"] if h["host"] == "ada")
    assert float(rows["ada"]["total"]) == ada["summary"]["points"]


def test_class_page_of_a_real_class_run_in_chromium(classroom):
    """`--report class.html` over the loopback class, opened in headless Chromium; its screenshot
    (saved as class-page.png in the test's directory) is the one of docs/class-page.md."""
    base, inventory = classroom
    result = run_check(base, inventory, base / "class.html")
    assert result.returncode == 1, result.stdout + result.stderr
    with chromium(width=1200, height=760) as session:
        open_page(session, base / "class.html")
        assert script_errors(session) == []
        rows = session.find_elements(By.CSS_SELECTOR, "#grid tbody tr")
        assert [row.get_attribute("data-name") for row in rows] == ["ada", "bob", "cy"]
        apart = [item.get_attribute("data-name") for item in session.find_elements(By.CSS_SELECTOR, "ul.failures li")]
        assert apart == ["dead", "wrongkey"]
        stuck = {cell.get_attribute("data-step"): cell.text
                 for cell in session.find_elements(By.CSS_SELECTOR, "tr.stuck-counts td[data-step]")}
        assert stuck["busybox"] == "1" and stuck["container-script"] == "1" and stuck["rootfs"] == "0"
        cell = session.find_element(By.CSS_SELECTOR, "tr[data-name='cy'] td[data-step='container-script']")
        assert "fail" in cell.get_attribute("class").split()
        cell.find_element(By.TAG_NAME, "summary").click()
        panel = cell.find_element(By.CSS_SELECTOR, ".panel")
        assert panel.is_displayed() and "container-script.executable" in panel.text
        session.find_element(By.CSS_SELECTOR, "button[data-sort='progress']").click()
        assert [row.get_attribute("data-name") for row in session.find_elements(By.CSS_SELECTOR, "#grid tbody tr")] == \
            ["bob", "cy", "ada"]
        assert script_errors(session) == []
        session.save_screenshot(str(base / "class-page.png"))
