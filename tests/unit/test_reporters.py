"""The reporters draw what the runner tells them: driven through the Reporter protocol, compared as text."""

from io import StringIO

import pytest
from rich.console import Console

from labs import chroot
from labs.model import Check, CheckResult, Lab, LabReport, Step, StepResult
from labs.reporters import LIVE_TAIL, DemoReporter, PlainReporter, RichReporter, make_reporter, verdict

HOST = "root@127.0.0.1:2222"

DIRS = Check("rootfs.dirs", "test -d rootfs/bin", "rootfs/bin is missing", "Run mkdir -p rootfs/bin")
RUNS = Check("busybox.runs", "rootfs/bin/busybox true", "busybox does not run", "Download busybox again")
ROOTFS = Step("rootfs", "Create the root filesystem", "", lambda ctx: None, (DIRS,))
BUSYBOX = Step("busybox", "Install busybox", "", lambda ctx: None, (RUNS,))
LAB = Lab("chroot", "Chroot containers", (ROOTFS, BUSYBOX))

DIRS_PASS = CheckResult("rootfs.dirs", "rootfs", "pass", duration_s=0.03)
RUNS_FAIL = CheckResult("busybox.runs", "busybox", "fail", RUNS.message, RUNS.hint, 0.5, "sh: busybox: not found")
ROOTFS_DONE = StepResult("rootfs", "pass", 0.21)
BUSYBOX_FAILED = StepResult("busybox", "fail", 1.5)


def failing_run(reporter, mode="solve", rootfs_result=ROOTFS_DONE):
    """The call sequence of a run whose first step passes and second step's check fails."""
    reporter.lab_started(LAB, [ROOTFS, BUSYBOX], HOST, mode)
    reporter.step_started(ROOTFS)
    if not rootfs_result.already_done:
        reporter.command(ROOTFS, "mkdir -p rootfs/bin\nls rootfs")
        reporter.output(ROOTFS, "bin\n")
    reporter.check_finished(DIRS_PASS)
    reporter.step_finished(ROOTFS, rootfs_result)
    reporter.step_started(BUSYBOX)
    reporter.command(BUSYBOX, "wget -O rootfs/bin/busybox https://busybox.net/x")
    reporter.output(BUSYBOX, "\x1b[31mConnecting to busybox.net\x1b[0m")
    reporter.check_finished(RUNS_FAIL)
    reporter.step_finished(BUSYBOX, BUSYBOX_FAILED)
    report = LabReport("chroot", HOST, "ssh", "2026-01-01T10:00:00+00:00", mode=mode, duration_s=3.21,
                       steps=[rootfs_result, BUSYBOX_FAILED], checks=[DIRS_PASS, RUNS_FAIL])
    reporter.lab_finished(report)


def passing_run(reporter):
    reporter.lab_started(LAB, [ROOTFS], HOST, "solve")
    reporter.step_started(ROOTFS)
    reporter.command(ROOTFS, "mkdir -p rootfs/bin")
    reporter.check_finished(DIRS_PASS)
    reporter.step_finished(ROOTFS, ROOTFS_DONE)
    reporter.lab_finished(LabReport("chroot", HOST, "ssh", "2026-01-01T10:00:00+00:00", duration_s=0.25,
                                    steps=[ROOTFS_DONE], checks=[DIRS_PASS]))


def rich_text(drive, **kwargs) -> str:
    console = Console(file=StringIO(), width=80)
    drive(RichReporter(console), **kwargs)
    return console.file.getvalue()


def plain_lines(drive, **kwargs) -> list[str]:
    stream = StringIO()
    drive(PlainReporter(stream), **kwargs)
    return stream.getvalue().splitlines()


# PlainReporter

