"""The class page (`--report class.html`) in a real headless Chromium: it loads without script
errors or network, shows every student, sorts, opens each cell, and shows hostile output as text.

The class here is built from report records, so that its content (a `<script>` in a student's output,
a student at each point of the lab) is exactly known; tests/integration/test_class_check.py opens
the page a real class run over loopback sshd writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from labs.model import CheckResult, LabReport, StepResult
from labs.reports import HostFailure, write_report
from tests.browser import chromium, open_page, script_errors

STEPS = ("rootfs", "busybox", "symlinks", "container-script")
HOSTILE = "<script>document.title = 'ran'; console.error('ran')</script><img src=x onerror=\"document.title='ran'\">"


def student(name: str, statuses: str, detail: str = "no file rootfs/bin/busybox") -> LabReport:
    """A student's report; `statuses` has a letter per step (p pass, f fail, s skip, e error)."""
    words = {"p": "pass", "f": "fail", "s": "skip", "e": "error"}
    steps, checks = [], []
    for step_id, letter in zip(STEPS, statuses):
        status = words[letter]
        steps.append(StepResult(step_id, status, 0.1))
        message = {"fail": f"{step_id} is not done.", "skip": "Skipped: an earlier step is not done.",
                   "error": "The check could not run."}.get(status, "")
        checks.append(CheckResult(f"{step_id}.done", step_id, status, message,
                                  f"Do the {step_id} step." if status == "fail" else "", 0.05,
                                  detail if status == "fail" else f"{step_id} looks right"))
    return LabReport("chroot", name, "ssh", "2026-11-30T09:00:00+00:00", mode="check", duration_s=0.5,
                     steps=steps, checks=checks)


CLASS = [student("cy", "ppfs"), student("ada", "pppp"), student("eve", "pfss", detail=HOSTILE + "\nsecond line"),
         student("bob", "pfss"), student("dan", "ppps"), student("fay", "ess"),
         HostFailure("gus", "Cannot connect to root@10.0.0.8:22: No route to host."),
         HostFailure("hal", "A command on hal did not finish within 60s.", "error")]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("page") / "class.html"
    write_report(path, "chroot", CLASS, whole_class=True)
    return path


def names(session) -> list[str]:
    return [row.get_attribute("data-name") for row in session.find_elements(By.CSS_SELECTOR, "#grid tbody tr")]


def text(element) -> str:
    """An element's text as written (CSS may show it in capitals), spaces collapsed."""
    return " ".join(element.get_attribute("textContent").split())


def test_the_page_loads_offline_without_script_errors_and_shows_every_student(page):
    with chromium() as session:
        open_page(session, page)
        assert script_errors(session) == []
        # Nothing fetched but the page itself: no stylesheet, font, image or script from elsewhere.
        assert session.execute_script("return performance.getEntriesByType('resource').length") == 0
        assert names(session) == ["cy", "ada", "eve", "bob", "dan", "fay"]
        apart = session.find_elements(By.CSS_SELECTOR, "ul.failures li")
        assert [item.get_attribute("data-name") for item in apart] == ["gus", "hal"]
        assert text(apart[0]) == "gus — unreachable: Cannot connect to root@10.0.0.8:22: No route to host."
        assert text(apart[1]) == "hal — error: A command on hal did not finish within 60s."
        cells = session.find_elements(By.CSS_SELECTOR, "#grid tbody tr[data-name='cy'] td.cell")
        assert [cell.get_attribute("class").split()[1] for cell in cells] == ["pass", "pass", "fail", "skip"]
        assert "stuck" in cells[2].get_attribute("class").split()
        stuck = {cell.get_attribute("data-step"): cell.text
                 for cell in session.find_elements(By.CSS_SELECTOR, "tr.stuck-counts td[data-step]")}
        # First step not done: bob and eve at busybox, cy symlinks, dan container-script, fay rootfs.
        assert stuck == {"rootfs": "1", "busybox": "2", "symlinks": "1", "container-script": "1"}
        assert session.find_element(By.CSS_SELECTOR, "tr.stuck-counts td:last-child").text == "1 done"
        assert "6 machines" not in session.find_element(By.CSS_SELECTOR, ".summary").text
        assert "8 machines" in session.find_element(By.CSS_SELECTOR, ".summary").text
        assert script_errors(session) == []


def test_sorting_by_progress_and_by_name(page):
    with chromium() as session:
        open_page(session, page)
        progress = session.find_element(By.CSS_SELECTOR, "button[data-sort='progress']")
        progress.click()
        # Least progress first (steps passed in a row, then checks passed, then the name).
        assert names(session) == ["fay", "bob", "eve", "cy", "dan", "ada"]
        assert session.find_element(By.CSS_SELECTOR, "th[data-key='progress']").get_attribute("aria-sort") == "ascending"
        progress.click()
        assert names(session) == ["ada", "dan", "cy", "eve", "bob", "fay"]
        session.find_element(By.CSS_SELECTOR, "button[data-sort='name']").click()
        assert names(session) == ["ada", "bob", "cy", "dan", "eve", "fay"]
        assert session.find_element(By.CSS_SELECTOR, "th[data-key='progress']").get_attribute("aria-sort") == "none"
        assert script_errors(session) == []


def test_a_cell_opens_its_checks_and_hostile_output_stays_text(page, tmp_path):
    with chromium() as session:
        open_page(session, page)
        cell = session.find_element(By.CSS_SELECTOR, "tr[data-name='eve'] td[data-step='busybox']")
        panel = cell.find_element(By.CSS_SELECTOR, ".panel")
        assert not panel.is_displayed()
        cell.find_element(By.TAG_NAME, "summary").click()
        assert panel.is_displayed()
        assert "busybox is not done." in panel.text and "Hint: Do the busybox step." in panel.text
        evidence = panel.find_element(By.CSS_SELECTOR, "pre.evidence")
        assert evidence.get_attribute("textContent") == HOSTILE + "\nsecond line"
        # Shown as text, never run: no element came from it and the title is the page's own.
        assert session.find_elements(By.CSS_SELECTOR, "pre.evidence script, pre.evidence img") == []
        assert session.title == "chroot: class check"
        # Opening another cell closes the first (in the "toggle" event, which the browser fires a
        # moment after the click: waited for, under a limit against a hang).
        session.find_element(By.CSS_SELECTOR, "tr[data-name='cy'] td[data-step='symlinks'] summary").click()
        WebDriverWait(session, 30).until(lambda _: not panel.is_displayed())
        assert script_errors(session) == []
        session.save_screenshot(str(tmp_path / "class-page.png"))
        assert (tmp_path / "class-page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
