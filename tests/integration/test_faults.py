"""Faults in the middle of the chroot lab, on a QEMU VM of its own (fault0) that these tests kill, cut
off and fill up: each fault ends in a clear message, leaves nothing running, mounted or staged on the
VM, and the next run completes.

Faults are timed by the lab's own output: the moment the overlay step's first container starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest
import yaml

from labs.providers.qemu import QemuProvider
from labs.providers.ssh import Remote
from tests import cli
from tests.integration.conftest import progress
from tests.proxy import CuttableProxy
from tests.remote import sh

pytestmark = pytest.mark.vm

MID_OVERLAY = "[overlay] | --- container 1"
STEP_IDS = ["rootfs", "busybox", "symlinks", "chroot-shell", "container-script", "overlay", "proc"]
BACKOFF = 0.5  # target.reconnect_backoff for these runs: waits of 0.5, 1 and 2 s

# Whatever a lab run can leave behind on the VM: live processes of other labkit runs (the command
# that looks carries its own LABKIT_RUN and skips itself), staged or uploaded files, container.sh's nonce
# directories under /tmp, and overlay or proc mounts outside the system's own /proc.
RESIDUE = r"""cd /root
for f in $(grep -lsz '^LABKIT_RUN=' /proc/[0-9]*/environ); do
  grep -qsxzF "LABKIT_RUN=$LABKIT_RUN" "$f" && continue
  pid=${f#/proc/}; pid=${pid%/environ}
  cmdline=$(tr '\0' ' ' < /proc/$pid/cmdline 2>/dev/null)
  [ -z "$cmdline" ] || echo "process $pid: $cmdline"  # none: a zombie, or it is just exiting
done
ls -d /tmp/labkit-upload-* rootfs/bin/busybox.labkit-new 2>/dev/null
for dir in /tmp/*/; do [ -d "${dir}upper" ] && echo "nonce directory $dir"; done
grep -E ' (overlay|proc) ' /proc/mounts | grep -v '^proc /proc '
true
"""


@pytest.fixture(scope="module")
def fault0(qemu_settings):
    """A chroot-lab VM that may be killed: the session's con0 stays out of harm's way."""
    provider = QemuProvider({**qemu_settings, "vms": {"fault0": "chroot"}}, progress)
    provider.up("fault0")
    yield provider
    provider.destroy("fault0")


@pytest.fixture(scope="module")
def env(qemu_settings, tmp_path_factory):
    """The CLI's environment and a configuration file that makes fault0 the chroot lab's VM."""
    config = tmp_path_factory.mktemp("faults") / "labkit.yaml"
    config.write_text(yaml.safe_dump({
        "vm": {"vms": {"fault0": "chroot"}},
        "chroot": {"vm": "fault0", "busybox": {"source": "/bin/busybox"}},
        "target": {"reconnect_backoff": BACKOFF},
    }))
    return dict(os.environ, INVOKE_VM_STATE_DIR=str(qemu_settings["state_dir"]),
                INVOKE_VM_CACHE_DIR=str(qemu_settings["cache_dir"]), COLUMNS="100", LABKIT_TEST_CONFIG=str(config))


def labkit(env: dict, *args: str) -> subprocess.CompletedProcess:
    return cli.labkit(env, "-f", env["LABKIT_TEST_CONFIG"], *args, timeout=600)


@dataclass
class Interrupted:
    code: int
    stdout: str
    stderr: str


def run_with_fault(env: dict, fault, *args: str, trigger: str = MID_OVERLAY, limit: float = 300) -> Interrupted:
    """Run `inv ARGS` and call `fault()` when its output shows `trigger`; the run is killed after `limit` s."""
    process = subprocess.Popen(cli.inv("-f", env["LABKIT_TEST_CONFIG"], *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, stdin=subprocess.DEVNULL, preexec_fn=cli.default_sigint)
    watchdog = threading.Timer(limit, process.kill)
    watchdog.start()
    lines, faulted = [], False
    try:
        for line in process.stdout:
            lines.append(line)
            if not faulted and line.startswith(trigger):
                fault(process)
                faulted = True
        stderr = process.stderr.read()
        process.wait()
    finally:
        watchdog.cancel()
    assert faulted, f"never saw {trigger!r}:\n" + "".join(lines)[-3000:]
    return Interrupted(process.returncode, "".join(lines), stderr)


def on_vm(provider: QemuProvider, script: str) -> str:
    """Run `script` as root on fault0 over a fresh connection (a reboot may change its port)."""
    remote = Remote(provider.target("fault0"))
    try:
        return sh(remote, script)
    finally:
        remote.close()


def assert_one_error(result, starts: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith(f"Error: {starts}"), result.stderr
    assert len(lines) <= 2 and "Traceback" not in result.stdout + result.stderr, result.stderr


def solve_until_overlay(env: dict) -> None:
    result = labkit(env, "lab.chroot")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_vm_killed_during_overlay_fails_clearly_and_the_next_run_completes(fault0, env, tmp_path):
    on_vm(fault0, "cd /root && rm -rf rootfs container.sh .labkit")
    pid = next(vm.pid for vm in fault0.status() if vm.name == "fault0")

    killed = run_with_fault(env, lambda _: os.kill(pid, signal.SIGKILL), "lab.chroot")

    assert killed.code == 3, killed.stdout[-3000:] + killed.stderr
    assert_one_error(killed, "The SSH connection to fault0 was lost and 3 attempts to log in again over 3.5s failed")
    assert "Connection refused" in killed.stderr
    for attempt, wait in ((1, "0.5"), (2, "1"), (3, "2")):
        assert f"! waiting {wait}s before login attempt {attempt}/3" in killed.stdout

    report = tmp_path / "r.json"
    rerun = labkit(env, "lab.chroot", "--report", str(report))
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr
    # Writes the guest had not flushed died with it, so earlier steps may run again: what counts is
    # that every step ends done.
    steps = json.loads(report.read_text())["steps"]
    assert [(step["id"], step["status"]) for step in steps] == [(step_id, "pass") for step_id in STEP_IDS]
    assert on_vm(fault0, RESIDUE) == ""


def test_dropped_connection_is_restored_and_the_step_runs_again(fault0, env, tmp_path):
    solve_until_overlay(env)
    target = fault0.target("fault0")
    proxy = CuttableProxy(target.port)
    report = tmp_path / "r.json"
    try:
        dropped = run_with_fault(env, lambda _: proxy.cut(), "lab.chroot", "--force", "--from", "overlay",
                                 "--provider", "ssh", "--host", f"root@127.0.0.1:{proxy.port}",
                                 "--key", str(target.key_path), "--report", str(report))
    finally:
        proxy.close()

    assert dropped.code == 0, dropped.stdout[-3000:] + dropped.stderr
    assert f"[overlay] ! The SSH connection to root@127.0.0.1:{proxy.port} was lost" in dropped.stdout
    assert "[overlay] ! waiting 0.5s before login attempt 1/3" in dropped.stdout
    assert "[overlay] ! connected again; running overlay again from its checks" in dropped.stdout
    assert proxy.connections == 2
    assert [(s["id"], s["status"]) for s in json.loads(report.read_text())["steps"]] == [("overlay", "pass"), ("proc", "pass")]
    assert on_vm(fault0, RESIDUE) == ""


def test_connection_that_stays_down_fails_after_bounded_retries(fault0, env):
    solve_until_overlay(env)
    target = fault0.target("fault0")
    proxy = CuttableProxy(target.port)
    gone = run_with_fault(env, lambda _: proxy.close(), "lab.chroot", "--force", "--from", "overlay",
                          "--provider", "ssh", "--host", f"root@127.0.0.1:{proxy.port}", "--key", str(target.key_path))

    assert gone.code == 3, gone.stdout[-3000:] + gone.stderr
    assert_one_error(gone, f"The SSH connection to root@127.0.0.1:{proxy.port} was lost and 3 attempts")
    assert "Connection refused" in gone.stderr
    # The session the cut left behind on the VM ends on its own once its output has nowhere to go.
    deadline = time.monotonic() + 30
    while (residue := on_vm(fault0, RESIDUE)) and time.monotonic() < deadline:
        time.sleep(1)
    assert residue == ""


def test_ctrl_c_during_a_step_stops_it_and_cleans_up_at_once(fault0, env):
    """container.sh made to hang for 300 s, past run_with_fault's 300 s limit: a labkit that waited
    for the step's command instead of stopping it would be killed there, not exit with 130."""
    solve_until_overlay(env)
    on_vm(fault0, "cd /root && cp -p container.sh container.sh.orig && sed -i '1a sleep 300' container.sh")
    try:
        interrupted = run_with_fault(env, lambda process: process.send_signal(signal.SIGINT),
                                     "lab.chroot", "--force", "--from", "overlay")
    finally:
        on_vm(fault0, "cd /root && mv container.sh.orig container.sh")

    assert interrupted.code == 130, interrupted.stdout[-3000:] + interrupted.stderr
    assert interrupted.stderr.strip() == "Interrupted; the lab's clean-up has run."
    # No waiting: the interrupted step's processes (the sleep too), with their private mounts, are already gone.
    assert on_vm(fault0, RESIDUE) == ""
    assert "[proc]" not in interrupted.stdout


FILL = r"""fill() {
  free=$(df -Pk "$1" | awk 'NR == 2 { print $4 }')
  fallocate -l "${free}k" "$1/labkit-fill" 2>/dev/null
  dd if=/dev/zero of="$1/labkit-fill-rest" bs=4k 2>/dev/null
  sync; df -Pk "$1" | awk 'NR == 2 { print $4 }'
}
"""
UNFILL = "rm -f /labkit-fill /labkit-fill-rest /tmp/labkit-fill /tmp/labkit-fill-rest"


def test_full_disk_fails_clearly_and_the_lab_completes_once_there_is_space(fault0, env):
    on_vm(fault0, "cd /root && rm -rf rootfs container.sh .labkit")
    try:
        assert on_vm(fault0, FILL + "fill /").strip() == "0"
        full = labkit(env, "lab.chroot")
        assert full.returncode == 1, full.stdout[-3000:] + full.stderr
        assert "FAIL check rootfs.action: The disk of fault0 is full: step rootfs could not write" in full.stdout
        assert "hint: Free space on the target (df -h shows where)" in full.stdout
        assert "Traceback" not in full.stdout + full.stderr

        # With the rootfs made and /tmp full as well, the busybox upload itself cannot be written.
        on_vm(fault0, UNFILL + "\ncd /root && mkdir -p rootfs/bin rootfs/sbin rootfs/usr/bin rootfs/usr/sbin")
        assert on_vm(fault0, FILL + "fill / && fill /tmp").split() == ["0", "0"]
        upload = labkit(env, "lab.chroot")
        assert upload.returncode == 1, upload.stdout[-3000:] + upload.stderr
        assert "FAIL check busybox.action: The disk of fault0 is full:" in upload.stdout
        assert "do not fit in /tmp (0 KiB free)" in upload.stdout
        assert on_vm(fault0, RESIDUE) == ""
    finally:
        on_vm(fault0, UNFILL)

    again = labkit(env, "lab.chroot")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    assert on_vm(fault0, RESIDUE) == ""
