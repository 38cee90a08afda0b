"""What a teacher sees of a class check: the live view while it runs, the log lines, and the table."""

from io import StringIO

from rich.console import Console

from labs.model import CheckResult, Lab, LabReport, Step, StepResult
from labs.reporters import ClassProgress, class_table, class_verdict, host_line
from labs.reports import HostFailure

LAB = Lab("chroot", "Chroot", tuple(Step(step_id, step_id.title(), "", lambda ctx: None, ())
                                    for step_id in ("rootfs", "busybox", "container-script")))


def report(host: str, *statuses: str, message: str = "rootfs/bin/busybox is missing.") -> LabReport:
    steps = [StepResult(step.id, status, 0.1) for step, status in zip(LAB.steps, statuses)]
    checks = [CheckResult(f"{step.id}.check", step.id, status, message if status in ("fail", "error") else "")
              for step, status in zip(LAB.steps, statuses)]
    return LabReport("chroot", host, "ssh", "t", mode="check", duration_s=0.8, steps=steps, checks=checks)


ADA = report("ada", "pass", "pass", "pass")
BOB = report("bob", "pass", "fail", "skip")
CY = report("cy", "error", "skip", "skip", message="The check did not finish.")
DEAD = HostFailure("dead", "Cannot connect to root@127.0.0.1:1: Connection refused.")
SLOW = HostFailure("slow", "A command on slow did not finish within 8s.", "error")
CLASS = [ADA, BOB, CY, DEAD, SLOW]


def text_of(renderable, width=160) -> str:
    console = Console(file=StringIO(), width=width)
    console.print(renderable)
    return console.file.getvalue()


def rows(text: str) -> dict[str, list[str]]:
    """The table's body rows, cell by cell, keyed by student."""
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]
    return {row[0]: row[1:] for row in cells}


def test_class_table_has_a_mark_per_step_and_the_first_problem():
    text = text_of(class_table(LAB, CLASS))
    table = rows(text)
    assert table["ada"] == ["✓", "✓", "✓", "3/3", ""]
    assert table["bob"] == ["✓", "✗", "–", "1/3", "busybox.check: rootfs/bin/busybox is missing."]
    assert table["cy"] == ["!", "–", "–", "0/3", "rootfs.check: The check did not finish."]
    assert table["dead"] == ["", "", "", "—", "unreachable: Cannot connect to root@127.0.0.1:1: Connection refused."]
    assert table["slow"] == ["", "", "", "—", "error: A command on slow did not finish within 8s."]
    assert "container-script" in text.splitlines()[2]
    assert text.rstrip().splitlines()[-1].strip() == (
        "1 of 5 machines passed every check, 2 failed a check, 1 could not be reached, 1 did not finish the checks.")


def test_a_narrow_class_table_numbers_its_steps_and_keeps_rows_on_one_line():
    text = text_of(class_table(LAB, CLASS, width=60), width=60)
    assert "1 rootfs  2 busybox  3 container-script" in text
    assert rows(text)["bob"][:4] == ["✓", "✗", "–", "1/3"]
    assert rows(text)["dead"][4].startswith("unreachable: Cannot") and rows(text)["dead"][4].endswith("…")
    assert all(len(line) <= 60 for line in text.splitlines())
    assert "1 rootfs" not in text_of(class_table(LAB, CLASS, width=160))


def test_class_table_keeps_markup_in_names_and_messages_literal():
    text = text_of(class_table(LAB, [HostFailure("[red]eve[/red]", "key [bold]refused[/bold]")]))
    assert "[red]eve[/red]" in text and "unreachable: key [bold]refused[/bold]" in text


def test_host_lines_say_what_a_log_needs():
    assert host_line(ADA).plain == "✓ ada  3/3 checks passed in 0.80s"
    assert host_line(BOB).plain == "✗ bob  1/3 checks passed; busybox.check: rootfs/bin/busybox is missing."
    assert host_line(SLOW).plain == "! slow  error: A command on slow did not finish within 8s."
    assert class_verdict([ADA]) == "1 of 1 machines passed every check, 0 failed a check."


def test_progress_in_a_log_is_one_line_per_machine_as_it_finishes():
    console = Console(file=StringIO(), width=200)
    with ClassProgress(console, LAB, ["ada", "bob", "dead"], parallel=2) as progress:
        progress.status("ada", "connecting")
        progress.status("ada", "checking")
        progress.finished("dead", DEAD)
        progress.finished("ada", ADA)
    assert console.file.getvalue().splitlines() == [host_line(DEAD).plain, host_line(ADA).plain]


def test_live_view_shows_every_machine_in_its_phase():
    progress = ClassProgress(Console(file=StringIO(), width=160), LAB, ["ada", "bob", "cy", "dead", "eve"], parallel=2)
    progress.status("bob", "connecting")
    progress.status("cy", "checking")
    progress.finished("ada", ADA)
    progress.finished("dead", DEAD)
    view = text_of(progress.render())
    assert "Checking chroot on 5 machines, 2 at a time" in view
    assert "2/5" in view and "✓ 1" in view and "✗ 0" in view and "! 1" in view
    assert "✓ ada 3/3" in view and "! dead unreachable" in view and "· eve" in view
    assert "bob connecting" in view and "cy checking" in view
