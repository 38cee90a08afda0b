"""Reporters that draw a run as it happens: rich for a terminal, plain lines for CI logs and pipes."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from .model import ERROR, FAIL, PASS, SKIP, CheckResult, Lab, LabReport, Step, StepResult
from .reporting import Reporter

# How many command and output lines the live panel keeps on screen; the final panel shows them all.
LIVE_TAIL = 15

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")


def make_reporter(console: Console, demo: bool = False) -> Reporter:
    """A live display when a person is watching, plain lines when the output goes to a log.

    In demo mode each step opens with the workshop's explanation of it.
    """
    if console.is_terminal:
        return RichReporter(console, demo)
    return PlainReporter(console.file, demo)


def duration(seconds: float, digits: int = 2) -> str:
    """`0.21s`, or `2m05s` once a minute has passed, where decimals stop meaning anything."""
    if seconds < 60:
        return f"{seconds:.{digits}f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def verdict(report: LabReport) -> str:
    """The one line a run ends with, the same in every reporter so logs and terminals agree."""
    counts = report.summary
    return (f"{report.lab} on {report.host}: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped, {counts['errors']} errors in {duration(report.duration_s, 1)}")


def _step_label(result: StepResult, mode: str) -> str:
    if result.status == PASS:
        if result.already_done:
            return "already done"
        return "passed" if mode == "check" else "done"
    return {FAIL: "failed", ERROR: "error", SKIP: "skipped"}.get(result.status, result.status)


class PlainReporter:
    """One self-contained line per event, prefixed with the step id, so interleaved or grepped logs stay clear."""

    def __init__(self, stream: TextIO, demo: bool = False):
        self.stream = stream
        self.demo = demo
        self._mode = "solve"
        self._titles: dict[str, str] = {}

    def _line(self, prefix: str, text: str) -> None:
        # Flush every line so CI shows progress while a long step runs.
        self.stream.write(f"[{prefix}] {text}\n" if prefix else f"{text}\n")
        self.stream.flush()

    def lab_started(self, lab: Lab, steps: list[Step], host: str, mode: str) -> None:
        self._mode = mode
        self._titles = {step.id: step.title for step in steps}
        verb = "checking" if mode == "check" else "running"
        self._line("", f"{verb} {lab.name} ({lab.title}) on {host}: {len(steps)} steps")

    def step_started(self, step: Step) -> None:
        verb = "checking" if self._mode == "check" else "running"
        self._line(step.id, f"{verb}: {step.title}")
        if self.demo:
            self._line(step.id, f"why: {step.explanation}")

    def command(self, step: Step, script: str) -> None:
        for index, line in enumerate(script.splitlines() or [""]):
            self._line(step.id, ("$ " if index == 0 else "  ") + line)

    def output(self, step: Step, line: str) -> None:
        self._line(step.id, "| " + _ANSI.sub("", line.rstrip("\r\n")))

    def check_finished(self, result: CheckResult) -> None:
        took = f"({duration(result.duration_s)})"
        if result.status == PASS:
            self._line(result.step, f"check {result.id}: pass {took}")
            return
        if result.status == SKIP:
            reason = f": {result.message}" if result.message else ""
            self._line(result.step, f"check {result.id}: skip{reason} {took}")
            return
        self._line(result.step, f"{result.status.upper()} check {result.id}: {result.message} {took}")
        if result.detail:
            self._line(result.step, f"  saw: {result.detail}")
        if result.hint:
            self._line(result.step, f"  hint: {result.hint}")

    def step_finished(self, step: Step, result: StepResult) -> None:
        label = _step_label(result, self._mode)
        if result.already_done or result.status == SKIP:
            self._line(step.id, label)
        elif result.status == PASS:
            self._line(step.id, f"{label} in {duration(result.duration_s)}")
        else:
            self._line(step.id, f"{label} after {duration(result.duration_s)}")

    def lab_finished(self, report: LabReport) -> None:
        width = max((len(step.id) for step in report.steps), default=0)
        self._line("", "summary:")
        for step in report.steps:
            label = _step_label(step, report.mode)
            title = self._titles.get(step.id, "")
            self._line("", f"  {step.id:<{width}}  {label:<12}  {duration(step.duration_s):>7}  {title}")
        self._line("", verdict(report))


_ICONS = {PASS: ("✓", "green"), FAIL: ("✗", "red"), ERROR: ("✗", "red"), SKIP: ("–", "yellow")}


@dataclass
class _StepView:
    """What the rich display knows about one step while the run goes on."""

    step: Step
    started: float | None = None
    result: StepResult | None = None
    spinner: Spinner | None = None
    lines: list[Text] = field(default_factory=list)
    # Keyed by check id: a check reported twice (before and after the action) shows its last result.
    checks: dict[str, CheckResult] = field(default_factory=dict)


class RichReporter:
    """A live list of the run's steps with the running step's output, leaving a panel per step behind.

    Everything permanent goes through `console.print`, which Live keeps above its own region, so
    streamed output never tears the display; the live region itself is transient.
    """

    def __init__(self, console: Console, demo: bool = False):
        self.console = console
        self.demo = demo
        self._lock = threading.RLock()
        self._views: dict[str, _StepView] = {}
        self._mode = "solve"
        self._live: Live | None = None

    def lab_started(self, lab: Lab, steps: list[Step], host: str, mode: str) -> None:
        self._mode = mode
        self._views = {step.id: _StepView(step) for step in steps}
        verb = "Checking" if mode == "check" else "Running"
        self.console.print(Text.assemble((f"{verb} {lab.title}", "bold"), f" ({lab.name}) on ", (host, "bold")))
        self._live = Live(get_renderable=self._render_live, console=self.console, transient=True,
                          auto_refresh=self.console.is_terminal, refresh_per_second=8)
        self._live.start()

    def step_started(self, step: Step) -> None:
        if self.demo:
            self.console.print(Panel(Markdown(step.explanation), title=f"{step.id}: {step.title}",
                                     title_align="left", border_style="magenta"))
        with self._lock:
            view = self._views.setdefault(step.id, _StepView(step))
            view.started = time.monotonic()
            view.spinner = Spinner("dots", style="cyan")

    def command(self, step: Step, script: str) -> None:
        with self._lock:
            view = self._views.setdefault(step.id, _StepView(step))
            for index, line in enumerate(script.splitlines() or [""]):
                view.lines.append(Text(("$ " if index == 0 else "  ") + line, style="dim"))

    def output(self, step: Step, line: str) -> None:
        with self._lock:
            view = self._views.setdefault(step.id, _StepView(step))
            view.lines.append(Text.from_ansi(line.rstrip("\r\n")))

    def check_finished(self, result: CheckResult) -> None:
        with self._lock:
            view = self._views.get(result.step)
            if view is not None and view.started is not None and view.result is None:
                view.checks[result.id] = result
                return
        # A check outside a running step (no step_started for it) is shown at once.
        self.console.print(Group(*_check_lines(result)))

    def step_finished(self, step: Step, result: StepResult) -> None:
        with self._lock:
            view = self._views.setdefault(step.id, _StepView(step))
            view.result = result
            view.spinner = None
        icon, style = _ICONS.get(result.status, ("?", "magenta"))
        label = _step_label(result, self._mode)
        timing = "" if result.already_done or result.status == SKIP else f" {duration(result.duration_s)}"
        parts: list[RenderableType] = [
            Text.assemble((f"{icon} ", style), (step.id, "bold"), f"  {step.title}  ", (label + timing, style))
        ]
        if view.lines:
            parts.append(Panel(Group(*view.lines), border_style=style if result.status != PASS else "dim",
                               box=box.ROUNDED, padding=(0, 1)))
        for check in view.checks.values():
            parts.extend(_check_lines(check))
        self.console.print(Group(*parts))

    def lab_finished(self, report: LabReport) -> None:
        self.close()
        table = Table(box=box.SIMPLE_HEAD)
        table.add_column("Step", style="bold")
        table.add_column("Title")
        table.add_column("Status")
        table.add_column("Time", justify="right")
        for step in report.steps:
            icon, style = _ICONS.get(step.status, ("?", "magenta"))
            view = self._views.get(step.id)
            table.add_row(step.id, view.step.title if view else "",
                          Text(f"{icon} {_step_label(step, report.mode)}", style=style),
                          duration(step.duration_s))
        self.console.print(table)
        icon, style = ("✓", "bold green") if report.ok else ("✗", "bold red")
        self.console.print(Text(f"{icon} {verdict(report)}", style=style))

    def close(self) -> None:
        """Stop the live display; safe to call twice, and worth calling if a run ends in an exception."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _render_live(self) -> RenderableType:
        with self._lock:
            grid = Table.grid(padding=(0, 1))
            grid.add_column(width=1)
            grid.add_column(no_wrap=True)
            grid.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
            grid.add_column(no_wrap=True, justify="right")
            running = None
            for view in self._views.values():
                icon, status = self._live_status(view)
                grid.add_row(icon, Text(view.step.id, style="bold" if view.started else "dim"),
                             Text(view.step.title), status)
                if view.spinner is not None:
                    running = view
            if running is None or not (running.lines or running.checks):
                return grid
            return Group(grid, self._tail_panel(running))

    def _live_status(self, view: _StepView) -> tuple[RenderableType, Text]:
        if view.result is not None:
            icon, style = _ICONS.get(view.result.status, ("?", "magenta"))
            label = _step_label(view.result, self._mode)
            if not view.result.already_done and view.result.status != SKIP:
                label += f" {duration(view.result.duration_s)}"
            return Text(icon, style=style), Text(label, style=style)
        if view.spinner is not None and view.started is not None:
            verb = "checking" if self._mode == "check" else "running"
            return view.spinner, Text(f"{verb} {duration(time.monotonic() - view.started, 1)}", style="cyan")
        return Text("·", style="dim"), Text("pending", style="dim")

    def _tail_panel(self, view: _StepView) -> Panel:
        shown = view.lines[-LIVE_TAIL:]
        body: list[RenderableType] = []
        if len(view.lines) > len(shown):
            body.append(Text(f"… {len(view.lines) - len(shown)} earlier lines", style="dim italic"))
        for line in shown:
            cropped = line.copy()
            cropped.no_wrap, cropped.overflow = True, "ellipsis"
            body.append(cropped)
        for check in view.checks.values():
            body.extend(_check_lines(check))
        return Panel(Group(*body), title=view.step.id, title_align="left", border_style="cyan",
                     box=box.ROUNDED, padding=(0, 1))


def _check_lines(result: CheckResult) -> list[Text]:
    """A check as the student needs it: a tick when it passed, else what is wrong and what to do."""
    icon, style = _ICONS.get(result.status, ("?", "magenta"))
    took = (f" ({duration(result.duration_s)})", "dim")
    if result.status == PASS:
        return [Text.assemble(("  " + icon, style), f" {result.id}", took)]
    if result.status == SKIP:
        reason = f": {result.message}" if result.message else ""
        return [Text.assemble(("  " + icon, style), f" {result.id} skipped{reason}", took)]
    label = "error" if result.status == ERROR else "failed"
    lines = [Text.assemble(("  " + icon, style), (f" {result.id} {label}: ", style), result.message, took)]
    if result.detail:
        lines.append(Text.assemble(("    saw: ", "dim"), (result.detail, "dim")))
    if result.hint:
        lines.append(Text.assemble(("    hint: ", "bold cyan"), (result.hint, "cyan")))
    return lines
