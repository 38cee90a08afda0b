"""The task collection (`inv ...` in a checkout, `labkit ...` once installed) and its defaults.

Defaults live in `ns.configure`, so invoke.yaml, ~/.invoke.yaml, INVOKE_* variables and flags override
them without any configuration code of our own. Tasks turn flags into settings, then hand over to the
runner; every LabError becomes a plain message and its exit status.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from invoke import Collection, Exit, Program, task
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
from .runner import Runner
from .setup import SetupScope, check_setup as setup_check
from .templates import render
from .watch import ClassWatch, watch_rounds

LABS = {"chroot": chroot_lab.LAB, "docker": docker_lab.LAB}

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
    "chroot": {
        "vm": "con0",
        "workdir": "",
        "rootfs": "rootfs",
        "script": "container.sh",
        "points": {},
        "hidden": [],
        "busybox": {
            "source": "auto",
            "url": "https://www.busybox.net/downloads/binaries/1.31.0-defconfig-multiarch-musl/busybox-i686",
            "urls": {"aarch64": chroot_lab.ARMV8_URL},
            "sha256": "",
        },
        "container_sh": {
            "shebang": "auto",
            "tmp_base": "/tmp",
            "prompt_suffix": "-# ",
            "nonce_length": 10,
        },
    },
    "docker": {
        "vm": "docker0",
        "workdir": "",
        "points": {},
        "hidden": [],
        "install_method": "script",
        "install_script_url": "https://get.docker.com/",
        "registry_mirror": "",
        "insecure_registries": [],
        "preload": [],
        "allow_destructive": False,
        "images": {"hello": "hello-world", "base": "ubuntu:18.04"},
        "tag": "java11",
        "build_timeout": 3600,
        "expect": {"hello": "Hello from Docker!", "mvn": "Apache Maven"},
        "dockerfile": {
            "apt_update": True,
            "packages": [["openjdk-11-jre-headless", "wget", "curl", "unzip"], ["git"], ["maven"]],
            "java_home": "/usr/lib/jvm/java-11-openjdk-amd64",
            "extra_instructions": [],
        },
    },
}

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
    remote = Remote(target, connect_timeout=config.target.connect_timeout,
                    command_timeout=config.target.command_timeout,
                    reconnect_attempts=config.target.reconnect_attempts,
                    reconnect_backoff=config.target.reconnect_backoff)
    # Log in before the run's header is printed: a machine that cannot be reached gets its error alone.
    remote.connection
    return remote


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
            remote = Remote(target, connect_timeout=c.config.target.connect_timeout,
                            command_timeout=c.config.target.command_timeout,
                            reconnect_attempts=c.config.target.reconnect_attempts,
                            reconnect_backoff=c.config.target.reconnect_backoff)
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


@task(help={**SOLVE_HELP,
            "busybox": "Where busybox comes from: auto (default: the workshop's download, else the target's own "
                       "static busybox, said in the output and the report), url (the download only), target (the "
                       "target's own busybox) or a PATH to a static busybox on this machine (uploaded)."})
@user_errors
def lab_chroot(c, provider=None, vm=None, host=None, key=None, from_=None, only=None, force=False, demo=False,
               report=None, busybox=None, pause=False, format_=None):
    """Run the chroot lab on the lab VM, verifying after every step."""
    if busybox and busybox not in chroot_lab.BUSYBOX_SOURCES and not Path(busybox).expanduser().is_file():
        raise UsageError(f"--busybox {busybox}: no such file.",
                         "Give auto, url, target, or the path of a static busybox binary.")
    _run_lab(c, "chroot", provider=provider, vm=vm, host=host, key=key, start=from_, only=only, force=force,
             demo=demo, report=report, fmt=format_, overrides={"busybox.source": busybox}, pause=pause)


@task(help={**SOLVE_HELP,
            "allow_destructive": "Run the isolation step (rm -rf / inside a container) even on a machine "
                                 "that labkit did not provision as a lab VM."})
@user_errors
def lab_docker(c, provider=None, vm=None, host=None, key=None, from_=None, only=None, force=False, demo=False,
               report=None, allow_destructive=False, pause=False, format_=None):
    """Run the docker lab on the lab VM, verifying after every step."""
    _run_lab(c, "docker", provider=provider, vm=vm, host=host, key=key, start=from_, only=only, force=force,
             demo=demo, report=report, fmt=format_, overrides={"allow_destructive": allow_destructive or None},
             pause=pause)


@task(positional=["lab"], help={**{k: v for k, v in TARGET_HELP.items() if k not in ("report", "format")},
                                "lab": "The lab to undo: chroot or docker."})
@user_errors
def lab_reset(c, lab, provider=None, vm=None, host=None, key=None):
    """Undo a lab on the target (mounts, files, images) so that a student can start over."""
    if lab not in LABS:
        raise UsageError(f"Unknown lab '{lab}'.", f"Choose one of: {', '.join(LABS)}.")
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
    for lab in LABS.values():
        table = Table(title=f"{lab.name}: {lab.title}", title_justify="left")
        for column in ("step", "title", "interactive", "destructive"):
            table.add_column(column)
        for step in lab.steps:
            table.add_row(step.id, step.title, "yes" if step.interactive else "", "yes" if step.destructive else "")
        console.print(table)


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


@task(help=CHECK_HELP)
@user_errors
def check_chroot(c, provider=None, vm=None, host=None, key=None, report=None, workdir=None, inventory=None,
                 parallel=0, watch=0, format_=None):
    """Check the student's chroot lab, read-only: which steps are done, which are wrong, and hints."""
    if watch:
        _watch_class(c, "chroot", inventory, parallel, report, format_, watch)
    elif inventory:
        _check_class(c, "chroot", inventory, parallel, report, format_)
    else:
        _check_lab(c, "chroot", provider=provider, vm=vm, host=host, key=key, report=report, fmt=format_,
                   workdir=workdir)


