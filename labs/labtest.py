"""`lab.test`: the lab author's proof that a lab's checks mean something, run on a fresh target.

1. Before each step is solved (the earlier ones are), every check of the step must fail: a check that
   passes then is *vacuous*. Demonstration steps are exempt: they leave nothing behind, so their
   checks test what the demonstration needs, which the earlier steps made.
2. After the step's solve, every check of it must pass.
3. Solving the whole lab again must find every step already done.
4. The self-check must leave the target unchanged: the file listing with sha256 hashes of the work
   directory and /tmp, the cgroup tree and the mount table, before and after.
5. After `lab.reset` the first step's checks must fail again.

The outcome is a LabReport (mode "test") whose checks are these verdicts, so every report format works.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

from .model import FAIL, PASS, CheckResult, LabReport, StepResult
from .runner import Runner, preamble

# What "unchanged" means: paths, modes, owners and sizes, file hashes, cgroups and mounts. POSIX
# find and ls only, so that it runs under busybox too. Uploads of labkit itself are left out.
SNAPSHOT = r"""for dir in "$WORKDIR" /tmp; do
  find "$dir" -xdev ! -name 'labkit-upload-*' -exec ls -ldn {} + 2>/dev/null | awk '{ $6 = $7 = $8 = ""; print }'
  find "$dir" -xdev -type f ! -name 'labkit-upload-*' -exec sha256sum {} + 2>/dev/null
done | sort
[ -d /sys/fs/cgroup ] && find /sys/fs/cgroup -type d | sort
cut -d' ' -f1-4 /proc/mounts | sort
"""


def _verdict(check_id: str, step: str, ok: bool, message: str, detail: str = "") -> CheckResult:
    return CheckResult(check_id, step, PASS if ok else FAIL, "" if ok else message, "", 0.0, detail)


def test_lab(runner: Runner, say: Callable[[str], None]) -> LabReport:
    """Run the five proofs on `runner`'s target (which must be fresh) and return their verdicts.

    `runner` is expected to use a SilentReporter; `say` gets one line per phase and verdict."""
    lab = runner.lab
    report = LabReport(lab=lab.name, host=runner.remote.target.name, provider=runner.provider,
                       started=datetime.now(timezone.utc).isoformat(timespec="seconds"), mode="test")
    started = time.monotonic()
    verdicts = report.checks

    def verdict(result: CheckResult) -> None:
        verdicts.append(result)
        say(f"  {'ok  ' if result.status == PASS else 'FAIL'} {result.id}" + (f": {result.message}" if result.message else ""))

    for step in lab.steps:
        say(f"step {step.id}: checks before its solve")
        before = runner.run_checks([step])
        if step.demonstration:
            say("  (a demonstration: its checks test what it needs, so they may pass before)")
        for result in before:
            if step.demonstration:
                continue
            verdict(_verdict(f"{result.id}.before", step.id, result.status != PASS,
                             f"vacuous: {result.id} passes before step {step.id} is solved", result.detail))
        say(f"step {step.id}: solve")
        solved = runner.solve([step], force=True)
        for result in solved.checks:
            verdict(_verdict(f"{result.id}.after", step.id, result.status == PASS,
                             f"{result.id} fails after step {step.id} is solved: {result.message}", result.detail))
        ok = all(result.status == PASS for result in solved.checks)
        report.steps.append(StepResult(step.id, PASS if ok else FAIL))
        if not ok:
            say(f"step {step.id} could not be solved: the later steps are not tested")
            break
    else:
        say("the whole lab again: every step must be already done")
        again = runner.solve()
        redone = [step.id for step in again.steps if not step.already_done]
        verdict(_verdict("lab.rerun", "", not redone, f"solving again did not find these steps done: {', '.join(redone)}"))
        say("self-check: the target must stay unchanged")
        snapshot = lambda: runner.remote.run(preamble(runner.variables) + SNAPSHOT).stdout  # noqa: E731
        first = snapshot()
        runner.check()
        changed = sorted(set(first.splitlines()) ^ set(snapshot().splitlines()))
        verdict(_verdict("check.unchanged", "", not changed, f"the self-check changed the target: {'; '.join(changed[:3])}"))
        say("lab.reset: the first step must fail again")
        runner.reset(on_line=lambda line: None)
        first_step = lab.steps[0]
        after_reset = runner.run_checks([first_step])
        verdict(_verdict("reset.first-step", first_step.id, any(result.status != PASS for result in after_reset),
                         f"after lab.reset every check of step {first_step.id} still passes"))
    report.duration_s = time.monotonic() - started
    return report