def test_plain_reporter_writes_one_prefixed_line_per_event():
    assert plain_lines(failing_run) == [
        "running chroot (Chroot containers) on root@127.0.0.1:2222: 2 steps",
        "[rootfs] running: Create the root filesystem",
        "[rootfs] $ mkdir -p rootfs/bin",
        "[rootfs]   ls rootfs",
        "[rootfs] | bin",
        "[rootfs] check rootfs.dirs: pass (0.03s)",
        "[rootfs] done in 0.21s",
        "[busybox] running: Install busybox",
        "[busybox] $ wget -O rootfs/bin/busybox https://busybox.net/x",
        "[busybox] | Connecting to busybox.net",
        "[busybox] FAIL check busybox.runs: busybox does not run (0.50s)",
        "[busybox]   saw: sh: busybox: not found",
        "[busybox]   hint: Download busybox again",
        "[busybox] failed after 1.50s",
        "summary:",
        "  rootfs   done            0.21s  Create the root filesystem",
        "  busybox  failed          1.50s  Install busybox",
        "chroot on root@127.0.0.1:2222: 1 passed, 1 failed, 0 skipped, 0 errors in 3.2s",
    ]


def test_plain_reporter_says_checking_and_already_done():
    lines = plain_lines(failing_run, mode="check",
                        rootfs_result=StepResult("rootfs", "pass", 0.04, already_done=True))
    assert lines[0].startswith("checking chroot ")
    assert "[rootfs] checking: Create the root filesystem" in lines
    assert "[rootfs] already done" in lines
    assert not any(line.startswith("[rootfs] $") for line in lines)


def test_plain_reporter_has_no_escape_sequences():
    assert "\x1b" not in "\n".join(plain_lines(failing_run))


def test_plain_reporter_reports_an_error_check():
    stream = StringIO()
    reporter = PlainReporter(stream)
    reporter.lab_started(LAB, [ROOTFS], HOST, "check")
    reporter.check_finished(CheckResult("rootfs.dirs", "rootfs", "error", "ssh: connection reset", "", 1.0))
    assert "[rootfs] ERROR check rootfs.dirs: ssh: connection reset (1.00s)" in stream.getvalue()
    assert "hint:" not in stream.getvalue()


# RichReporter

def test_rich_reporter_shows_steps_commands_output_and_checks():
    text = rich_text(failing_run)
    assert text.startswith("Running Chroot containers (chroot) on root@127.0.0.1:2222\n")
    assert "✓ rootfs  Create the root filesystem  done 0.21s" in text
    assert "$ mkdir -p rootfs/bin" in text
    assert "Connecting to busybox.net" in text
    assert "\x1b" not in text  # remote colours are parsed, not passed through to a file
    assert "✓ rootfs.dirs (0.03s)" in text
    assert "✗ busybox  Install busybox  failed 1.50s" in text
    assert "✗ busybox.runs failed: busybox does not run (0.50s)" in text
    assert "saw: sh: busybox: not found" in text
    assert "hint: Download busybox again" in text
    # The failing step's checks come after its output panel, in the order of the run.
    assert text.index("Connecting to busybox.net") < text.index("busybox.runs failed") < text.index("hint:")


def test_rich_reporter_ends_with_summary_table_and_verdict():
    text = rich_text(failing_run)
    summary = text[text.index("Step"):]
    rows = [line.split() for line in summary.splitlines()]
    assert ["rootfs", "Create", "the", "root", "filesystem", "✓", "done", "0.21s"] in rows
    assert ["busybox", "Install", "busybox", "✗", "failed", "1.50s"] in rows
    assert text.rstrip().splitlines()[-1] == (
        "✗ chroot on root@127.0.0.1:2222: 1 passed, 1 failed, 0 skipped, 0 errors in 3.2s")


def test_rich_reporter_verdict_ticks_a_passing_run():
    text = rich_text(passing_run)
    assert text.rstrip().splitlines()[-1] == (
        "✓ chroot on root@127.0.0.1:2222: 1 passed, 0 failed, 0 skipped, 0 errors in 0.2s")
    assert "✗" not in text


def test_rich_reporter_check_mode_and_already_done():
    text = rich_text(failing_run, mode="check",
                     rootfs_result=StepResult("rootfs", "pass", 0.04, already_done=True))
    assert text.startswith("Checking Chroot containers")
    assert "✓ rootfs  Create the root filesystem  already done" in text
    assert "✓ already done" in text[text.index("Step"):]


