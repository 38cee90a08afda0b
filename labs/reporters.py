"""Reporters that draw a run as it happens: rich for a terminal, plain lines for CI logs and pipes,
a narrating one for demos; and the live view and table of a class check."""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

from rich import box
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from .model import ERROR, FAIL, PASS, SKIP, CheckResult, Lab, LabReport, Step, StepResult
from .reporting import Reporter
from .reports import HostFailure
from .watch import Change, ClassWatch

# How many command and output lines the live panel keeps on screen; the final panel shows them all.
LIVE_TAIL = 15

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")


def make_reporter(console: Console, demo: bool = False, pause: bool = False, stdin: TextIO | None = None) -> Reporter:
    """A live display when a person is watching, plain lines when the output goes to a log.

    In demo mode (which `pause` implies) each step opens with the workshop's explanation of it; on a
    terminal the narrating DemoReporter also shows commands highlighted and can pause and hand over.
    """
    if not console.is_terminal:
        return PlainReporter(console.file, demo or pause)
    if demo or pause:
        return DemoReporter(console, pause, stdin)
    return RichReporter(console)


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
            f"{counts['skipped']} skipped, {counts['errors']} errors in {duration(report.duration_s, 1)}"
            + (f"; points {points_text(report.points)}/{points_text(report.max_points)}" if report.max_points else ""))


def points_text(value: float) -> str:
    """Points as people write them: 3, not 3.0; 1.5 stays 1.5."""
    return f"{value:g}"


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

    def notice(self, step: Step, text: str) -> None:
        self._line(step.id, f"! {text}")

    def offer_shell(self, step: Step) -> bool:
        return False

    def check_finished(self, result: CheckResult) -> None:
        took = f"({duration(result.duration_s)})"
        if result.status == PASS:
            if not result.hint:
                # Lab checks pass silently; a setup item's pass says what it found (which accelerator, ...).
                said = f": {result.message}" if result.message else ""
                self._line(result.step, f"check {result.id}: pass{said} {took}")
                return
            # A pass with a hint is a warning: it works, but not the way the workshop means (or slowly).
            self._line(result.step, f"check {result.id}: pass: {result.message} {took}")
            self._evidence(result, "  warning, hint: ")
            return
        if result.status == SKIP:
            reason = f": {result.message}" if result.message else ""
            self._line(result.step, f"check {result.id}: skip{reason} {took}")
            return
        self._line(result.step, f"{result.status.upper()} check {result.id}: {result.message} {took}")
        self._evidence(result, "  hint: ")

    def _evidence(self, result: CheckResult, hint_label: str) -> None:
        """What the check saw, a line each, then its hint (if any) behind `hint_label`."""
        for line in result.detail.splitlines():
            self._line(result.step, f"  saw: {line}")
        if result.hint:
            self._line(result.step, f"{hint_label}{result.hint}")

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

    def __init__(self, console: Console):
        self.console = console
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

    def notice(self, step: Step, text: str) -> None:
        with self._lock:
            view = self._views.setdefault(step.id, _StepView(step))
            view.lines.append(Text(f"! {text}", style="bold yellow"))

    def offer_shell(self, step: Step) -> bool:
        """Only demo mode hands the terminal over; the live display would draw over the shell."""
        return False

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
        parts: list[RenderableType] = [_step_line(step, result, self._mode)]
        if view.lines:
            style = _ICONS.get(result.status, ("?", "magenta"))[1] if result.status != PASS else "dim"
            parts.append(Panel(Group(*view.lines), border_style=style,
                               box=box.ROUNDED, padding=(0, 1)))
        for check in view.checks.values():
            parts.extend(_check_lines(check))
        self.console.print(Group(*parts))

    def lab_finished(self, report: LabReport) -> None:
        self.close()
        _print_summary(self.console, report, {step_id: view.step.title for step_id, view in self._views.items()})

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
    if result.status == PASS and not result.hint:
        said = f": {result.message}" if result.message else ""
        return [Text.assemble(("  " + icon, style), f" {result.id}{said}", took)]
    if result.status == PASS:
        lines = [Text.assemble(("  " + icon, style), f" {result.id} ", ("passed with a warning: ", "yellow"),
                               result.message, took)]
        lines += [Text.assemble(("    saw: ", "dim"), (line, "dim")) for line in result.detail.splitlines()]
        return lines + [Text.assemble(("    hint: ", "bold cyan"), (result.hint, "cyan"))]
    if result.status == SKIP:
        reason = f": {result.message}" if result.message else ""
        return [Text.assemble(("  " + icon, style), f" {result.id} skipped{reason}", took)]
    label = "error" if result.status == ERROR else "failed"
    lines = [Text.assemble(("  " + icon, style), (f" {result.id} {label}: ", style), result.message, took)]
    lines += [Text.assemble(("    saw: ", "dim"), (line, "dim")) for line in result.detail.splitlines()]
    if result.hint:
        lines.append(Text.assemble(("    hint: ", "bold cyan"), (result.hint, "cyan")))
    return lines


