"""Watching a class: rounds, progress times and stuck students (labs/watch.py, with a clock the test
sets), and how the room's view and a log show them (labs/reporters.py, rendered into a StringIO)."""

from io import StringIO

import pytest
from rich.console import Console

from labs.reporters import WatchView, watch_table
from labs.watch import BACK, FIRST, PROGRESS, STUCK, UNREACHABLE, ClassWatch, watch_rounds
from tests.unit.test_class_view import LAB, report
from labs.reports import HostFailure

STEPS = LAB.step_ids  # rootfs, busybox, container-script


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def kinds(changes) -> list[tuple[str, str]]:
    return [(change.name, change.kind) for change in changes]


def test_progress_resets_the_time_and_stuck_is_told_once():
    clock = Clock()
    watch = ClassWatch(STEPS, stuck_after=300, clock=clock)
    first = watch.update([report("ada", "pass", "fail", "skip"), report("bob", "pass", "pass", "pass")])
    assert [change.text for change in first] == [
        "ada: at busybox (1/3 steps, 1 checks passed)", "bob: finished every step (3/3 steps)"]
    clock.now += 200
    assert watch.update([report("ada", "pass", "fail", "skip"), report("bob", "pass", "pass", "pass")]) == []
    assert not watch.stuck(watch.standings["ada"])
    clock.now += 100
    changes = watch.update([report("ada", "pass", "fail", "skip"), report("bob", "pass", "pass", "pass")])
    assert [change.text for change in changes] == ["ada: stuck at busybox, no progress for 300s"]
    assert watch.stuck(watch.standings["ada"]) and not watch.stuck(watch.standings["bob"])
    clock.now += 60
    assert watch.update([report("ada", "pass", "fail", "skip"), report("bob", "pass", "pass", "pass")]) == []
    changes = watch.update([report("ada", "pass", "pass", "fail"), report("bob", "pass", "pass", "pass")])
    assert [change.text for change in changes] == [
        "ada: busybox → container-script; at container-script (2/3 steps, 2 checks passed)"]
    assert watch.standings["ada"].since == clock.now and not watch.stuck(watch.standings["ada"])


def test_going_back_and_unreachable_machines_do_not_count_as_progress():
    clock = Clock()
    watch = ClassWatch(STEPS, stuck_after=300, clock=clock)
    assert kinds(watch.update([report("ada", "pass", "pass", "fail"), HostFailure("dan", "refused")])) == [
        ("ada", FIRST), ("dan", UNREACHABLE)]
    assert watch.standings["dan"].at == "?" and not watch.stuck(watch.standings["dan"], clock.now + 10_000)
    clock.now += 50
    changes = watch.update([report("ada", "pass", "fail", "skip"), HostFailure("dan", "refused")])
    assert kinds(changes) == [("ada", BACK)] and watch.standings["ada"].since == 1000.0
    clock.now += 50
    changes = watch.update([HostFailure("ada", "gone"), report("dan", "fail", "skip", "skip")])
    assert [change.text for change in changes] == ["ada: unreachable: gone", "dan: at rootfs (0/3 steps, 0 checks passed)"]
    # Out of reach, ada keeps her last step, but is not called stuck: nobody knows what she does.
    assert watch.standings["ada"].at == "busybox" and not watch.stuck(watch.standings["ada"], clock.now + 10_000)
    clock.now += 50
    changes = watch.update([report("ada", "pass", "pass", "pass"), report("dan", "fail", "skip", "skip")])
    assert kinds(changes) == [("ada", PROGRESS)] and watch.standings["ada"].problem == ""
    assert watch.rounds == 4


def test_rounds_run_until_ctrl_c_and_wait_from_each_round_start():
    clock = Clock()
    watch = ClassWatch(STEPS, stuck_after=300, clock=clock)
    rounds = iter([[report("ada", "fail", "skip", "skip")], [report("ada", "pass", "fail", "skip")]])
    waits, seen = [], []

    def check():
        clock.now += 4  # a round takes 4 s
        try:
            return next(rounds)
        except StopIteration:
            raise KeyboardInterrupt from None

    def sleep(seconds):
        waits.append(seconds)
        clock.now += seconds

    with pytest.raises(KeyboardInterrupt):
        watch_rounds(check, watch, 10, lambda changes: seen.append(kinds(changes)), sleep)
    assert seen == [[("ada", FIRST)], [("ada", PROGRESS)]]
    assert waits == [6, 6] and watch.rounds == 2 and not watch.checking
    assert watch.results[0].host == "ada"


def render(watch, width=100) -> str:
    console = Console(file=StringIO(), width=width)
    console.print(watch_table(LAB, watch, 30))
    return console.file.getvalue()


def test_the_room_view_shows_step_time_and_highlights_the_stuck():
    clock = Clock()
    watch = ClassWatch(STEPS, stuck_after=300, clock=clock)
    watch.update([report("ada", "pass", "fail", "skip"), report("bob", "pass", "pass", "pass"), HostFailure("dan", "refused")])
    clock.now += 301
    watch.next_round = clock.now + 12
    text = render(watch)
    lines = {line.split()[0]: line for line in text.splitlines() if line.split() and line.split()[0] in ("ada", "bob", "dan")}
    assert "busybox" in lines["ada"] and "1/3" in lines["ada"] and "5m01s" in lines["ada"] and "stuck: over 5m00s" in lines["ada"]
    assert "✓ done" in lines["bob"] and "3/3" in lines["bob"]
    assert "unreachable: refused" in lines["dan"]
    assert "Watching chroot: 3 machines, every 30s" in text and "1 stuck" in text and "next round in 12s" in text
    console = Console(file=StringIO(), width=100, force_terminal=True, color_system="truecolor")
    console.print(watch_table(LAB, watch, 30))
    stuck_row = next(line for line in console.file.getvalue().splitlines() if "ada" in line)
    other_row = next(line for line in console.file.getvalue().splitlines() if "bob" in line)
    assert "\x1b[1;37;41m" in stuck_row and "41m" not in other_row  # bold white on red, the stuck one only


def test_without_a_terminal_each_change_is_one_line():
    console = Console(file=StringIO(), width=100)
    watch = ClassWatch(STEPS, stuck_after=300, clock=Clock())
    with WatchView(console, LAB, watch, 30) as view:
        view.round_finished(watch.update([report("ada", "pass", "fail", "skip")]))
        view.round_finished(watch.update([report("ada", "pass", "fail", "skip")]))
        view.round_finished(watch.update([report("ada", "pass", "pass", "fail")]))
    lines = console.file.getvalue().splitlines()
    assert lines[0] == "Watching chroot every 30s; Ctrl-C ends it."
    assert [line.split(" ", 1)[1] for line in lines[1:]] == [
        "ada: at busybox (1/3 steps, 1 checks passed)",
        "ada: busybox → container-script; at container-script (2/3 steps, 2 checks passed)"]