def test_rich_reporter_output_is_deterministic_without_a_terminal():
    assert rich_text(failing_run) == rich_text(failing_run)


def test_rich_reporter_keeps_markup_in_output_literal():
    console = Console(file=StringIO(), width=80)
    reporter = RichReporter(console)
    reporter.lab_started(LAB, [ROOTFS], HOST, "solve")
    reporter.step_started(ROOTFS)
    reporter.output(ROOTFS, "[bold]not markup[/bold]")
    reporter.step_finished(ROOTFS, ROOTFS_DONE)
    reporter.close()
    assert "[bold]not markup[/bold]" in console.file.getvalue()


def test_rich_reporter_shows_the_latest_check_result_once():
    console = Console(file=StringIO(), width=80)
    reporter = RichReporter(console)
    reporter.lab_started(LAB, [ROOTFS], HOST, "solve")
    reporter.step_started(ROOTFS)
    reporter.check_finished(CheckResult("rootfs.dirs", "rootfs", "fail", "rootfs/bin is missing", "mkdir"))
    reporter.command(ROOTFS, "mkdir -p rootfs/bin")
    reporter.check_finished(DIRS_PASS)
    reporter.step_finished(ROOTFS, ROOTFS_DONE)
    reporter.close()
    text = console.file.getvalue()
    assert text.count("rootfs.dirs") == 1
    assert "missing" not in text


def render(renderable) -> str:
    console = Console(file=StringIO(), width=80)
    console.print(renderable)
    return console.file.getvalue()


def test_live_view_lists_steps_and_tails_the_running_step():
    reporter = RichReporter(Console(file=StringIO(), width=80))
    reporter.lab_started(LAB, [ROOTFS, BUSYBOX], HOST, "check")
    reporter.step_started(ROOTFS)
    reporter.command(ROOTFS, "ls rootfs")
    for number in range(LIVE_TAIL + 5):
        reporter.output(ROOTFS, f"output line {number}")
    reporter.check_finished(CheckResult("rootfs.dirs", "rootfs", "fail", "rootfs/bin is missing", "Run mkdir"))
    view = render(reporter._render_live())
    reporter.close()
    assert "rootfs" in view and "checking" in view
    assert "busybox" in view and "pending" in view
    assert "… 6 earlier lines" in view
    assert "output line 4\n" not in view and "output line 5" in view and f"output line {LIVE_TAIL + 4}" in view
    assert "hint: Run mkdir" in view


def test_live_view_marks_finished_steps():
    reporter = RichReporter(Console(file=StringIO(), width=80))
    reporter.lab_started(LAB, [ROOTFS, BUSYBOX], HOST, "solve")
    reporter.step_started(ROOTFS)
    reporter.step_finished(ROOTFS, StepResult("rootfs", "pass", 0.1, already_done=True))
    reporter.step_started(BUSYBOX)
    reporter.output(BUSYBOX, "downloading")
    view = render(reporter._render_live())
    reporter.close()
    assert "✓ rootfs" in view and "already done" in view
    assert "running" in view and "downloading" in view


# make_reporter

def test_make_reporter_picks_plain_for_a_file_and_rich_for_a_terminal():
    stream = StringIO()
    plain = make_reporter(Console(file=stream, width=80))
    assert isinstance(plain, PlainReporter) and plain.stream is stream
    assert isinstance(make_reporter(Console(file=StringIO(), force_terminal=True)), RichReporter)


def test_make_reporter_narrates_in_demo_mode_which_pause_implies():
    terminal = Console(file=StringIO(), force_terminal=True)
    assert isinstance(make_reporter(terminal, demo=True), DemoReporter)
    paused = make_reporter(terminal, pause=True)
    assert isinstance(paused, DemoReporter) and paused.pause
    logged = make_reporter(Console(file=StringIO(), width=80), pause=True)
    assert isinstance(logged, PlainReporter) and logged.demo


# DemoReporter