@task(help={**CHECK_HELP, "workdir": "Directory holding the student's Dockerfile (default: the login user's home)."})
@user_errors
def check_docker(c, provider=None, vm=None, host=None, key=None, report=None, workdir=None, inventory=None,
                 parallel=0, watch=0, format_=None):
    """Check the student's docker lab, read-only: daemon, group, images, Dockerfile, java11 and mvn."""
    if watch:
        _watch_class(c, "docker", inventory, parallel, report, format_, watch)
    elif inventory:
        _check_class(c, "docker", inventory, parallel, report, format_)
    else:
        _check_lab(c, "docker", provider=provider, vm=vm, host=host, key=key, report=report, fmt=format_,
                   workdir=workdir)


# --- grade.* --------------------------------------------------------------------------------------

GRADE_HELP = {
    "submission": "Directory holding the student's handed-in files (the lab's handins: container.sh, Dockerfile).",
    "report": TARGET_HELP["report"],
    "format": TARGET_HELP["format"],
    "vm": "Configured VM whose image the fresh grading VM is made from (default: the lab's VM setting).",
}


@task(help=GRADE_HELP)
@user_errors
def grade_chroot(c, submission=None, report=None, format_=None, vm=None):
    """Grade a student's container.sh on a fresh VM: labkit builds the rootfs, installs the file, checks."""
    # The grading VM is the built-in image, which has a static busybox: no download needed.
    _grade_lab(c, "chroot", submission=submission, report=report, fmt=format_, vm=vm,
               overrides={"busybox.source": "target"})


@task(help=GRADE_HELP)
@user_errors
def grade_docker(c, submission=None, report=None, format_=None, vm=None):
    """Grade a student's Dockerfile on a fresh VM: labkit readies Docker, installs the file, builds, checks."""
    _grade_lab(c, "docker", submission=submission, report=report, fmt=format_, vm=vm, overrides={})


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


ns = Collection()
ns.add_collection(_collection("lab", lab_list, chroot=lab_chroot, docker=lab_docker, reset=lab_reset))
ns.add_collection(_collection("check", check_setup, chroot=check_chroot, docker=check_docker))
ns.add_collection(_collection("grade", chroot=grade_chroot, docker=grade_docker))
ns.add_collection(_collection("vm", vm_ssh_config, up=vm_up, status=vm_status, ssh=vm_ssh, down=vm_down,
                              destroy=vm_destroy, prune=vm_prune))
ns.add_collection(_collection("render", render_container_sh, render_dockerfile))
ns.configure(DEFAULTS)

program = Program(namespace=ns, version=__version__, binary="labkit", binary_names=["labkit"])
