"""The task collection (`inv ...` in a checkout, `labkit ...` once installed) and its defaults.

Defaults live in `ns.configure`, so invoke.yaml, ~/.invoke.yaml, INVOKE_* variables and flags override
them without any configuration code of our own. Tasks turn flags into settings, then hand over to the
runner; every LabError becomes a plain message and its exit status.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from invoke import Collection, Config, Exit, Program, task
from rich.console import Console
from rich.table import Table

from . import __version__, chroot as chroot_lab, docker as docker_lab
from .autograders import classroom_announce
from .classroom import check_class, load_inventory
from .errors import LabError, UsageError
from .grading import fresh_vm, grade, graded_steps, read_submission, vm_name
from .model import LabReport, failed_run
from .providers import choose, imagecache, resolve, ssh_config, vm_provider, vmimage
from .providers.bakerx import DEFAULTS as BAKERX_DEFAULTS
from .providers.qemu import DEFAULTS as VM_DEFAULTS
from .providers.ssh import Remote, parse_host
from .reporters import ClassProgress, WatchView, class_table, make_reporter
from .reports import FORMATS, report_format, write_report
from .registry import discover
from .folder import scaffold
from .reporting import SilentReporter
from .runner import Runner
from .labtest import test_lab
from .setup import SetupScope, check_setup as setup_check
from .templates import render
from .watch import ClassWatch, watch_rounds

DEFAULTS = {
    "target": {
        "provider": "auto",
        "connect_timeout": 10,
        "command_timeout": 300,
        "check_timeout": 60,
        "parallel": 32,
        "reconnect_attempts": 3,
        "reconnect_backoff": 1.0,
        "stuck_after": 600,
    },
    "vm": VM_DEFAULTS,
    "bakerx": BAKERX_DEFAULTS,
    "labs": {"paths": []},
}

# invoke's core flags that take a value: they come before the first task name.
_CORE_VALUE_FLAGS = {"-c", "--collection", "-r", "--search-root", "-T", "--command-timeout", "-D", "--list-depth",
                     "-F", "--list-format", "--hide", "--print-completion-script", "--complete"}


def _runtime_config() -> str | None:
    """The -f/--config file of this command line (a core flag, before the first task), or
    INVOKE_RUNTIME_CONFIG, as invoke itself takes it."""
    args = iter(sys.argv[1:])
    for arg in args:
        if arg in ("-f", "--config"):
            return next(args, None)
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg in _CORE_VALUE_FLAGS:
            next(args, None)
        elif not arg.startswith("-"):
            break
    return os.environ.get("INVOKE_RUNTIME_CONFIG")


def configured_lab_paths() -> list[str]:
    """labs.paths, read before invoke loads its configuration (the tasks depend on it): invoke's own
    system, user, current-directory and runtime files, in invoke's order."""
    config = Config(project_location=os.getcwd(), runtime_path=_runtime_config())
    config.load_project()
    config.load_runtime()
    return [str(path) for path in (config.get("labs", {}).get("paths") or [])]


def _discover() -> dict:
    try:
        return discover(configured_lab_paths())
    except LabError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(error.code)


LABS = _discover()
DEFAULTS.update({name: lab.defaults for name, lab in LABS.items()})
# An install made before labs became entry points (or a copy of the code without pip) registers none.
NO_LABS_HINT = ("labkit finds its own labs through its package's entry points: run scripts/setup again "
                "(or pip install -e . in the project).")


def _choose_a_lab() -> str:
    return f"Choose one of: {', '.join(LABS)}." if LABS else NO_LABS_HINT


TARGET_HELP = {
    "provider": "Where the lab runs: auto (default), qemu (the built-in VM), bakerx, or ssh (with --host).",
    "vm": "Name of the lab VM (default: the lab's chroot.vm or docker.vm setting, con0 or docker0).",
    "host": "Any SSH machine instead of a VM: USER@HOST[:PORT].",
    "key": "Private key for --host.",
    "report": "Write a report: PATH ending in .json, .xml (JUnit), .csv or .html, or any PATH with --format.",
    "format": f"Format of --report: {', '.join(FORMATS)} (default: from the PATH's suffix).",
}