EXPLAINED = Step("symlinks", "Install the busybox symlinks",
                 "`busybox --install -s` creates a symlink for every **applet**.", lambda ctx: None, (DIRS,),
                 interactive=True, shell="chroot rootfs sh")


class Keyboard(StringIO):
    """Lines a person types at a terminal (or, with tty=False, a file on stdin)."""

    def __init__(self, text: str = "", tty: bool = True):
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def demo_text(drive, pause=False, keyboard=None, terminal=False, colours=None) -> str:
    console = Console(file=StringIO(), width=80, force_terminal=terminal, color_system=colours)
    drive(DemoReporter(console, pause, keyboard or Keyboard(tty=False)))
    return console.file.getvalue()


def narrated_step(reporter):
    reporter.lab_started(LAB, [ROOTFS, EXPLAINED], HOST, "solve")
    reporter.step_started(EXPLAINED)
    reporter.command(EXPLAINED, 'PS1="C-$ " chroot rootfs /bin/busybox sh    # then: ls')
    reporter.output(EXPLAINED, "\x1b[34mbin\x1b[0m  [bold]sbin[/bold]")
    reporter.check_finished(DIRS_PASS)
    reporter.step_finished(EXPLAINED, StepResult("symlinks", "pass", 0.4))
    reporter.lab_finished(LabReport("chroot", HOST, "ssh", "t", duration_s=0.5, steps=[StepResult("symlinks", "pass", 0.4)],
                                    checks=[DIRS_PASS]))


def test_demo_reporter_shows_explanation_command_and_output_in_order():
    text = demo_text(narrated_step)
    assert "Demo: Chroot containers (chroot) on root@127.0.0.1:2222" in text
    assert "Step 2/2 symlinks: Install the busybox symlinks" in text
    # Markdown, rendered: no backticks or asterisks left.
    assert "busybox --install -s creates a symlink for every applet." in text
    assert '$ PS1="C-$ " chroot rootfs /bin/busybox sh    # then: ls' in text
    assert "│ bin  [bold]sbin[/bold]" in text  # remote colours parsed, remote text never read as markup
    assert "✓ rootfs.dirs (0.03s)" in text and "✓ symlinks  Install the busybox symlinks  done 0.40s" in text
    assert text.index("creates a symlink") < text.index("$ PS1") < text.index("│ bin") < text.index("✓ rootfs.dirs")
    assert text.rstrip().endswith("✓ chroot on root@127.0.0.1:2222: 1 passed, 0 failed, 0 skipped, 0 errors in 0.5s")
    assert "Press Enter" not in text


def test_demo_reporter_highlights_commands_on_a_terminal():
    text = demo_text(narrated_step, terminal=True, colours="256")
    line = text[text.index("PS1"):].split("\n", 1)[0]
    assert len({code for code in line.split("\x1b[")[1:] if not code.startswith("0m")}) >= 3


def test_demo_reporter_pauses_before_each_step_only_for_a_person():
    keyboard = Keyboard("\n\n")
    text = demo_text(narrated_step, pause=True, keyboard=keyboard, terminal=True)
    assert text.count("Press Enter to run this step") == 1 and keyboard.read() == "\n"
    assert text.index("Press Enter") < text.index("PS1")
    piped = Keyboard("\n", tty=False)
    assert "Press Enter" not in demo_text(narrated_step, pause=True, keyboard=piped, terminal=True)
    assert piped.read() == "\n"  # never read
    # A terminal for stdin but output to a file: nobody sees a prompt, so none is waited for.
    assert "Press Enter" not in demo_text(narrated_step, pause=True, keyboard=Keyboard("\n"))


@pytest.mark.parametrize("typed, opened", [("y\n", True), ("YES\n", True), ("\n", False), ("n\n", False), ("", False)])
def test_demo_reporter_offers_the_shell_and_takes_no_for_an_answer(typed, opened):
    console = Console(file=StringIO(), width=80, force_terminal=True, color_system=None)
    reporter = DemoReporter(console, stdin=Keyboard(typed))
    reporter.lab_started(LAB, [EXPLAINED], HOST, "solve")
    assert reporter.offer_shell(EXPLAINED) is opened
    text = console.file.getvalue()
    assert f"Open this step's shell on {HOST} and try it yourself? [y/N]" in text
    assert ("exit (or Ctrl-D) comes back to the lab" in text) is opened