def _step_line(step: Step, result: StepResult, mode: str) -> Text:
    icon, style = _ICONS.get(result.status, ("?", "magenta"))
    timing = "" if result.already_done or result.status == SKIP else f" {duration(result.duration_s)}"
    return Text.assemble((f"{icon} ", style), (step.id, "bold"), f"  {step.title}  ",
                         (_step_label(result, mode) + timing, style))


def _print_summary(console: Console, report: LabReport, titles: dict[str, str]) -> None:
    """The table of steps a run ends with, and its verdict."""
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("Step", style="bold")
    table.add_column("Title")
    table.add_column("Status")
    table.add_column("Time", justify="right")
    for step in report.steps:
        icon, style = _ICONS.get(step.status, ("?", "magenta"))
        table.add_row(step.id, titles.get(step.id, ""), Text(f"{icon} {_step_label(step, report.mode)}", style=style),
                      duration(step.duration_s))
    console.print(table)
    icon, style = ("✓", "bold green") if report.ok else ("✗", "bold red")
    console.print(Text(f"{icon} {verdict(report)}", style=style))


class DemoReporter:
    """Narrates a run in front of a class: each step's explanation rendered as Markdown, each command
    syntax highlighted before it runs, and its output as it streams.

    Everything is printed for good (no live region), so the audience can scroll back. With `pause`
    it waits for Enter before each step, and at interactive steps it offers the terminal to a shell
    on the target; both need a person at the terminal, so neither happens when stdin is not one.
    """

    def __init__(self, console: Console, pause: bool = False, stdin: TextIO | None = None):
        self.console = console
        self.pause = pause
        self.stdin = stdin if stdin is not None else sys.stdin
        self._mode = "solve"
        self._host = ""
        self._steps: list[Step] = []

    def _attended(self) -> bool:
        try:
            return self.console.is_terminal and self.stdin.isatty()
        except (AttributeError, ValueError):  # no stdin at all, or a closed one
            return False

    def _ask(self, prompt: Text) -> str:
        self.console.print(prompt, end="")
        answer = self.stdin.readline()
        if not answer:  # end of input: the next output starts on its own line
            self.console.print()
        return answer.strip()

    def lab_started(self, lab: Lab, steps: list[Step], host: str, mode: str) -> None:
        self._mode, self._host, self._steps = mode, host, list(steps)
        self.console.rule(Text.assemble(("Demo: ", "bold magenta"), (lab.title, "bold"), f" ({lab.name}) on ",
                                        (host, "bold")))

    def step_started(self, step: Step) -> None:
        number = next((index for index, known in enumerate(self._steps, 1) if known.id == step.id), 0)
        title = Text.assemble((f"Step {number}/{len(self._steps)} ", "magenta"), (step.id, "bold"), f": {step.title}")
        self.console.print(Panel(Markdown(step.explanation), title=title, title_align="left",
                                 border_style="magenta", padding=(0, 1)))
        if self.pause and self._attended():
            self._ask(Text("Press Enter to run this step… ", style="bold magenta"))

    def command(self, step: Step, script: str) -> None:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(ratio=1)
        grid.add_row(Text("$", style="bold green"),
                     Syntax(script, "bash", theme="ansi_dark", background_color="default", word_wrap=True))
        self.console.print(grid)

    def output(self, step: Step, line: str) -> None:
        # A grid keeps a long line's continuation right of the gutter, apart from the narration.
        grid = Table.grid(expand=True)
        grid.add_column(width=4, no_wrap=True)
        grid.add_column(ratio=1)
        grid.add_row(Text("  │ ", style="dim"), Text.from_ansi(line.rstrip("\r\n")))
        self.console.print(grid)

    def notice(self, step: Step, text: str) -> None:
        self.console.print(Text(f"  ! {text}", style="bold yellow"))

    def offer_shell(self, step: Step) -> bool:
        if not self._attended():
            return False
        answer = self._ask(Text.assemble(("Open this step's shell on ", "bold"), (self._host, "bold cyan"),
                                         (" and try it yourself? [y/N] ", "bold")))
        if answer.lower() not in ("y", "yes"):
            return False
        self.console.print(Text("You are on the target now. exit (or Ctrl-D) comes back to the lab, "
                                "which then checks the step.", style="dim"))
        return True

    def check_finished(self, result: CheckResult) -> None:
        self.console.print(Group(*_check_lines(result)))

    def step_finished(self, step: Step, result: StepResult) -> None:
        self.console.print(_step_line(step, result, self._mode))
        self.console.print()

    def lab_finished(self, report: LabReport) -> None:
        _print_summary(self.console, report, {step.id: step.title for step in self._steps})