def _console() -> Console:
    return Console(highlight=False)


def _debugging() -> bool:
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def user_errors(function):
    """Show LabErrors as their message and exit status; a traceback only with `inv --debug`."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except LabError as error:
            if _debugging():
                raise
            raise Exit(f"Error: {error}", code=error.code) from None
        except KeyboardInterrupt:
            raise Exit("Interrupted; the lab's clean-up has run.", code=130) from None

    return wrapper


def state_dir(config) -> Path:
    configured = config.vm.state_dir
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(configured or Path(base) / "labkit").expanduser()


@contextmanager
def progress_display(console: Console, title: str):
    """A spinner with the provider's latest news on a terminal; plain lines elsewhere."""
    if console.is_terminal:
        with console.status(title) as status:
            yield lambda message: status.update(f"{title}: {message}")
    else:
        yield lambda message: console.print(f"{title}: {message}")


def _lab_settings(config, lab: str, overrides: dict) -> dict:
    settings = _plain(config[lab])
    for path, value in overrides.items():
        if value is None:
            continue
        *parents, last = path.split(".")
        node = settings
        for parent in parents:
            node = node[parent]
        node[last] = value
    settings["state_dir"] = str(state_dir(config))
    LABS[lab].grading(settings)
    return settings


def _plain(value):
    """invoke's DataProxy objects as plain dicts, so labs and providers need not know invoke."""
    if hasattr(value, "items"):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _connect(c, lab: str, console: Console, provider, vm, host, key, workdir) -> Remote:
    config = c.config
    settings = config[lab]
    with progress_display(console, f"Preparing {vm or settings.vm}") as progress:
        target = resolve(provider or config.target.provider, vm=vm or settings.vm, host=host, key=key,
                         workdir=workdir or settings.workdir, vm_settings=_plain(config.vm),
                         state_dir=state_dir(config), progress=progress, bakerx_settings=_plain(config.bakerx))
    remote = _remote(config, target)
    # Log in before the run's header is printed: a machine that cannot be reached gets its error alone.
    remote.connection
    return remote


def _remote(config, target) -> Remote:
    """A Remote for `target` with the target.* timeouts and reconnect settings."""
    return Remote(target, connect_timeout=config.target.connect_timeout,
                  command_timeout=config.target.command_timeout,
                  reconnect_attempts=config.target.reconnect_attempts,
                  reconnect_backoff=config.target.reconnect_backoff)


def _report_format(report: str | None, fmt: str | None, whole_class: bool = False) -> str | None:
    """The --report file's format, checked before anything runs; None without --report."""
    if fmt and not report:
        raise UsageError(f"--format {fmt} without --report.", "Name the file to write: --report PATH.")
    return report_format(report, fmt, whole_class=whole_class) if report else None


def _write(report_path: str, fmt: str, lab: str, results: list, whole_class: bool = False) -> None:
    text = write_report(report_path, lab, results, whole_class=whole_class, fmt=fmt)
    if fmt == "classroom":
        classroom_announce(text, sys.stdout)


def _finish(report, report_path: str | None, fmt: str | None, lab: str) -> None:
    if report_path:
        _write(report_path, fmt, lab, [report])
    if not report.ok:
        raise Exit(code=1)


@contextmanager
def results_despite_errors(report_path: str | None, fmt: str | None, lab: str, host: str, mode: str,
                           steps=None, settings: dict | None = None):
    """A run that fails before it has a report (bad settings, unreachable target, a grading VM that
    would not come up) still writes its --report file: the error is the result, never a missing file."""
    try:
        yield
    except LabError as error:
        if report_path:
            failed = failed_run(LABS[lab], host, mode, error.message, error.hint, settings or {}, steps)
            try:
                _write(report_path, fmt, lab, [failed])
            except LabError:
                pass  # the original error says more than "cannot write the report"
        raise