def test_only_a_person_at_a_terminal_is_offered_a_shell():
    piped = DemoReporter(Console(file=StringIO(), force_terminal=True), stdin=Keyboard("y\n", tty=False))
    logged = DemoReporter(Console(file=StringIO()), stdin=Keyboard("y\n"))
    closed = DemoReporter(Console(file=StringIO(), force_terminal=True), stdin=None)
    closed.stdin = None
    for reporter in (piped, logged, closed):
        reporter.lab_started(LAB, [EXPLAINED], HOST, "solve")
        assert reporter.offer_shell(EXPLAINED) is False
    assert piped.stdin.read() == "y\n"
    rich, plain = RichReporter(Console(file=StringIO(), force_terminal=True)), PlainReporter(StringIO())
    assert rich.offer_shell(EXPLAINED) is False and plain.offer_shell(EXPLAINED) is False
    rich.close()


@pytest.mark.parametrize("reporter_type", [PlainReporter, RichReporter])
def test_reporters_handle_skipped_checks(reporter_type):
    stream = StringIO()
    reporter = reporter_type(Console(file=stream, width=80) if reporter_type is RichReporter else stream)
    reporter.lab_started(LAB, [ROOTFS], HOST, "check")
    reporter.step_started(ROOTFS)
    reporter.check_finished(CheckResult("rootfs.dirs", "rootfs", "skip", "no rootfs yet"))
    reporter.step_finished(ROOTFS, StepResult("rootfs", "skip"))
    reporter.lab_finished(LabReport("chroot", HOST, "ssh", "t", mode="check", steps=[StepResult("rootfs", "skip")],
                                    checks=[CheckResult("rootfs.dirs", "rootfs", "skip", "no rootfs yet")]))
    text = stream.getvalue()
    assert "rootfs.dirs" in text and "skip" in text and "no rootfs yet" in text
    assert "0 passed, 0 failed, 1 skipped, 0 errors" in text


# --- evidence and warnings --------------------------------------------------------------------------

EVIDENCE = CheckResult("overlay.isolated", "busybox", "fail", "bad overlay type", "Write mount -t overlay", 1.0,
                       "mount: /tmp/x/overlay: unknown filesystem type 'overlayfs'.\nchroot: cannot run\ncontainer.sh failed")
WARNED = CheckResult("busybox.runs", "busybox", "pass", "the socket is open to everyone", "chmod 660 it", 0.1,
                     "/var/run/docker.sock is srw-rw-rw-")


def checks_only(reporter, results):
    reporter.lab_started(LAB, [BUSYBOX], HOST, "check")
    reporter.step_started(BUSYBOX)
    for result in results:
        reporter.check_finished(result)
    reporter.step_finished(BUSYBOX, BUSYBOX_FAILED)


@pytest.mark.parametrize("render", ["rich", "plain"])
def test_every_line_of_the_evidence_and_a_passing_checks_warning_are_shown(render):
    if render == "rich":
        text = rich_text(checks_only, results=[EVIDENCE, WARNED])
    else:
        text = "\n".join(plain_lines(checks_only, results=[EVIDENCE, WARNED]))
    for line in EVIDENCE.detail.splitlines() + [WARNED.message, WARNED.detail, WARNED.hint]:
        assert line in text, line
    assert "warning" in text


def test_verdict_ends_with_the_points_once_they_are_awarded():
    report = LabReport("chroot", "con0", "qemu", "2026-01-01T10:00:00+00:00", duration_s=2.0,
                       steps=[StepResult("rootfs", "pass"), StepResult("busybox", "fail")])
    assert verdict(report).endswith("errors in 2.0s")
    report.award(chroot.LAB, {"points": {"busybox": 1.5}})
    assert verdict(report).endswith("errors in 2.0s; points 1/2.5")