# --- class checks ---------------------------------------------------------------------------------

_MARKS = {PASS: ("✓", "green"), FAIL: ("✗", "red"), ERROR: ("!", "red"), SKIP: ("–", "dim")}


def _passed(report: LabReport) -> str:
    return f"{report.summary['passed']}/{len(report.checks)}"


def _first_problem(report: LabReport) -> str:
    problem = next((check for check in report.checks if check.status in (FAIL, ERROR)), None)
    return f"{problem.id}: {problem.message}" if problem else ""


def host_line(result: LabReport | HostFailure) -> Text:
    """One machine's outcome in a line: ticked with its checks passed, or its first problem."""
    if isinstance(result, HostFailure):
        return Text.assemble(("! ", "red"), (result.host, "bold"), (f"  {result.status}: ", "red"), result.message)
    if result.ok:
        return Text.assemble(("✓ ", "green"), (result.host, "bold"),
                             f"  {_passed(result)} checks passed in {duration(result.duration_s)}")
    return Text.assemble(("✗ ", "red"), (result.host, "bold"), f"  {_passed(result)} checks passed; ",
                         (_first_problem(result), "red"))


class ClassProgress:
    """The live view of a class check: every machine at a glance while the checks run.

    On a terminal, a grid of all machines (waiting, connecting, checking, then ✓/✗/!) under a
    progress bar; in a log, one line per machine as it finishes. Workers report from their threads.
    """

    def __init__(self, console: Console, lab: Lab, names: list[str], parallel: int):
        self.console = console
        self.lab = lab
        self.parallel = parallel
        self._lock = threading.Lock()
        self._phases: dict[str, tuple[str, float]] = {name: ("waiting", 0.0) for name in names}
        self._results: dict[str, LabReport | HostFailure] = {}
        self._spinner = Spinner("dots", style="cyan")
        self._started = time.monotonic()
        self._live: Live | None = None

    def __enter__(self) -> ClassProgress:
        self._started = time.monotonic()
        if self.console.is_terminal:
            self._live = Live(get_renderable=self.render, console=self.console, transient=True,
                              refresh_per_second=8)
            self._live.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def status(self, name: str, phase: str) -> None:
        """`phase` is "connecting" or "checking"."""
        with self._lock:
            self._phases[name] = (phase, time.monotonic())

    def finished(self, name: str, result: LabReport | HostFailure) -> None:
        with self._lock:
            self._results[name] = result
        if self._live is None:
            self.console.print(host_line(result), soft_wrap=True)

    def render(self) -> RenderableType:
        with self._lock:
            now = time.monotonic()
            cells, counts = [], {"ok": 0, "failed": 0, "failure": 0}
            for name, (phase, since) in self._phases.items():
                result = self._results.get(name)
                if isinstance(result, HostFailure):
                    counts["failure"] += 1
                    cells.append(Text.assemble(("! ", "red"), name, (f" {result.status}", "red")))
                elif result is not None:
                    counts["ok" if result.ok else "failed"] += 1
                    icon, style = ("✓", "green") if result.ok else ("✗", "red")
                    cells.append(Text.assemble((f"{icon} ", style), name, (f" {_passed(result)}", style)))
                elif phase == "waiting":
                    cells.append(Text(f"· {name}", style="dim"))
                else:
                    cells.append(Text.assemble(self._spinner.render(now), " ", name,
                                               (f" {phase} {duration(now - since, 1)}", "cyan")))
            done = len(self._results)
            total = len(self._phases)
            header = Table.grid(padding=(0, 1))
            header.add_row(
                Text(f"Checking {self.lab.name} on {total} machines, {min(self.parallel, total)} at a time",
                     style="bold"),
                ProgressBar(total=total, completed=done, width=30),
                Text.assemble(f"{done}/{total}  ", (f"✓ {counts['ok']}", "green"), "  ",
                              (f"✗ {counts['failed']}", "red"), "  ", (f"! {counts['failure']}", "red"),
                              f"  {duration(now - self._started, 1)}"))
            return Group(header, Columns(cells, padding=(0, 3), column_first=True))


