"""The class page: one self-contained HTML file of a class check, for the instructor's browser.

A students × steps grid coloured by status, where each cell opens its checks' message, hint and
evidence; per-step counts of where students are stuck; machines without a report listed apart.
Rendered from templates/class-page.html.j2 with autoescape on, since evidence is a student's
program output; the CSS and the sorting script are inline, so the page opens without a network.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .model import PASS, CheckResult, LabReport
from .resources import resource
from .templates import render_html

# Terminal escapes and other control characters from command output: not text a page can show.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _printable(text: str) -> str:
    return _CONTROL.sub("\ufffd", _ESCAPES.sub("", text))


@dataclass
class Cell:
    """One student's step: its status and the checks that decided it."""

    step: str
    status: str
    checks: list[CheckResult] = field(default_factory=list)


@dataclass
class Row:
    """One student: `reached` is how many steps pass before the first that does not (their
    progress), `stuck_at` that first step ("" when every step passes)."""

    name: str
    cells: list[Cell]
    reached: int
    stuck_at: str
    checks_passed: int
    checks_total: int


def step_ids(results: list) -> list[str]:
    """The steps of a class's reports, in the lab's order, each once."""
    ids: list[str] = []
    for result in results:
        if isinstance(result, LabReport):
            ids += [step.id for step in result.steps if step.id not in ids]
    return ids


def progress(report: LabReport, steps: list[str]) -> tuple[int, str]:
    """How many of `steps` pass in a row from the first, and the first that does not ("" if none)."""
    statuses = {step.id: step.status for step in report.steps}
    for index, step_id in enumerate(steps):
        if statuses.get(step_id) != PASS:
            return index, step_id
    return len(steps), ""


def _row(report: LabReport, steps: list[str]) -> Row:
    statuses = {step.id: step.status for step in report.steps}
    cells = []
    for step_id in steps:
        checks = [CheckResult(check.id, check.step, check.status, _printable(check.message),
                              _printable(check.hint), check.duration_s, _printable(check.detail))
                  for check in report.checks if check.step == step_id]
        cells.append(Cell(step_id, statuses.get(step_id, ""), checks))
    reached, stuck_at = progress(report, steps)
    return Row(report.host, cells, reached, stuck_at, report.summary["passed"], len(report.checks))


def class_html(lab: str, results: list, generated: datetime | None = None) -> str:
    """The class page for `results` (LabReports and HostFailures, in inventory order) as HTML text.

    `generated` (default: now, UTC) is the time the page says it shows.
    """
    steps = step_ids(results)
    rows = [_row(result, steps) for result in results if isinstance(result, LabReport)]
    failures = [result for result in results if not isinstance(result, LabReport)]
    stuck = {step_id: sum(row.stuck_at == step_id for row in rows) for step_id in steps}
    passed = {step_id: sum(cell.step == step_id and cell.status == PASS for row in rows for cell in row.cells)
              for step_id in steps}
    # The page's own script is the only one its Content-Security-Policy lets run (by its hash), so
    # even a student's output that slipped past escaping could not run as a script.
    script = resource("templates", "class-page.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    when = (generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    return render_html("class-page.html.j2", {
        "lab": lab, "steps": steps, "rows": rows, "failures": failures, "stuck": stuck, "passed": passed,
        "done": sum(not row.stuck_at for row in rows), "generated": when,
        "script": script, "script_hash": f"sha256-{digest}",
    })