def _run_lab(c, lab_name, *, provider, vm, host, key, start, only, force, demo, report, fmt, overrides, pause=False):
    lab = LABS[lab_name]
    fmt = _report_format(report, fmt)
    with results_despite_errors(report, fmt, lab_name, host or vm or c.config[lab_name].vm, "solve"):
        steps = lab.select(start, only)
        console = _console()
        settings = _lab_settings(c.config, lab_name, overrides)
        remote = _connect(c, lab_name, console, provider, vm, host, key, settings["workdir"])
        try:
            runner = Runner(lab, remote, make_reporter(console, demo=demo, pause=pause), settings)
            result = runner.solve(steps, force=force)
        finally:
            remote.close()
    _finish(result, report, fmt, lab_name)


def _class_setup(c, lab_name, inventory, parallel, report, fmt):
    """What a class check needs, refusing bad usage before any machine is checked."""
    if parallel < 0:
        raise UsageError(f"--parallel {parallel} is not a number of machines.",
                         "Give 1 or more, or leave it out for target.parallel.")
    fmt = _report_format(report, fmt, whole_class=True)
    students = load_inventory(inventory)
    return LABS[lab_name], students, _lab_settings(c.config, lab_name, {}), parallel or c.config.target.parallel, fmt


def _check_round(c, lab, students, settings, parallel, **callbacks):
    return check_class(lab, students, settings, parallel=parallel, state_dir=state_dir(c.config),
                       connect_timeout=c.config.target.connect_timeout,
                       check_timeout=c.config.target.check_timeout,
                       reconnect_attempts=c.config.target.reconnect_attempts,
                       reconnect_backoff=c.config.target.reconnect_backoff, **callbacks)


def _class_outcome(console, lab, results, report, fmt):
    """The table, the report, and the exit status: 1 when one fails, 3 when no host could be reached."""
    console.print(class_table(lab, results, console.width))
    if report:
        _write(report, fmt, lab.name, results, whole_class=True)
    if not any(isinstance(result, LabReport) or result.reached for result in results):
        raise Exit("Error: no machine of the inventory could be reached.", code=3)
    if not all(isinstance(result, LabReport) and result.ok for result in results):
        raise Exit(code=1)


def _check_class(c, lab_name, inventory, parallel, report, fmt):
    """Check every student of the inventory once."""
    lab, students, settings, parallel, fmt = _class_setup(c, lab_name, inventory, parallel, report, fmt)
    console = _console()
    with ClassProgress(console, lab, [student.name for student in students], parallel) as progress:
        results = _check_round(c, lab, students, settings, parallel,
                               on_status=lambda student, phase: progress.status(student.name, phase),
                               on_result=lambda student, result: progress.finished(student.name, result))
    _class_outcome(console, lab, results, report, fmt)


def _watch_class(c, lab_name, inventory, parallel, report, fmt, seconds):
    """Check the class every `seconds` until Ctrl-C; then the last round's table, report and exit status."""
    if seconds <= 0:
        raise UsageError(f"--watch {seconds} is not a number of seconds.", "Give how often to check, e.g. --watch 30.")
    if not inventory:
        raise UsageError("--watch needs --inventory.", "Watch a class: --inventory class.yaml --watch 30.")
    lab, students, settings, parallel, fmt = _class_setup(c, lab_name, inventory, parallel, report, fmt)
    console = _console()
    watch = ClassWatch(lab.step_ids, c.config.target.stuck_after)
    with WatchView(console, lab, watch, seconds) as view:
        try:
            watch_rounds(lambda: _check_round(c, lab, students, settings, parallel), watch, seconds,
                         view.round_finished)
        except KeyboardInterrupt:
            pass
    if not watch.results:
        raise Exit("Interrupted before the first round finished; no report written.", code=130)
    _class_outcome(console, lab, watch.results, report, fmt)