def class_table(lab: Lab, results: list[LabReport | HostFailure], width: int | None = None) -> Table:
    """Students as rows, steps as columns (✓ done, ✗ failed, ! error, – skipped), the checks passed,
    and each student's first problem; a machine without a report says why in that last column.

    Narrower than `width` allows, the step columns are numbered and a legend names them.
    """
    student_width = min(24, max((len(result.host) for result in results), default=7))
    natural = student_width + sum(len(step_id) + 3 for step_id in lab.step_ids) + 12 + 30
    numbered = width is not None and width < natural
    caption = class_verdict(results)
    if numbered:
        caption = "  ".join(f"{index} {step_id}" for index, step_id in enumerate(lab.step_ids, 1)) + "\n" + caption
    table = Table(title=f"{lab.name}: class check", title_justify="left", caption=caption, caption_justify="left")
    table.add_column("student", no_wrap=True, style="bold", min_width=student_width)
    for index, step_id in enumerate(lab.step_ids, 1):
        header = str(index) if numbered else step_id
        table.add_column(header, justify="center", no_wrap=True, min_width=len(header))
    table.add_column("passed", justify="right", no_wrap=True, min_width=6)
    # The one column that gives way when the table is too wide: each row stays one line, cut short.
    table.add_column("problem")
    for result in results:
        if isinstance(result, HostFailure):
            problem = Text.assemble((f"{result.status}: ", "red"), result.message)
            table.add_row(Text(result.host), *[""] * len(lab.step_ids), "—", _one_line(problem))
            continue
        statuses = {step.id: step.status for step in result.steps}
        marks = [Text(*_MARKS[statuses[step_id]]) if step_id in statuses else Text("") for step_id in lab.step_ids]
        table.add_row(Text(result.host), *marks, _passed(result), _one_line(Text(_first_problem(result), style="red")))
    return table


