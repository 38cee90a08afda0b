"""Grading what a student hands in (`inv grade.<lab> --submission DIR`) on a fresh built-in VM.

Fresh means made for this one run and destroyed after it: a VM named `grade-<lab>-<random>` whose
disk is a new qcow2 overlay on the cached image of the lab's VM, so nothing of an earlier run (or of
the instructor's con0) can help or hurt a student. labkit does the lab's steps before the first
handed-in file itself, puts the files in place, does the later steps that leave state behind (the
docker build), and then runs the checks of the graded steps: those from the first handed-in file on.
"""

from __future__ import annotations

import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import TargetError, UsageError
from .model import PASS, Lab, LabReport, Step
from .providers.qemu import QemuProvider
from .providers.target import SSHTarget
from .reporting import Reporter
from .runner import Runner, StepContext, preamble


def graded_steps(lab: Lab) -> list[Step]:
    """The steps a submission is graded on: from the first step a handed-in file replaces, to the end."""
    first = min(lab.step_ids.index(handin.step) for handin in lab.handins)
    return list(lab.steps[first:])


def read_submission(lab: Lab, directory: str | Path) -> dict[str, bytes | None]:
    """The handed-in files by name (None for one that is missing). UsageError if `directory` is not one."""
    names = ", ".join(handin.name for handin in lab.handins)
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise UsageError(f"--submission {directory}: no such directory.",
                         f"Give the directory holding the student's {names}.")
    return {handin.name: (path / handin.name).read_bytes() if (path / handin.name).is_file() else None
            for handin in lab.handins}


def vm_name(lab: Lab) -> str:
    return f"grade-{lab.name}-{secrets.token_hex(4)}"


@contextmanager
def fresh_vm(vm_settings: dict, name: str, like: str, progress: Callable[[str], None]) -> Iterator[SSHTarget]:
    """A new built-in VM `name` made from the image of the configured VM `like` (con0, docker0),
    booted for the block and destroyed after it, whatever happens inside."""
    recipes = dict(vm_settings.get("vms") or {})
    if like not in recipes:
        raise UsageError(f"Unknown VM '{like}' to grade on.", f"Known VMs: {', '.join(sorted(recipes))} (setting vm.vms).")
    provider = QemuProvider({**vm_settings, "vms": {**recipes, name: recipes[like]}}, progress)
    try:
        yield provider.up(name)
    finally:
        provider.destroy(name)


def grade(lab: Lab, runner: Runner, files: dict[str, bytes | None], reporter: Reporter) -> LabReport:
    """Grade the handed-in `files` on the runner's (fresh) target: the check report of the graded
    steps, mode "grade". Raises TargetError (exit 3) when labkit's own steps fail on the VM."""
    graded = graded_steps(lab)
    handed = {handin.step for handin in lab.handins}
    # Demonstrations leave nothing behind, so neither their action nor a skipped one changes a check.
    before = [step for step in lab.steps[:lab.step_ids.index(graded[0].id)] if not step.demonstration]
    if before:
        prepared = runner.solve(before)
        failed = next((step for step in prepared.steps if step.status != PASS), None)
        if failed:
            problem = next((check for check in prepared.checks if check.step == failed.id and check.status != PASS), None)
            raise TargetError(f"labkit could not do step {failed.id} itself on the grading VM"
                               + (f": {problem.message}" if problem else "."),
                               problem.hint if problem and problem.hint else "Read the output above; the student's files were not graded.")
    if lab.grading_setup and not runner.remote.run(preamble(runner.variables) + lab.grading_setup).ok:
        raise TargetError("labkit could not prepare the grading VM for the handed-in files.",
                          f"This failed on it: {lab.grading_setup}")
    for handin in lab.handins:
        step = lab.steps[lab.step_ids.index(handin.step)]
        data = files.get(handin.name)
        if data is None:
            reporter.notice(step, f"{handin.name} was not handed in")
            continue
        context = StepContext(runner.remote, runner.settings, runner.variables, reporter, step)
        context.install_file(data, handin.dest, mode=handin.mode, show=f"cp {handin.name} (handed in)",
                             then=f'chown "$LOGIN_USER:" {handin.dest}')
    later = [step for step in graded if step.id not in handed and not step.demonstration]
    if later:
        runner.solve(later)
    report = runner.check(graded)
    report.mode = "grade"
    return report