def _check_lab(c, lab_name, *, provider, vm, host, key, report, fmt, workdir):
    lab = LABS[lab_name]
    fmt = _report_format(report, fmt)
    with results_despite_errors(report, fmt, lab_name, host or vm or c.config[lab_name].vm, "check"):
        console = _console()
        settings = _lab_settings(c.config, lab_name, {"workdir": workdir})
        remote = _connect(c, lab_name, console, provider, vm, host, key, settings["workdir"])
        try:
            result = Runner(lab, remote, make_reporter(console), settings).check()
        finally:
            remote.close()
    _finish(result, report, fmt, lab_name)


def _grade_lab(c, lab_name, *, submission, report, fmt, vm, overrides):
    """Grade the files in `submission` on a fresh VM made like the lab's VM; exit as check.* does."""
    lab = LABS[lab_name]
    fmt = _report_format(report, fmt)
    name = vm_name(lab)
    with results_despite_errors(report, fmt, lab_name, name, "grade", graded_steps(lab)):
        if not submission:
            raise UsageError("grade needs --submission DIR.", "Give the directory holding the student's files.")
        files = read_submission(lab, submission)
        console = _console()
        settings = _lab_settings(c.config, lab_name, overrides)
        reporter = make_reporter(console)
        vm_settings = {**_plain(c.config.vm), "state_dir": str(state_dir(c.config))}
        with progress_display(console, f"Preparing the grading VM {name}") as progress, \
                fresh_vm(vm_settings, name, vm or settings["vm"], progress) as target:
            remote = _remote(c.config, target)
            try:
                result = grade(lab, Runner(lab, remote, reporter, settings), files, reporter)
            finally:
                remote.close()
    _finish(result, report, fmt, lab_name)


# --- lab.* ----------------------------------------------------------------------------------------

SOLVE_HELP = {
    **TARGET_HELP,
    "from": "Start at this step id (the earlier steps are taken as done).",
    "only": "Run only this step id.",
    "force": "Run steps even when their checks already pass.",
    "demo": "Narrate for a class: each step's explanation, its commands (highlighted) and their output; "
            "on a terminal, offers a shell on the target at interactive steps.",
    "pause": "With --demo (implied): wait for Enter before each step; never when stdin is not a terminal.",
}


_TARGET_PARAMS = ("provider", "vm", "host", "key")


def _signature(names_defaults: list[tuple[str, object]]) -> inspect.Signature:
    """A task body's signature (invoke makes its flags from it): the context, then keyword flags."""
    params = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
               for name, default in names_defaults]
    return inspect.Signature(params)


def _made_task(body, name: str, doc: str, signature: inspect.Signature, help_: dict):
    body.__name__ = body.__qualname__ = name.replace(".", "_")
    body.__doc__ = doc
    body.__signature__ = signature
    return task(help=help_)(user_errors(body))


def _option_name(option) -> str:
    return option.flag.replace("-", "_")


def lab_task(lab):
    """`lab.<name>`: solve the lab; the common flags of SOLVE_HELP plus the lab's own options."""
    common = [*((name, None) for name in _TARGET_PARAMS), ("from_", None), ("only", None), ("force", False),
              ("demo", False), ("report", None)]
    # The lab's own flags come before --pause: invoke hands out short flags in this order (-a is --allow-destructive).
    own = [(_option_name(option), False if option.boolean else None) for option in lab.options]
    own += [("pause", False), ("format_", None)]

    def body(c, provider=None, vm=None, host=None, key=None, from_=None, only=None, force=False, demo=False,
             report=None, pause=False, format_=None, **flags):
        overrides = {}
        for option in lab.options:
            value = flags.get(_option_name(option))
            if option.boolean:
                value = value or None
            elif value is not None and option.validate:
                option.validate(value)
            overrides[option.setting] = value
        _run_lab(c, lab.name, provider=provider, vm=vm, host=host, key=key, start=from_, only=only, force=force,
                 demo=demo, report=report, fmt=format_, overrides=overrides, pause=pause)

    help_ = {**SOLVE_HELP, **{_option_name(option): option.help for option in lab.options}}
    return _made_task(body, f"lab.{lab.name}", f"Run the {lab.name} lab on the lab VM, verifying after every step.",
                      _signature(common + own), help_)


