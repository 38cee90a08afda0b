"""Labs, steps, checks and their results: plain data that the runner executes and reporters show."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

from .errors import UsageError

if TYPE_CHECKING:
    from .runner import StepContext

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"


# A check names the cause it found by printing this word and the cause's key on a line of its own.
CAUSE_MARK = "labkit-cause"


@dataclass(frozen=True)
class Cause:
    """One known student mistake behind a check's verdict: what is wrong and what to do about it.

    A failing check that finds it replaces its generic message and hint with these; a passing check
    that finds it passes with this as a warning (say, a socket opened to everyone)."""

    key: str
    message: str
    hint: str


@dataclass(frozen=True)
class Probe:
    """A costly look at the target that several checks judge, taken once per check run.

    `script` runs like a check's script (read-only, as root, in the workdir), once before all the
    checks of a run that name this probe, however many there are and whichever steps they belong to:
    starting a container once, say, instead of once per check. Those checks find its output in
    $PROBE and its exit status in $PROBE_STATUS.
    """

    id: str
    script: str


@dataclass(frozen=True)
class Check:
    """A read-only probe of the target.

    `script` is POSIX sh run as root in the student's workdir with the lab's variables set; exit
    status 0 means the check passes. Its last lines of output are the evidence shown with the
    verdict; a line `labkit-cause KEY` names one of `causes` as the reason. With a `probe`, the
    script judges that probe's output ($PROBE, $PROBE_STATUS) instead of looking again itself.
    """

    id: str
    script: str
    message: str
    hint: str
    causes: tuple[Cause, ...] = ()
    probe: Probe | None = None

    def cause(self, key: str) -> Cause | None:
        return next((cause for cause in self.causes if cause.key == key), None)


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
    # Ids of earlier steps this one builds on: the self-check judges it only when they pass.
    needs: tuple[str, ...] = ()
    # What the step is worth when graded: earned when all its checks pass (a course may override it
    # with the setting `<lab>.points`). Hidden steps count but their results are not shown to
    # students on platforms that can hide tests (Gradescope); setting `<lab>.hidden` adds to them.
    points: float = 1
    visible: bool = True


@dataclass(frozen=True)
class Handin:
    """A file a student hands in for grading (`inv grade.<lab> --submission DIR`): `name` in the
    submission directory, installed on the target at `dest` (a shell word such as "$SCRIPT") with
    `mode` and owned by the login user. It replaces the action of the step `step`."""

    name: str
    dest: str
    step: str
    mode: int = 0o644


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
    handins: tuple[Handin, ...] = ()
    # Shell run as root on a fresh grading VM before the handed-in files go in: what the workshop's
    # machine has and the built-in image lacks (the chroot lab: /bin/ash, Alpine's shell).
    grading_setup: str = ""
    # Settings a grading run overrides (dotted paths: the chroot lab takes busybox from the VM itself).
    grading_settings: dict = field(default_factory=dict)
    # The lab's configuration section (`<name>.*`, with at least `vm` and `workdir`) and its own flags.
    defaults: dict = field(default_factory=lambda: {"vm": "con0", "workdir": ""})
    options: tuple[Option, ...] = ()

    def __post_init__(self):
        seen: set[str] = set()
        for step in self.steps:
            unknown = [need for need in step.needs if need not in seen]
            if unknown:
                raise ValueError(f"step {step.id} of lab {self.name} needs {unknown}, which are not earlier steps")
            seen.add(step.id)

    @property
    def step_ids(self) -> list[str]:
        return [step.id for step in self.steps]

    def grading(self, settings: dict) -> dict[str, tuple[float, bool]]:
        """(points, visible) per step id: the steps' own, with the lab's `points` setting (a mapping
        step id -> points, a number >= 0) and `hidden` setting (a list of step ids) on top.

        Raises UsageError for an unknown step id or a value that is not a number >= 0."""
        points = settings.get("points") or {}
        hidden = settings.get("hidden") or []
        if not hasattr(points, "items") or isinstance(hidden, str) or not hasattr(hidden, "__iter__"):
            raise UsageError(f"The settings {self.name}.points and {self.name}.hidden are malformed.",
                             f"Give {self.name}.points as a mapping step -> points and {self.name}.hidden as a list of steps.")
        for name, step_id in [*((f"{self.name}.points", key) for key in points),
                              *((f"{self.name}.hidden", key) for key in hidden)]:
            if step_id not in self.step_ids:
                raise UsageError(f"Unknown step '{step_id}' in the setting {name}.",
                                 f"Choose among: {', '.join(self.step_ids)}.")
        for step_id, value in points.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise UsageError(f"The setting {self.name}.points.{step_id} is {value!r}, not a number of points.",
                                 "Give a number 0 or greater.")
        return {step.id: (float(points.get(step.id, step.points)), step.visible and step.id not in hidden)
                for step in self.steps}

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
    # The evidence: the last lines the probe saw (the student's own program's output or error).
    detail: str = ""


@dataclass
class StepResult:
    """A step's outcome. `max_points` is what the step is worth; it is earned (`points`) only when
    the step passed, i.e. all its checks did. `title` and `visible` come from the Step, for reports."""

    id: str
    status: str
    duration_s: float = 0.0
    already_done: bool = False
    notes: list[str] = field(default_factory=list)  # what the step's action wants kept, e.g. busybox's source
    max_points: float = 0.0
    title: str = ""
    visible: bool = True

    @property
    def points(self) -> float:
        return self.max_points if self.status == PASS else 0.0


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
    def summary(self) -> dict[str, float]:
        """Check counts by status, and the points earned of the points the reported steps are worth."""
        counts = {PASS: 0, FAIL: 0, SKIP: 0, ERROR: 0}
        for check in self.checks:
            counts[check.status] += 1
        return {"passed": counts[PASS], "failed": counts[FAIL], "skipped": counts[SKIP],
                "errors": counts[ERROR], "points": self.points, "max_points": self.max_points}

    @property
    def points(self) -> float:
        return sum(step.points for step in self.steps)

    @property
    def max_points(self) -> float:
        return sum(step.max_points for step in self.steps)

    def award(self, lab: Lab, settings: dict) -> None:
        """Give each step result its title, visibility and the points it is worth (see Lab.grading)."""
        grading = lab.grading(settings)
        titles = {step.id: step.title for step in lab.steps}
        for step in self.steps:
            step.max_points, step.visible = grading[step.id]
            step.title = titles[step.id]

    @property
    def ok(self) -> bool:
        return all(check.status in (PASS, SKIP) for check in self.checks) and all(
            step.status in (PASS, SKIP) for step in self.steps
        )


def failed_run(lab: Lab, host: str, mode: str, message: str, hint: str, settings: dict,
               steps: list[Step] | None = None) -> LabReport:
    """The report of a run that could not judge the work (bad settings or input, a target that could
    not be reached): `steps` (default all) in error, worth their points, and one check `<lab>.run`
    in error that carries `message` and `hint`."""
    report = LabReport(lab.name, host, "", datetime.now(timezone.utc).isoformat(timespec="seconds"), mode=mode)
    report.steps = [StepResult(step.id, ERROR) for step in (steps or lab.steps)]
    report.checks = [CheckResult(f"{lab.name}.run", "", ERROR, message, hint)]
    try:
        report.award(lab, settings)
    except UsageError:  # the error may be the points setting itself
        report.award(lab, {})
    return report
