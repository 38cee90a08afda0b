"""Labs, steps, checks and their results: plain data that the runner executes and reporters show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .errors import UsageError

if TYPE_CHECKING:
    from .runner import StepContext

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"


@dataclass(frozen=True)
class Check:
    """A read-only probe of the target.

    `script` is POSIX sh run as root in the student's workdir with the lab's variables set; exit
    status 0 means the check passes, and the last line it prints says what it saw.
    """

    id: str
    script: str
    message: str
    hint: str


@dataclass(frozen=True)
class Step:
    """One step of the workshop: what it teaches, how to do it, and how to tell that it is done."""

    id: str
    title: str
    explanation: str
    action: Callable[[StepContext], None]
    checks: tuple[Check, ...]
    interactive: bool = False
    destructive: bool = False
    # A demonstration leaves no state behind, so "already done" also needs the lab's journal.
    demonstration: bool = False
    # What demo mode hands the terminal to after an interactive step's action, for the audience to
    # try it by hand: sh run as root in the workdir with the lab's variables, on a pty.
    shell: str = ""
    # Grading weight and prerequisite step ids (the lab folder format carries both).
    points: int = 0
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Option:
    """A flag of a lab's own `lab.<name>` task: `--flag VALUE` (or a bare `--flag` when `boolean`) sets
    `setting`, a dotted path inside the lab's settings. `validate` raises UsageError on a bad value."""

    flag: str
    setting: str
    help: str
    boolean: bool = False
    validate: Callable[[str], None] | None = None


@dataclass(frozen=True)
class Lab:
    """An ordered list of steps, a clean-up script the runner always runs at the end, and a reset
    script that undoes the whole lab on the target so that a student can start over."""

    name: str
    title: str
    steps: tuple[Step, ...]
    cleanup: str = ""
    reset: str = ""
    variables: Callable[[dict, str], dict[str, str]] = field(default=lambda settings, workdir: {})
    # The lab's configuration section (`<name>.*`, with at least `vm` and `workdir`) and its own flags.
    defaults: dict = field(default_factory=lambda: {"vm": "con0", "workdir": ""})
    options: tuple[Option, ...] = ()

    @property
    def step_ids(self) -> list[str]:
        return [step.id for step in self.steps]

    def select(self, start: str | None = None, only: str | None = None) -> list[Step]:
        """The steps a run covers, for `--from` and `--only`."""
        for flag, value in (("--from", start), ("--only", only)):
            if value and value not in self.step_ids:
                raise UsageError(
                    f"Unknown step '{value}' for {flag} in lab {self.name}.",
                    f"Choose one of: {', '.join(self.step_ids)}.",
                )
        if start and only:
            if self.step_ids.index(only) < self.step_ids.index(start):
                raise UsageError(
                    f"--only {only} comes before --from {start}.",
                    "Give one of the two flags, or an --only step at or after --from.",
                )
            return [self.steps[self.step_ids.index(only)]]
        if only:
            return [self.steps[self.step_ids.index(only)]]
        if start:
            return list(self.steps[self.step_ids.index(start):])
        return list(self.steps)


@dataclass
class CheckResult:
    id: str
    step: str
    status: str
    message: str = ""
    hint: str = ""
    duration_s: float = 0.0
    detail: str = ""


@dataclass
class StepResult:
    id: str
    status: str
    duration_s: float = 0.0
    already_done: bool = False


@dataclass
class LabReport:
    """The outcome of one lab or check run on one host, in the report format of design.md."""

    lab: str
    host: str
    provider: str
    started: str
    mode: str = "solve"
    duration_s: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        counts = {PASS: 0, FAIL: 0, SKIP: 0, ERROR: 0}
        for check in self.checks:
            counts[check.status] += 1
        return {"passed": counts[PASS], "failed": counts[FAIL], "skipped": counts[SKIP],
                "errors": counts[ERROR]}

    @property
    def ok(self) -> bool:
        return all(check.status in (PASS, SKIP) for check in self.checks) and all(
            step.status in (PASS, SKIP) for step in self.steps
        )