@task(positional=["lab"], help={**{k: v for k, v in TARGET_HELP.items() if k not in ("report", "format")},
                                "lab": "The lab to undo: its name (inv lab.list)."})
@user_errors
def lab_reset(c, lab, provider=None, vm=None, host=None, key=None):
    """Undo a lab on the target (mounts, files, images) so that a student can start over."""
    if lab not in LABS:
        raise UsageError(f"Unknown lab '{lab}'.", _choose_a_lab())
    console = _console()
    settings = _lab_settings(c.config, lab, {})
    remote = _connect(c, lab, console, provider, vm, host, key, settings["workdir"])
    try:
        Runner(LABS[lab], remote, make_reporter(console), settings).reset(
            on_line=lambda line: console.print(line, markup=False))
    finally:
        remote.close()
    console.print(f"The {lab} lab is undone on {remote.target.name}: inv lab.{lab} starts it over.")


@task(name="list")
def lab_list(c):
    """List the labs and their steps (id, title, interactive, destructive)."""
    console = _console()
    if not LABS:
        console.print(f"No labs found. {NO_LABS_HINT}")
    for lab in LABS.values():
        table = Table(title=f"{lab.name}: {lab.title}", title_justify="left")
        for column in ("step", "title", "interactive", "destructive"):
            table.add_column(column)
        for step in lab.steps:
            table.add_row(step.id, step.title, "yes" if step.interactive else "", "yes" if step.destructive else "")
        console.print(table)


@task(positional=["lab"], help={**TARGET_HELP, "lab": "The lab to test: its name (inv lab.list).",
                                "provider": "qemu (default, and auto): a fresh VM in a temporary state directory, "
                                            "destroyed afterwards; ssh (with --host) or bakerx: the machine as "
                                            "lab.reset leaves it."})
@user_errors
def lab_test(c, lab, provider=None, vm=None, host=None, key=None, report=None, format_=None):
    """The lab author's proof on a fresh machine: checks fail before each step and pass after it, a re-run
    finds every step done, the self-check changes nothing, and lab.reset undoes the lab."""
    if lab not in LABS:
        raise UsageError(f"Unknown lab '{lab}'.", _choose_a_lab())
    fmt = _report_format(report, format_)
    console = _console()
    settings = _lab_settings(c.config, lab, {})
    chosen = choose(provider or c.config.target.provider, host, _plain(c.config.bakerx),
                    lambda message: console.print(message))
    with _fresh_target(c, lab, console, chosen, vm, host, key, settings["workdir"]) as remote:
        runner = Runner(LABS[lab], remote, SilentReporter(), settings, provider=chosen)
        if chosen != "qemu":
            console.print(f"Undoing the {lab} lab on {remote.target.name} first (lab.reset)")
            runner.reset(on_line=lambda line: None)
        result = test_lab(runner, lambda line: console.print(line, markup=False))
    console.print(f"lab.test {lab}: {result.summary['passed']} passed, {result.summary['failed']} failed "
                  f"in {result.duration_s:.0f} s")
    _finish(result, report, fmt, lab)


@contextmanager
def _fresh_target(c, lab, console, provider, vm, host, key, workdir):
    """A connected Remote: for qemu a new VM (overlay disk on the cached image) in a temporary state
    directory, destroyed at the end; else the machine the provider names."""
    if provider != "qemu":
        remote = _connect(c, lab, console, provider, vm, host, key, workdir)
        try:
            yield remote
        finally:
            remote.close()
        return
    name = vm or c.config[lab].vm
    with tempfile.TemporaryDirectory(prefix="labkit-test-") as state:
        vms = vm_provider("qemu", {**_plain(c.config.vm), "state_dir": state},
                          lambda message: console.print(f"Fresh {name}: {message}"))
        try:
            target = vms.up(name)
            if workdir:
                target = replace(target, workdir=workdir)
            remote = _remote(c.config, target)
            try:
                yield remote
            finally:
                remote.close()
        finally:
            vms.destroy(name)


