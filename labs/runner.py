"""The only executor: runs a lab's steps and checks on a target and tells a Reporter what happens.

Solving a lab ("solve"): for each step, its checks run first; when they pass the step is already
done, else its action runs and the checks run again; the first failing check stops the lab.
Checking a lab ("check"): every step's checks, read-only, batched into one remote script so that a
self-check costs one SSH round trip. Either way the lab's clean-up script runs at the end, also after
a failure or Ctrl-C, so nothing the lab mounted stays mounted.
"""

from __future__ import annotations

import shlex
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, TypeVar

from .errors import DISK_FULL, DISK_FULL_HINT, DiskFull, LabError, StepFailed
from .model import CAUSE_MARK, ERROR, FAIL, PASS, SKIP, Check, CheckResult, Lab, LabReport, Probe, Step, StepResult
from .providers.ssh import CommandResult, ConnectionLost, Remote
from .reporting import Reporter

JOURNAL_DIR = ".labkit"
UPLOAD_PREFIX = "/tmp/labkit-upload-"
T = TypeVar("T")
EVIDENCE_LINES = 8


@dataclass
class StepContext:
    """What a step's action works with: the target, the lab's settings and variables, the reporter."""

    remote: Remote
    settings: dict
    variables: dict[str, str]
    reporter: Reporter
    step: Step
    # The last lines of output of the step's commands: the evidence when the step fails.
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=EVIDENCE_LINES))

    def _output(self, line: str) -> None:
        if line.strip():
            self.recent.append(line.rstrip())
        self.reporter.output(self.step, line)
    notes: list[str] = field(default_factory=list)

    def sh(self, script: str, *, stdin: str | None = None, show: str | None = None, check: bool = True,
           timeout: float | None = None, failure: tuple[str, str] | None = None, root: bool = True) -> CommandResult:
        """Run `script` in the workdir, showing `show` (default: the script; "" shows nothing).

        It runs as root unless `root` is False (then as the login user, as a student would type it).
        When it fails and `check` is set, the step fails with `failure` (message, hint) or a generic one.
        """
        if show != "":
            self.reporter.command(self.step, show if show is not None else script)
        result = self.remote.run(preamble(self.variables) + script, stdin=stdin, timeout=timeout, root=root,
                                 on_line=self._output)
        if check and not result.ok:
            if DISK_FULL in result.stdout + result.stderr:
                raise DiskFull(f"The disk of {self.remote.target.name} is full: step {self.step.id} could not write "
                               f"({DISK_FULL}).", DISK_FULL_HINT)
            message, hint = failure or (
                f"A command of step {self.step.id} failed with exit status {result.exit_code}.",
                "Read its output above; fix the cause and run the lab again from this step.")
            raise StepFailed(message, hint)
        return result

    def upload(self, data: bytes, mode: int = 0o600) -> str:
        """Put `data` in a fresh /tmp/labkit-upload-* file on the target (the labs' clean-up removes
        leftovers of that name) and return its path, for a command to move into place."""
        path = f"{UPLOAD_PREFIX}{uuid.uuid4().hex[:12]}"
        self.remote.put(data, path, mode)
        return path

    def install_file(self, data: bytes, dest: str, *, mode: int, show: str, then: str = "") -> None:
        """Put `data` at `dest` (a shell word, such as "$SCRIPT") with `mode`, through an upload.

        A different file already there is the student's or the machine's own: it is kept as
        `dest`.bak rather than lost. `then` runs afterwards (a chown, say)."""
        upload = self.upload(data, mode)
        self.sh(f"if [ -f {dest} ] && ! cmp -s {upload} {dest}; then cp -p {dest} {dest}.bak; fi\n"
                f"mv -f {upload} {dest}" + (f" && {then}" if then else ""), show=show)

    def say(self, text: str) -> None:
        """A line of narration between commands."""
        self.reporter.output(self.step, text)

    def note(self, text: str) -> None:
        """A fact worth keeping (where a file came from, a fallback taken): shown as a notice and
        written into the report's step entry under "notes"."""
        self.notes.append(text)
        self.reporter.notice(self.step, text)

    def read(self, script: str) -> CommandResult:
        """Run a read-only helper command without showing it (used to inspect the target)."""
        return self.remote.run(preamble(self.variables) + script)


