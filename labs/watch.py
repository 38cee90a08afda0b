"""Watching a class (`check.<lab> --inventory FILE --watch SECONDS`): rounds of class checks, where
each student is, how long since they last made progress, and who is stuck.

Free of any UI: labs/reporters.py draws a ClassWatch (a live view, or a line per Change), and
labs/cli.py runs the rounds. Times come from `clock` (seconds, monotonic), so tests can set them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .classpage import progress
from .model import LabReport

FIRST, PROGRESS, BACK, UNREACHABLE, STUCK = "first", "progress", "back", "unreachable", "stuck"


@dataclass
class Standing:
    """Where one student is: `reached` steps passed in a row, `at` the first step not done ("" when
    every step passes; "?" while their machine has never been checked), `checks` checks passed.
    `since` is the clock time of their last progress (or of the first round that saw them);
    `problem` is why their machine had no report in the last round ("" when it had one)."""

    name: str
    reached: int = 0
    at: str = "?"
    checks: int = 0
    since: float = 0.0
    problem: str = ""
    stuck_told: bool = False

    @property
    def done(self) -> bool:
        return self.at == ""

    @property
    def key(self) -> tuple[int, int]:
        return self.reached, self.checks


@dataclass(frozen=True)
class Change:
    """Something a round found about one student, with the one line a log shows for it."""

    name: str
    kind: str
    text: str


class ClassWatch:
    """The state of a watched class between rounds: `update` takes a round's results (LabReports
    and HostFailures, in inventory order) and says what changed."""

    def __init__(self, steps: list[str], stuck_after: float, clock: Callable[[], float] = time.monotonic):
        self.steps = list(steps)
        self.stuck_after = float(stuck_after)
        self.clock = clock
        self.rounds = 0
        self.checking = False
        self.next_round: float | None = None
        self.results: list = []
        self.standings: dict[str, Standing] = {}

    def stuck(self, standing: Standing, now: float | None = None) -> bool:
        """Reached in the last round, not done, and no progress for `stuck_after` seconds or more."""
        now = self.clock() if now is None else now
        return standing.at not in ("", "?") and not standing.problem and now - standing.since >= self.stuck_after

    def _where(self, standing: Standing) -> str:
        if standing.done:
            return f"finished every step ({len(self.steps)}/{len(self.steps)} steps)"
        return f"at {standing.at} ({standing.reached}/{len(self.steps)} steps, {standing.checks} checks passed)"

    def update(self, results: list) -> list[Change]:
        """Take one round's results; the changes since the last round, in inventory order."""
        now = self.clock()
        self.rounds += 1
        self.results = list(results)
        changes: list[Change] = []
        for result in results:
            name = result.host
            standing = self.standings.get(name)
            first = standing is None
            if first:
                standing = self.standings[name] = Standing(name, since=now)
            if not isinstance(result, LabReport):
                if not standing.problem:
                    changes.append(Change(name, UNREACHABLE, f"{name}: {result.status}: {result.message}"))
                standing.problem = f"{result.status}: {result.message}"
                continue
            was_unreachable, standing.problem = bool(standing.problem), ""
            before, previous_at = standing.key, standing.at
            standing.reached, standing.at = progress(result, self.steps)
            standing.checks = result.summary["passed"]
            if first or previous_at == "?":
                changes.append(Change(name, FIRST, f"{name}: {self._where(standing)}"))
            elif standing.key > before:
                standing.since, standing.stuck_told = now, False
                moved = f"{previous_at or 'done'} → {standing.at or 'done'}" if standing.at != previous_at else \
                    f"still at {standing.at}, {before[1]} → {standing.checks} checks passed"
                changes.append(Change(name, PROGRESS, f"{name}: {moved}; {self._where(standing)}"))
            elif standing.key < before:
                changes.append(Change(name, BACK, f"{name}: went back; {self._where(standing)}"))
            elif was_unreachable:
                changes.append(Change(name, FIRST, f"{name}: reachable again; {self._where(standing)}"))
            if self.stuck(standing, now) and not standing.stuck_told:
                standing.stuck_told = True
                changes.append(Change(name, STUCK, f"{name}: stuck at {standing.at}, no progress for "
                                                   f"{round(now - standing.since)}s"))
        return changes


def watch_rounds(check: Callable[[], list], watch: ClassWatch, interval: float,
                 on_round: Callable[[list[Change]], None], sleep: Callable[[float], None] = time.sleep) -> None:
    """Check the class, hand the round's changes to `on_round`, wait until `interval` seconds after
    the round began; again and again, until KeyboardInterrupt (Ctrl-C), which is raised to the caller."""
    while True:
        begun = watch.clock()
        watch.checking = True
        try:
            results = check()
        finally:
            watch.checking = False
        watch.next_round = begun + interval
        on_round(watch.update(results))
        sleep(max(0.0, watch.next_round - watch.clock()))