@task(positional=["name"], help={"name": "The new lab's name (lower case letters, digits and _): its tasks "
                                          "become lab.NAME and check.NAME.",
                                  "dir": "Where to make the folder NAME (default: the current directory)."})
@user_errors
def lab_new(c, name, dir=None):
    """Make a lab folder NAME: a lab.yaml with one step, its solve and check scripts; it passes validation."""
    folder = Path(dir or ".").expanduser() / name
    scaffold(folder, name)
    _console().print(f"Made {folder}: add {folder.parent.resolve()} to labs.paths in invoke.yaml, then "
                     f"inv lab.test {name}.")


# --- check.* --------------------------------------------------------------------------------------

CHECK_HELP = {
    **TARGET_HELP,
    "report": "Write a report: PATH ending in .json, .xml (JUnit), .csv (class runs) or .html (the class page), "
              "or any PATH with --format.",
    "workdir": "Directory holding the student's rootfs and container.sh (default: the login user's home).",
    "inventory": "YAML file listing a class's machines (defaults: and hosts:); checks them all.",
    "parallel": "How many machines of --inventory to check at once (default: target.parallel).",
    "watch": "With --inventory: check the class again every SECONDS, showing who is at which step and "
             "for how long (stuck after target.stuck_after seconds); Ctrl-C ends it and writes --report.",
}


def check_task(lab):
    """`check.<name>`: the read-only self-check of one machine, or of a class with --inventory."""

    def body(c, provider=None, vm=None, host=None, key=None, report=None, workdir=None, inventory=None,
             parallel=0, watch=0, format_=None):
        if watch:
            _watch_class(c, lab.name, inventory, parallel, report, format_, watch)
        elif inventory:
            _check_class(c, lab.name, inventory, parallel, report, format_)
        else:
            _check_lab(c, lab.name, provider=provider, vm=vm, host=host, key=key, report=report, fmt=format_,
                       workdir=workdir)

    params = [*((name, None) for name in _TARGET_PARAMS), ("report", None), ("workdir", None), ("inventory", None),
              ("parallel", 0), ("watch", 0), ("format_", None)]
    help_ = {**CHECK_HELP, "workdir": f"Directory the {lab.name} lab works in (default: {lab.name}.workdir, "
                                      "empty: the login user's home)."}
    return _made_task(body, f"check.{lab.name}",
                      f"Check the student's {lab.name} lab, read-only: which steps are done, which are wrong, and hints.",
                      _signature(params), help_)


# --- grade.* --------------------------------------------------------------------------------------

GRADE_HELP = {
    "submission": "Directory holding the student's handed-in files (the lab's handins: container.sh, Dockerfile).",
    "report": TARGET_HELP["report"],
    "format": TARGET_HELP["format"],
    "vm": "Configured VM whose image the fresh grading VM is made from (default: the lab's VM setting).",
}


def grade_task(lab):
    """`grade.<name>` for a lab with files to hand in: grade a submission on a fresh VM."""

    def body(c, submission=None, report=None, format_=None, vm=None):
        _grade_lab(c, lab.name, submission=submission, report=report, fmt=format_, vm=vm,
                   overrides=dict(lab.grading_settings))

    handins = ", ".join(handin.name for handin in lab.handins)
    return _made_task(body, f"grade.{lab.name}",
                      f"Grade a student's {handins} for the {lab.name} lab on a fresh VM: labkit does the other "
                      "steps, installs the files, checks.",
                      _signature([("submission", None), ("report", None), ("format_", None), ("vm", None)]), GRADE_HELP)


# What is made for every lab found: lab.<name>, check.<name>, and grade.<name> where a lab has hand-ins.
LAB_TASK_FACTORIES = {"lab": lab_task, "check": check_task, "grade": grade_task}


SETUP_HELP = {
    "provider": "The provider to check this computer for: auto (default: as the labs choose it), qemu (the built-in VM), "
                "bakerx (Node.js, bakerx, VirtualBox) or ssh (with --host: the key, the machine, the login).",
    "host": "With --provider ssh (or auto): the machine the labs will use, USER@HOST[:PORT].",
    "key": "The private key for --host.",
    "report": "Write a report: PATH ending in .json or .xml (JUnit).",
}