def preamble(variables: dict[str, str]) -> str:
    """Shell lines that set the lab's variables (quoted) and enter the workdir."""
    lines = [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
    lines.append('cd "$WORKDIR" || exit 97')
    return "\n".join(lines) + "\n"


def _judged(check: Check) -> str:
    """Runs `check`, then prints its output and exit status behind markers naming it."""
    name = shlex.quote(check.id)
    return (f"lk_out=$( {{ {check.script}\n}} </dev/null 2>&1 ); lk_status=$?\n"
            f"printf '%s\\n' \"$lk_out\" | while IFS= read -r lk_line; do printf '%s out %s %s\\n' \"$lk_token\" {name} \"$lk_line\"; done\n"
            f"printf '%s end %s %s\\n' \"$lk_token\" {name} \"$lk_status\"\n")


def _begin(check: Check) -> str:
    return f"printf '%s begin %s\\n' \"$lk_token\" {shlex.quote(check.id)}\n"


def batch_script(checks: list[Check], token: str) -> str:
    """One script running every check side by side, each in a background subshell.

    A check's output is held until it ends, then printed line by line behind a marker naming the
    check, so the lines of checks that run at the same time never mix. Whole lines are written at
    once, which keeps them apart on the way back. The checks that judge one probe share a subshell:
    the probe runs once, first (their time counts from its start), then they judge its output in turn.
    """
    probes: dict[Probe, list[Check]] = {}
    for check in checks:
        if check.probe:
            probes.setdefault(check.probe, []).append(check)
    jobs = []
    for probe, judges in probes.items():
        jobs.append("(\n" + "".join(_begin(check) for check in judges)
                    + f"PROBE=$( {{ {probe.script}\n}} </dev/null 2>&1 ); PROBE_STATUS=$?\n"
                    + "".join(_judged(check) for check in judges) + ") &")
    jobs += [f"(\n{_begin(check)}{_judged(check)}) &" for check in checks if not check.probe]
    return f"lk_token={shlex.quote(token)}\n" + "\n".join(jobs) + "\nwait\n"


class Runner:
    """Runs one lab on one connected target."""

    def __init__(self, lab: Lab, remote: Remote, reporter: Reporter, settings: dict, provider: str = ""):
        self.lab = lab
        self.remote = remote
        self.reporter = reporter
        self.settings = settings
        self.provider = provider or remote.target.provider
        self._variables: dict[str, str] | None = None

    @property
    def variables(self) -> dict[str, str]:
        if self._variables is None:
            workdir = self.remote.target.workdir or self.remote.run('printf %s "$HOME"', root=False).stdout.strip()
            self._variables = {"WORKDIR": workdir, "LOGIN_USER": self.remote.target.user,
                               **self.lab.variables(self.settings, workdir)}
        return self._variables

    def _report(self, mode: str) -> LabReport:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return LabReport(lab=self.lab.name, host=self.remote.target.name, provider=self.provider,
                         started=started, mode=mode)

    def run_checks(self, steps: list[Step]) -> list[CheckResult]:
        """Run the checks of `steps` in one remote session, side by side; results come in step order.

        A step is judged when the steps it needs passed; otherwise its checks are skipped, naming
        the step they wait for, so one broken step does not hide the verdict on unrelated ones.
        """
        checks = [check for step in steps for check in step.checks]
        step_of = {check.id: step for step in steps for check in step.checks}
        token = f"@@labkit-{uuid.uuid4().hex[:12]}"
        begun: dict[str, float] = {}
        lines: dict[str, list[str]] = {check.id: [] for check in checks}
        ended: dict[str, tuple[int, float]] = {}

        def on_line(line: str) -> None:
            kind, _, rest = line[len(token) + 1:].partition(" ") if line.startswith(token) else ("", "", "")
            check_id, _, value = rest.partition(" ")
            if kind == "begin":
                begun[check_id] = time.monotonic()
            elif kind == "out":
                lines[check_id].append(value)
            elif kind == "end":
                ended[check_id] = (int(value), time.monotonic() - begun.get(check_id, time.monotonic()))

        outcome = self.remote.run(preamble(self.variables) + batch_script(checks, token), on_line=on_line)
        if outcome.exit_code == 97:
            workdir = self.variables["WORKDIR"]
            return [CheckResult(check.id, step_of[check.id].id, FAIL if step_of[check.id] is steps[0] else SKIP,
                                f"The work directory {workdir} does not exist on the target.",
                                "Create it, or name the right one with the inventory's workdir field.")
                    for check in checks]
        results: list[CheckResult] = []
        step_status: dict[str, str] = {}
        for step in steps:
            waiting = [need for need in step.needs if step_status.get(need, PASS) != PASS]
            # A check that did not finish means the checking broke, not the student's work: stop there.
            waiting += [earlier for earlier, status in step_status.items() if status == ERROR][:1]
            mine = []
            for check in step.checks:
                if waiting:
                    mine.append(CheckResult(check.id, step.id, SKIP, f"Waits for step {waiting[0]}, which is not done."))
                elif check.id not in ended:
                    stderr = outcome.stderr.strip().splitlines()
                    mine.append(CheckResult(check.id, step.id, ERROR, "The check did not finish.",
                                            stderr[-1] if stderr else ""))
                else:
                    status, duration = ended[check.id]
                    mine.append(judge(check, step, status == 0, lines[check.id], duration))
            step_status[step.id] = _worst(mine)
            results.extend(mine)
        return results

    def check(self, steps: list[Step] | None = None) -> LabReport:
        """The student's self-check: every check of `steps` (default all), changing nothing."""
        steps = steps or list(self.lab.steps)
        report = self._report("check")
        started = time.monotonic()
        self.reporter.lab_started(self.lab, steps, self.remote.target.name, "check")
        try:
            report.checks = self._retrying(steps[0], lambda: self.run_checks(steps))
            for step in steps:
                self.reporter.step_started(step)
                mine = [result for result in report.checks if result.step == step.id]
                for result in mine:
                    self.reporter.check_finished(result)
                step_result = StepResult(step.id, _worst(mine), sum(r.duration_s for r in mine))
                report.steps.append(step_result)
                self.reporter.step_finished(step, step_result)
        finally:
            report.duration_s = time.monotonic() - started
            report.award(self.lab, self.settings)
            self.reporter.lab_finished(report)
        return report

    def solve(self, steps: list[Step] | None = None, force: bool = False) -> LabReport:
        """Run `steps` (default all) in order, verifying after each; stops at the first failure."""
        steps = steps or list(self.lab.steps)
        report = self._report("solve")
        started = time.monotonic()
        self.reporter.lab_started(self.lab, steps, self.remote.target.name, "solve")
        try:
            journal = self._journal()
            for index, step in enumerate(steps):
                result = self._retrying(step, lambda: self._solve_step(step, force, journal, report), clean=True)
                if result.status != PASS:
                    for later in steps[index + 1:]:
                        report.steps.append(StepResult(later.id, SKIP))
                    break
        finally:
            self._cleanup()
            report.duration_s = time.monotonic() - started
            report.award(self.lab, self.settings)
            self.reporter.lab_finished(report)
        return report

    def _retrying(self, step: Step, work: Callable[[], T], clean: bool = False) -> T:
        """`work`, done again on a new connection when the old one is lost, up to the Remote's
        reconnect_attempts times. Safe because a step starts from its checks (a finished action
        counts as done) and, with `clean`, the lab's clean-up first removes what the broken try left."""
        losses = 0
        while True:
            try:
                return work()
            except ConnectionLost as lost:
                losses += 1
                if losses > self.remote.reconnect_attempts:
                    raise
                attempts = self.remote.reconnect_attempts
                self.reporter.notice(step, f"{lost.message} Logging in again.")
                self.remote.restore(lambda attempt, delay: self.reporter.notice(
                    step, f"waiting {delay:g}s before login attempt {attempt}/{attempts}"))
                self.reporter.notice(step, f"connected again; running {step.id} again from its checks")
                if clean:
                    self._cleanup()

    def _solve_step(self, step: Step, force: bool, journal: set[str], report: LabReport) -> StepResult:
        self.reporter.step_started(step)
        started = time.monotonic()
        if not force:
            before = self.run_checks([step])
            done = all(r.status == PASS for r in before) and (not step.demonstration or step.id in journal)
            if done:
                report.checks.extend(before)
                result = StepResult(step.id, PASS, time.monotonic() - started, already_done=True)
                report.steps.append(result)
                self.reporter.step_finished(step, result)
                return result
        context = StepContext(self.remote, self.settings, self.variables, self.reporter, step)
        try:
            step.action(context)
        except StepFailed as failure:
            checks = [CheckResult(f"{step.id}.action", step.id, FAIL, failure.message, failure.hint,
                                  detail="\n".join(context.recent))]
            self.reporter.check_finished(checks[0])
        else:
            # Demo mode: the audience tries the step by hand; its checks then see what they did.
            if step.shell and self.reporter.offer_shell(step):
                self.remote.interactive(preamble(self.variables) + step.shell)
            checks = self.run_checks([step])
            for result in checks:
                self.reporter.check_finished(result)
        report.checks.extend(checks)
        status = _worst(checks)
        if status == PASS:
            self._record(step)
        result = StepResult(step.id, status, time.monotonic() - started, notes=context.notes)
        report.steps.append(result)
        self.reporter.step_finished(step, result)
        return result

    def reset(self, on_line: Callable[[str], None]) -> None:
        """Undo the lab on the target: its reset script, then its journal of demonstrations."""
        script = f"{self.lab.reset}\nrm -f {self._journal_path()}\n"
        result = self.remote.run(preamble(self.variables) + script, on_line=on_line)
        if not result.ok:
            raise LabError(f"Undoing the {self.lab.name} lab on {self.remote.target.name} failed "
                           f"(exit status {result.exit_code}).", "Read its output above, fix the cause, and run lab.reset again.",
                           code=1)

    def _journal_path(self) -> str:
        return f"{JOURNAL_DIR}/{self.lab.name}.done"

    def _journal(self) -> set[str]:
        """Demonstration steps this target has already been shown (they leave nothing else behind)."""
        result = self.remote.run(preamble(self.variables) + f"cat {self._journal_path()} 2>/dev/null || true")
        return set(result.stdout.split())

    def _record(self, step: Step) -> None:
        if step.demonstration:
            path = self._journal_path()
            self.remote.run(preamble(self.variables) +
                            f"mkdir -p {JOURNAL_DIR} && echo {shlex.quote(step.id)} >> {path}")

    def _cleanup(self) -> None:
        """The lab's clean-up, on a fresh connection if the old one broke; never masks the real error."""
        if not self.lab.cleanup:
            return
        try:
            self.remote.run(preamble(self.variables) + self.lab.cleanup, timeout=60)
        except LabError:
            self.remote.close()
            try:
                self.remote.run(preamble(self.variables) + self.lab.cleanup, timeout=60)
            except LabError:
                pass


def judge(check: Check, step: Step, passed: bool, output: list[str], duration: float) -> CheckResult:
    """A check's verdict from its exit status and output: the cause it named (if any) gives the
    message and hint (a warning when it passed), and its last lines are the evidence."""
    cause, evidence = None, []
    for line in output:
        word, _, key = line.strip().partition(" ")
        if word == CAUSE_MARK:
            cause = check.cause(key.strip()) or cause
        elif line.strip():
            evidence.append(line.rstrip())
    detail = "\n".join(evidence[-EVIDENCE_LINES:])
    if passed:
        message, hint = (cause.message, cause.hint) if cause else ("", "")
        return CheckResult(check.id, step.id, PASS, message, hint, duration, detail if cause else (evidence or [""])[-1])
    message, hint = (cause.message, cause.hint) if cause else (check.message, check.hint)
    return CheckResult(check.id, step.id, FAIL, message, hint, duration, detail)


def _worst(results: list[CheckResult]) -> str:
    statuses = {result.status for result in results}
    for status in (ERROR, FAIL, SKIP):
        if status in statuses:
            return status
    return PASS
