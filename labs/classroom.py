"""Checking a whole class: the inventory of students' machines, and their checks run side by side."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from .errors import LabError, UsageError
from .model import Lab, LabReport
from .providers.ssh import Remote, ssh_target
from .reporting import SilentReporter
from .reports import HOST_ERROR, UNREACHABLE, HostFailure
from .runner import Runner

HOST_FIELDS = ("name", "host", "port", "user", "key", "workdir")


@dataclass(frozen=True)
class Student:
    name: str
    host: str
    port: int = 22
    user: str = "root"
    key: str | None = None
    workdir: str = ""

    @property
    def spec(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def load_inventory(path: str | Path) -> list[Student]:
    """Read the inventory YAML (`defaults:` and `hosts:`), refusing anything ambiguous."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"Inventory {path} does not exist.", "Pass the path of the class's inventory YAML.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"Inventory {path} is not valid YAML{where}.", "Fix the syntax; see docs/classroom.md for the format.") from None
    if not isinstance(data, dict) or not isinstance(data.get("hosts"), list) or not data["hosts"]:
        raise UsageError(f"Inventory {path} has no 'hosts:' list.", "List the students' machines under hosts:, see docs/classroom.md.")
    defaults = data.get("defaults") or {}
    students, seen = [], {}
    for index, entry in enumerate(data["hosts"], start=1):
        if not isinstance(entry, dict):
            raise UsageError(f"Inventory {path}: host #{index} is not a mapping.", "Write each host as {name: ..., host: ...}.")
        fields = {**defaults, **entry}
        unknown = sorted(set(fields) - set(HOST_FIELDS))
        if unknown:
            raise UsageError(f"Inventory {path}: host #{index} has unknown field(s) {', '.join(unknown)}.",
                             f"Use only: {', '.join(HOST_FIELDS)}.")
        if not fields.get("host"):
            raise UsageError(f"Inventory {path}: host #{index} has no 'host' field.", "Add host: (an address) to it or to defaults:.")
        try:
            student = Student(name=str(fields.get("name") or fields["host"]), host=str(fields["host"]),
                              port=int(fields.get("port", 22)), user=str(fields.get("user", "root")),
                              key=str(Path(str(fields["key"])).expanduser()) if fields.get("key") else None,
                              workdir=str(fields.get("workdir") or ""))
        except (TypeError, ValueError):
            raise UsageError(f"Inventory {path}: host #{index} has a port that is not a number.", "Write port: 22.") from None
        for label, key in (("name", student.name), ("address", student.spec)):
            if (label, key) in seen:
                raise UsageError(f"Inventory {path}: host #{index} repeats the {label} {key} of host #{seen[(label, key)]}.",
                                 "Give every student one entry with a unique name.")
            seen[(label, key)] = index
        students.append(student)
    return students


CONNECTING, CHECKING = "connecting", "checking"


def check_class(lab: Lab, students: list[Student], settings: dict, *, parallel: int, state_dir: Path,
                connect_timeout: float, check_timeout: float, reconnect_attempts: int = 3, reconnect_backoff: float = 1.0,
                on_status: Callable[[Student, str], None] = lambda student, phase: None,
                on_result: Callable[[Student, LabReport | HostFailure], None] = lambda student, result: None,
                ) -> list[LabReport | HostFailure]:
    """Every student's self-check, at most `parallel` at once, results in inventory order.

    fabric's ThreadingGroup runs one command on every host with a thread per host; here each host
    runs its own script (its workdir and variables differ), its result is a LabReport of its own,
    and a class of hundreds must not open hundreds of connections at once: so a bounded thread
    pool runs one Runner per host. A host that cannot be reached, or whose checks do not finish
    within `check_timeout`, is a HostFailure row; it holds one worker for at most its timeouts and
    never stops the others.
    """

    def check_one(student: Student) -> LabReport | HostFailure:
        status = UNREACHABLE
        try:
            target = ssh_target(student.spec, student.key, state_dir, workdir=student.workdir, name=student.name)
            remote = Remote(target, connect_timeout=connect_timeout, command_timeout=check_timeout,
                            reconnect_attempts=reconnect_attempts, reconnect_backoff=reconnect_backoff)
            try:
                on_status(student, CONNECTING)
                remote.reconnect()  # a failure to log in here makes the host "unreachable"
                status = HOST_ERROR
                on_status(student, CHECKING)
                result = Runner(lab, remote, SilentReporter(), settings).check()
            finally:
                remote.close()
        except LabError as error:
            result = HostFailure(student.name, error.message, status)
        on_result(student, result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="check") as pool:
        return list(pool.map(check_one, students))