@task(name="setup", help=SETUP_HELP)
@user_errors
def check_setup(c, provider=None, host=None, key=None, report=None):
    """Check this computer's setup for the labs, read-only: exit 0 when ready, 1 when an item fails."""
    fmt = _report_format(report, None)
    console = _console()
    chosen = choose(provider or c.config.target.provider, host, _plain(c.config.bakerx),
                    lambda message: console.print(message, markup=False))
    if chosen == "ssh":
        parse_host(host)
    scope = SetupScope(chosen, vm_settings=_plain(c.config.vm), bakerx_settings=_plain(c.config.bakerx), host=host or "",
                             key=key or "", state_dir=state_dir(c.config), connect_timeout=c.config.target.connect_timeout)
    _finish(setup_check(scope, make_reporter(console)), report, fmt, "setup")


# --- vm.* -----------------------------------------------------------------------------------------

VM_HELP = {"name": "VM name (con0 for the chroot lab).", "provider": "auto (default), qemu or bakerx."}


def _vms(c, provider, console):
    return vm_provider(provider or c.config.target.provider, _plain(c.config.vm), lambda message: console.print(message),
                       _plain(c.config.bakerx))


@task(help={**VM_HELP, "arch": "Guest CPU of a new VM: auto (this computer's; default: setting vm.arch), x86_64 or "
                                 "aarch64. A VM keeps the arch it was created with (qemu provider only)."},
      positional=["name"])
@user_errors
def vm_up(c, name, provider=None, arch=None):
    """Build the VM image if needed, boot the VM and wait until it answers over SSH."""
    console = _console()
    with progress_display(console, f"Starting {name}") as progress:
        machines = vm_provider(provider or c.config.target.provider, _plain(c.config.vm), progress, _plain(c.config.bakerx))
        if arch and not hasattr(machines, "accel"):
            raise UsageError("--arch needs the built-in VM.", "Add --provider qemu, or leave --arch out.")
        target = machines.up(name, arch) if arch else machines.up(name)
    console.print(f"{name} is up: ssh {target.address} (inv vm.ssh {name})")
    for status in machines.status():
        if status.name == name and status.accel:
            console.print(f"{name} ({status.arch}) runs with {status.accel}")


@task(help={"provider": VM_HELP["provider"]})
@user_errors
def vm_status(c, provider=None):
    """Show every lab VM, whether it runs, and its SSH address."""
    console = _console()
    table = Table("name", "provider", "state", "address", "image", "arch", "accelerator (why)")
    for status in _vms(c, provider, console).status():
        table.add_row(status.name, status.provider, status.state, status.address, status.image, status.arch, status.accel)
    console.print(table)
    console.print(cache_table(_plain(c.config.vm), state_dir(c.config)))


def cache_table(vm_settings: dict, state: Path) -> Table:
    """The image cache: each mmdebstrap build and cloud image download, its size, and what keeps it."""
    cached = imagecache.entries(vm_settings, state)
    total = imagecache.human_size(sum(entry.size for entry in cached))
    table = Table("image", "source", "size", "kept because", title=f"Image cache: {total} in {vmimage.cache_dir(vm_settings)}",
                  title_justify="left")
    for entry in cached:
        reasons = (["current recipe"] if entry.current else []) + [f"VM {name}" for name in entry.used_by]
        table.add_row(entry.path.name, f"{entry.kind} {entry.name}" if entry.kind == "cloud" else entry.kind,
                      imagecache.human_size(entry.size), ", ".join(reasons) or "nothing (inv vm.prune removes it)")
    return table


