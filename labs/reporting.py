"""The interface through which the runner tells the world what happens; it knows nothing of terminals."""

from __future__ import annotations

from typing import Protocol

from .model import CheckResult, Lab, LabReport, Step, StepResult


class Reporter(Protocol):
    """Receives a run's events in order; implementations draw them (rich, plain) or ignore them."""

    def lab_started(self, lab: Lab, steps: list[Step], host: str, mode: str) -> None:
        """`mode` is "solve" (inv lab.*) or "check" (inv check.*)."""

    def step_started(self, step: Step) -> None: ...

    def command(self, step: Step, script: str) -> None:
        """A command the step is about to run on the target, as the user would type it."""

    def output(self, step: Step, line: str) -> None:
        """One line of the command's output, as it streams in."""

    def notice(self, step: Step, text: str) -> None:
        """A word from labkit itself during `step` (a lost connection, a retry), not the target's output."""

    def offer_shell(self, step: Step) -> bool:
        """After an interactive step's action: whether to hand the terminal to `step.shell` on the
        target now. Only demo mode on a terminal says yes, and only if the person asked for it."""

    def check_finished(self, result: CheckResult) -> None: ...

    def step_finished(self, step: Step, result: StepResult) -> None:
        """`result.already_done` is True when the step's checks passed before it ran."""

    def lab_finished(self, report: LabReport) -> None: ...


class SilentReporter:
    """A reporter that shows nothing, for callers that only want the LabReport."""

    def lab_started(self, lab, steps, host, mode): pass

    def step_started(self, step): pass

    def command(self, step, script): pass

    def output(self, step, line): pass

    def notice(self, step, text): pass

    def offer_shell(self, step): return False

    def check_finished(self, result): pass

    def step_finished(self, step, result): pass

    def lab_finished(self, report): pass