def _one_line(text: Text) -> Text:
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def class_verdict(results: list[LabReport | HostFailure]) -> str:
    """The class in one line: how many machines passed every check, failed one, or had no report."""
    reports = [result for result in results if isinstance(result, LabReport)]
    failures = [result for result in results if isinstance(result, HostFailure)]
    passed = sum(report.ok for report in reports)
    unreachable = sum(not failure.reached for failure in failures)
    text = f"{passed} of {len(results)} machines passed every check, {len(reports) - passed} failed a check"
    if unreachable:
        text += f", {unreachable} could not be reached"
    if len(failures) > unreachable:
        text += f", {len(failures) - unreachable} did not finish the checks"
    return text + "."


# --- watching a class -----------------------------------------------------------------------------

def watch_table(lab: Lab, watch: ClassWatch, interval: float, now: float | None = None) -> RenderableType:
    """The room's view of a watched class: each student's step, how far along, how long since their
    last progress; stuck students (no progress for target.stuck_after) highlighted."""
    now = watch.clock() if now is None else now
    total = len(watch.steps)
    if watch.checking:
        state = Text(f"checking round {watch.rounds + 1}…", style="cyan")
    elif watch.next_round is not None:
        state = Text(f"next round in {duration(max(0.0, watch.next_round - now), 0)}", style="dim")
    else:
        state = Text("")
    standings = list(watch.standings.values())
    stuck = sum(watch.stuck(standing, now) for standing in standings)
    done = sum(standing.done and not standing.problem for standing in standings)
    header = Table.grid(padding=(0, 2))
    header.add_row(Text(f"Watching {lab.name}: {len(standings)} machines, every {duration(interval, 0)}", style="bold"),
                   Text.assemble((f"✓ {done} done", "green"), "  ", (f"{stuck} stuck", "bold red" if stuck else "dim")),
                   Text(f"round {watch.rounds}"), state)
    table = Table(box=box.SIMPLE_HEAD, expand=True)
    table.add_column("student", no_wrap=True, style="bold")
    table.add_column("at step", no_wrap=True)
    table.add_column("steps", no_wrap=True)
    table.add_column("no progress for", justify="right", no_wrap=True)
    table.add_column("note", ratio=1, no_wrap=True, overflow="ellipsis")
    for standing in standings:
        is_stuck = watch.stuck(standing, now)
        if standing.at == "?":
            at, bar = Text("—", style="dim"), Text("")
        else:
            at = Text("✓ done", style="green") if standing.done else Text(standing.at)
            bar = Table.grid(padding=(0, 1))
            bar.add_row(ProgressBar(total=total or 1, completed=standing.reached, width=14), f"{standing.reached}/{total}")
        note = Text(standing.problem, style="red") if standing.problem else \
            Text(f"stuck: over {duration(watch.stuck_after, 0)}", style="bold") if is_stuck else Text("")
        table.add_row(Text(standing.name), at, bar, "" if standing.done or standing.at == "?" else duration(now - standing.since, 0),
                      note, style="bold white on red" if is_stuck else None)
    return Group(header, table)


class WatchView:
    """A watched class on the screen: full-screen and redrawn on a terminal; elsewhere (CI, a pipe)
    one plain line per change, stamped with the time of day, and nothing when nothing changed."""

    def __init__(self, console: Console, lab: Lab, watch: ClassWatch, interval: float):
        self.console = console
        self.lab = lab
        self.watch = watch
        self.interval = interval
        self._live: Live | None = None

    def __enter__(self) -> WatchView:
        if self.console.is_terminal:
            self._live = Live(get_renderable=lambda: watch_table(self.lab, self.watch, self.interval),
                              console=self.console, screen=True, refresh_per_second=2)
            self._live.start()
        else:
            self.console.print(f"Watching {self.lab.name} every {duration(self.interval, 0)}; Ctrl-C ends it.",
                               soft_wrap=True)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def round_finished(self, changes: list[Change]) -> None:
        if self._live is not None:
            self._live.refresh()
            return
        stamp = time.strftime("%H:%M:%S")
        for change in changes:
            self.console.print(Text(f"{stamp} {change.text}"), soft_wrap=True)