@task(help={"dry_run": "Only list what would be removed."})
@user_errors
def vm_prune(c, dry_run=False):
    """Remove cached images and downloads that no current recipe and no existing VM uses."""
    console = _console()
    removed = imagecache.prune(_plain(c.config.vm), state_dir(c.config), dry_run=dry_run)
    verb = "Would remove" if dry_run else "Removed"
    for entry in removed:
        console.print(f"{verb} {entry.path} ({entry.kind}, {imagecache.human_size(entry.size)})")
    freed = imagecache.human_size(sum(entry.size for entry in removed))
    console.print(f"{verb} {len(removed)} cached image(s), {'freeing' if dry_run else 'freed'} {freed}."
                  if removed else "Nothing to prune: every cached image is used by a recipe or a VM.")


@task(help=VM_HELP, positional=["name"])
@user_errors
def vm_ssh(c, name, provider=None):
    """Open an interactive SSH session on the VM."""
    command = _vms(c, provider, _console()).ssh_command(name)
    sys.stdout.flush()
    os.execvp(command[0], command)


@task(help=VM_HELP, positional=["name"])
@user_errors
def vm_down(c, name, provider=None):
    """Shut the VM down, keeping its disk."""
    _vms(c, provider, _console()).down(name)


@task(help=VM_HELP, positional=["name"])
@user_errors
def vm_destroy(c, name, provider=None):
    """Stop the VM and delete its disk, keys and pinned host key."""
    _vms(c, provider, _console()).destroy(name)


@task(name="ssh-config", help={"provider": "auto (default: every provider's VMs), qemu or bakerx."})
@user_errors
def vm_ssh_config(c, provider=None):
    """Print an OpenSSH config block per lab VM (for ssh -F, VS Code Remote-SSH, testinfra, ansible)."""
    sys.stdout.write(ssh_config(provider or c.config.target.provider, _plain(c.config.vm), _plain(c.config.bakerx)))


# --- render.* -------------------------------------------------------------------------------------

@task(name="container-sh", help={"shebang": "Interpreter for the #! line (default: chroot.container_sh.shebang; its default auto prints the workshop's /bin/ash)."})
@user_errors
def render_container_sh(c, shebang=None):
    """Print container.sh as the chroot lab renders it from templates/container.sh.j2."""
    settings = _lab_settings(c.config, "chroot", {})
    wanted = shebang or settings["container_sh"]["shebang"]
    values = chroot_lab.container_sh_values(settings, "/bin/ash" if wanted == "auto" else wanted)
    sys.stdout.write(render("container.sh.j2", values, "chroot.container_sh"))


@task(name="dockerfile")
@user_errors
def render_dockerfile(c):
    """Print the Dockerfile as the docker lab renders it from templates/Dockerfile.j2."""
    settings = _lab_settings(c.config, "docker", {})
    sys.stdout.write(render("Dockerfile.j2", docker_lab.dockerfile_values(settings), "docker.dockerfile"))


def _collection(name: str, *tasks_, **named) -> Collection:
    collection = Collection(name)
    for item in tasks_:
        collection.add_task(item)
    for task_name, item in named.items():
        collection.add_task(item, name=task_name)
    return collection


def _per_lab(kind: str, *tasks_, **named) -> Collection:
    """The collection `kind` with a task for every lab found (lab.chroot, check.docker, ...); grade
    only for labs with hand-ins."""
    factory = LAB_TASK_FACTORIES[kind]
    labs = {name: lab for name, lab in LABS.items() if kind != "grade" or lab.handins}
    return _collection(kind, *tasks_, **named, **{name: factory(lab) for name, lab in labs.items()})


ns = Collection()
ns.add_collection(_per_lab("lab", lab_list, reset=lab_reset, test=lab_test, new=lab_new))
ns.add_collection(_per_lab("check", check_setup))
ns.add_collection(_per_lab("grade"))
ns.add_collection(_collection("vm", vm_ssh_config, up=vm_up, status=vm_status, ssh=vm_ssh, down=vm_down,
                              destroy=vm_destroy, prune=vm_prune))
ns.add_collection(_collection("render", render_container_sh, render_dockerfile))
ns.configure(DEFAULTS)

program = Program(namespace=ns, version=__version__, binary="labkit", binary_names=["labkit"])
