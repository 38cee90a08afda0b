"""`check.chroot --inventory --watch` against real sshd servers on loopback: a student's files change
between rounds, the watch says so, and Ctrl-C (SIGINT) ends it with the last round's report.

Its output is a pipe, not a terminal, so the watch prints a line per change, which the test reads as
it comes; the live full-screen view is tested in tests/unit/test_watch.py.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests import cli
from tests.sshd import free_port, keygen
from tests.students import HOST_BUSYBOX, serve_students, write_inventory

# A guard against a hang, not a timing assertion: rounds on loopback take about a second.
HANG = 120


@pytest.fixture()
def classroom(tmp_path):
    client_key = keygen(tmp_path / "teacher_key")
    servers, hosts = serve_students(tmp_path, client_key, {"ada": "solved", "bob": "rootfs-only"})
    hosts.append(f"  - {{name: dead, host: 127.0.0.1, port: {free_port()}}}")
    inventory = write_inventory(tmp_path / "class.yaml", client_key, hosts)
    yield tmp_path, inventory
    for server in servers:
        server.stop()


class Lines:
    """A process's output lines as they come, read by a thread so the test can wait for one."""

    def __init__(self, stream):
        self.seen: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=lambda: [self._queue.put(line) for line in stream], daemon=True)
        self._reader.start()

    def all(self) -> str:
        """Every line, once the process has closed its output."""
        self._reader.join(timeout=HANG)
        while not self._queue.empty():
            self.seen.append(self._queue.get())
        return "".join(self.seen)

    def wait_for(self, *parts: str) -> str:
        while True:
            try:
                line = self._queue.get(timeout=HANG)
            except queue.Empty:
                raise AssertionError(f"no line with {parts} in:\n" + "".join(self.seen)) from None
            self.seen.append(line)
            if all(part in line for part in parts):
                return line


def test_watch_shows_a_students_progress_and_ctrl_c_writes_the_last_report(classroom):
    base, inventory = classroom
    report = base / "class.json"
    env = dict(os.environ, INVOKE_VM_STATE_DIR=str(base / "state"), COLUMNS="160", PYTHONUNBUFFERED="1",
               INVOKE_TARGET_STUCK_AFTER="0")
    process = subprocess.Popen(cli.inv("check.chroot", "--inventory", str(inventory), "--watch", "1",
                                       "--report", str(report)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                               env=env, preexec_fn=cli.default_sigint)
    try:
        lines = Lines(process.stdout)
        lines.wait_for("Watching chroot every 1s")
        lines.wait_for("ada: finished every step")
        lines.wait_for("bob: at busybox (1/7 steps")
        # stuck_after is 0 here: whoever is not done is stuck at once, and told once per step.
        lines.wait_for("bob: stuck at busybox")
        lines.wait_for("dead: unreachable: Cannot connect")
        os.link(HOST_BUSYBOX, base / "bob" / "home" / "rootfs" / "bin" / "busybox")
        progress = lines.wait_for("bob: busybox → symlinks")
        assert "at symlinks (2/7 steps" in progress
        lines.wait_for("bob: stuck at symlinks")
        process.send_signal(signal.SIGINT)
        process.wait(timeout=HANG)
        output, errors = lines.all(), process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1, output + errors
    assert "Traceback" not in errors, errors
    assert output.count("ada: finished every step") == 1  # a line per change, not per round
    assert output.count("bob: stuck at busybox") == 1
    assert "1 of 3 machines passed every check, 1 failed a check, 1 could not be reached." in output
    data = json.loads(report.read_text())
    bob = next(host for host in data["hosts"] if host["host"] == "bob")
    steps = {step["id"]: step["status"] for step in bob["steps"]}
    assert steps["busybox"] == "pass" and steps["symlinks"] == "fail"
    assert {host["host"]: host.get("status") for host in data["hosts"]}["dead"] == "unreachable"
