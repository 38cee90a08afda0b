"""A class check gives back every thread and file descriptor it took, whatever became of each machine.

A teacher's `--watch` re-checks the class for hours in one process: a socket or a paramiko thread
left behind per machine and round would pile up until the process runs out of descriptors. Real
sshd servers on loopback serve solved students and the machines a class check meets that fail:
one refuses the key, one shows a changed host key, one hangs past the check timeout, one is down.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from labs import chroot
from labs.classroom import Student, check_class
from labs.cli import DEFAULTS
from tests.sshd import free_port, keygen, start_sshd
from tests.students import prepare, staged_busybox

SOLVED = 6


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def native_threads() -> int:
    """Threads of this process as the kernel counts them (paramiko's and invoke's included)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def settled(baseline: tuple[set[int], int], timeout: float = 15.0) -> tuple[set[int], int]:
    """The descriptors and thread count once they are back to `baseline`, or as they are after
    `timeout`: a closed transport's thread ends a moment after its socket is closed."""
    deadline = time.monotonic() + timeout
    while True:
        now = open_fds(), native_threads()
        if (now[0] <= baseline[0] and now[1] <= baseline[1]) or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    """(students, state directory) of a class of solved and failing machines, servers running."""
    if os.geteuid() != 0:
        pytest.skip("the chroot lab's checks chroot and mount: run as root")
    base = tmp_path_factory.mktemp("class-resources")
    busybox = staged_busybox(base)
    configs = {f"solved-{number}": "" for number in range(SOLVED)} | {
        "wrong-key": "", "changed-host-key": "", "hung": "ForceCommand exec sleep 60\n"}
    servers = {name: start_sshd(base / name / "sshd", user="root", extra_config=config) for name, config in configs.items()}
    for number in range(SOLVED):
        prepare(base / f"solved-{number}" / "home", "solved", busybox)
    state = base / "state"
    state.mkdir()
    other_host_key = keygen(base / "other_host_key").with_suffix(".pub").read_text().split()[:2]
    (state / "known_hosts").write_text(f"[127.0.0.1]:{servers['changed-host-key'].port} {' '.join(other_host_key)}\n")
    solved_home = base / "solved-0" / "home"
    keys = {name: server.client_key for name, server in servers.items()} | {"wrong-key": keygen(base / "not-authorized")}
    students = [Student(name, "127.0.0.1", server.port, "root", str(keys[name]),
                        str(base / name / "home" if name.startswith("solved") else solved_home))
                for name, server in servers.items()]
    students.append(Student("down", "127.0.0.1", free_port(), "root", str(keys["solved-0"]), str(solved_home)))
    yield students, state
    for server in servers.values():
        server.stop()


def test_a_class_check_leaves_no_descriptor_or_thread_behind(classroom):
    students, state = classroom
    settings = {**DEFAULTS["chroot"], "state_dir": str(state)}

    def check() -> dict[str, str]:
        results = check_class(chroot.LAB, students, settings, parallel=len(students), state_dir=state,
                              connect_timeout=5, check_timeout=3, reconnect_attempts=0)
        return {student.name: getattr(result, "status", "ok" if getattr(result, "ok", False) else "failed")
                for student, result in zip(students, results)}

    check()  # pins the host keys and loads every module: what stays from here on is no leak
    baseline = settled((open_fds(), native_threads()))
    for _ in range(2):
        outcome = check()
    assert outcome == {**{f"solved-{number}": "ok" for number in range(SOLVED)}, "wrong-key": "unreachable",
                       "changed-host-key": "unreachable", "hung": "error", "down": "unreachable"}
    fds, threads = settled(baseline)
    leftover = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in fds - baseline[0] if os.path.exists(f"/proc/self/fd/{fd}")}
    assert not leftover, f"descriptors left open after two class checks: {leftover}"
    assert threads <= baseline[1], (f"{threads - baseline[1]} thread(s) left running after two class checks: "
                                    f"{sorted(thread.name for thread in threading.enumerate())}")
