"""The chroot lab end to end on the real QEMU micro VM that the toolkit builds and boots.

The workshop's busybox download (busybox.net) cannot be reached from these machines, so the tests use
the toolkit's other sources: the host's Debian busybox-static (uploaded), the VM's own busybox, and a
URL served by a tiny HTTP server on this host (the VM reaches the host as 10.0.2.2).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from labs import chroot
from labs.cli import DEFAULTS
from labs.providers.ssh import Remote
from tests import cli
from tests.remote import sh
from labs.reporting import SilentReporter
from labs.runner import Runner

pytestmark = pytest.mark.vm

HOST_BUSYBOX = "/bin/busybox"
STEP_IDS = ["rootfs", "busybox", "symlinks", "chroot-shell", "container-script", "overlay", "proc"]

# What the VM looks like to a test: every path, type, size and (outside /proc-like trees) content
# hash under the student's home and /tmp, every path and size elsewhere on the root filesystem, and
# the mount table. Equal snapshots mean a check changed nothing. (BusyBox's find has no -printf.)
SNAPSHOT = r"""
find / -xdev \( -path /root -o -path /tmp \) -prune -o -exec stat -c '%n %F %s' {} + | sort | sha256sum
find /root /tmp -xdev -exec stat -c '%n %F %s %a' {} + | sort
find /root /tmp -xdev -type f -exec sha256sum {} + | sort
cut -d' ' -f1-4 /proc/mounts | sort
"""


def labkit(env: dict, *args: str) -> subprocess.CompletedProcess:
    return cli.labkit(env, *args, timeout=900)


@pytest.fixture(scope="module")
def env(qemu_settings, tmp_path_factory):
    """Environment for the CLI: the same state and cache directories as the test VM."""
    values = dict(os.environ, INVOKE_VM_STATE_DIR=str(qemu_settings["state_dir"]),
                  INVOKE_VM_CACHE_DIR=str(qemu_settings["cache_dir"]), COLUMNS="100")
    values.pop("INVOKE_CHROOT_BUSYBOX_URL", None)
    return values


VM = "con0"


def check(remote: Remote):
    """The self-check, in process, with the default settings."""
    return Runner(chroot.LAB, remote, SilentReporter(), json.loads(json.dumps(DEFAULTS["chroot"]))).check()


@pytest.fixture(scope="module")
def solved(env, con0, remote, tmp_path_factory):
    """The lab solved once through the CLI with the default flags, as the README's first command does on
    a machine without internet (busybox.net is unreachable here): the report of that run, its output."""
    sh(remote, "rm -rf /root/rootfs /root/container.sh /root/.labkit")
    report = tmp_path_factory.mktemp("solve") / "r.json"
    result = labkit(env, "lab.chroot", "--report", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(report.read_text()), result.stdout


def test_first_run_passes_every_step(solved):
    report, output = solved
    assert [step["id"] for step in report["steps"]] == STEP_IDS
    assert all(step["status"] == "pass" and not step["already_done"] for step in report["steps"])
    assert report["summary"]["failed"] == 0 and report["summary"]["passed"] >= 12
    assert report["provider"] == "qemu" and report["lab"] == "chroot"
    assert "HELLO.txt" in output and "labkit-probe-1" in output


WORKSHOP_URL = DEFAULTS["chroot"]["busybox"]["url"]


def test_default_flags_fall_back_to_the_targets_own_busybox_and_say_so(solved, remote):
    report, output = solved
    busybox = next(step for step in report["steps"] if step["id"] == "busybox")
    assert busybox["notes"] == [f"The target could not download {WORKSHOP_URL} (wget: bad address 'www.busybox.net'): "
                                "using the target's own static busybox /usr/bin/busybox instead."]
    assert output.count("using the target's own static busybox") == 1
    assert sh(remote, "cmp /bin/busybox /root/rootfs/bin/busybox && echo same").strip() == "same"
    runs = next(check for check in report["checks"] if check["id"] == "busybox.runs")
    assert runs["status"] == "pass" and runs["detail"].startswith("BusyBox v") and "Debian" in runs["detail"]


def test_url_source_without_the_download_fails_clearly_and_changes_nothing(solved, env, remote):
    before = sh(remote, "sha256sum /root/rootfs/bin/busybox")
    result = labkit(env, "lab.chroot", "--only", "busybox", "--force", "--busybox", "url")
    assert result.returncode == 1, result.stdout + result.stderr
    failures = [line for line in result.stdout.splitlines() if "FAIL" in line]
    assert failures == [f"[busybox] FAIL check busybox.action: The target could not download {WORKSHOP_URL} "
                        "(wget: bad address 'www.busybox.net'). (0.00s)"]
    assert "using the target's own" not in result.stdout and "Traceback" not in result.stdout + result.stderr
    assert sh(remote, "sha256sum /root/rootfs/bin/busybox") == before
    assert sh(remote, "ls /root/rootfs/bin | grep labkit || true") == ""


def test_rerun_reports_every_step_already_done(solved, env, tmp_path):
    result = labkit(env, "lab.chroot", "--busybox", HOST_BUSYBOX, "--report", str(tmp_path / "again.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "again.json").read_text())
    assert [(s["id"], s["already_done"]) for s in report["steps"]] == [(i, True) for i in STEP_IDS]
    assert result.stdout.count("already done") >= len(STEP_IDS)


def test_nothing_stays_mounted_after_the_lab(solved, remote):
    mounts = sh(remote, "cat /proc/mounts")
    assert "overlay" not in mounts and "/overlay/proc" not in mounts
    assert sh(remote, "ls /tmp") == ""


def test_check_passes_on_the_solved_vm_and_changes_nothing(solved, con0, env, remote, tmp_path):
    _, target = con0
    before = sh(remote, SNAPSHOT)
    result = labkit(env, "check.chroot", "--provider", "ssh", "--host", f"root@127.0.0.1:{target.port}",
                    "--key", str(target.key_path), "--report", str(tmp_path / "check.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "check.json").read_text())
    assert {c["status"] for c in report["checks"]} == {"pass"}
    assert sh(remote, SNAPSHOT) == before


def test_check_accepts_a_students_own_correct_container_sh(solved, remote):
    own = """#!/bin/sh
# A student's version: different names and layout, the same behaviour.
set -e
base=$(mktemp -d /tmp/ctr.XXXXXX)
mkdir "$base/diff" "$base/work" "$base/root"
mount -t overlay overlay -o lowerdir="$1",upperdir="$base/diff",workdir="$base/work" "$base/root"
chroot "$base/root" /bin/busybox --install -s
PS1="$(basename "$base")# " exec chroot "$base/root" /bin/busybox sh
"""
    sh(remote, "cp -p /root/container.sh /root/container.sh.keep")
    remote.put(own.encode(), "/root/container.sh", 0o755)
    try:
        report = check(remote)
        assert {c.id: c.status for c in report.checks if c.status != "pass"} == {}
    finally:
        sh(remote, "mv -f /root/container.sh.keep /root/container.sh")


# Each step broken by hand, and many more student mistakes: tests/integration/test_catalogue.py.


def test_check_exit_status_and_failing_ids_from_the_cli(solved, con0, env, remote, tmp_path):
    _, target = con0
    sh(remote, "chmod -x /root/container.sh")
    try:
        result = labkit(env, "check.chroot", "--provider", "ssh", "--host", f"root@127.0.0.1:{target.port}",
                        "--key", str(target.key_path), "--report", str(tmp_path / "broken.json"))
    finally:
        sh(remote, "chmod 755 /root/container.sh")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads((tmp_path / "broken.json").read_text())
    assert [c["id"] for c in report["checks"] if c["status"] == "fail"] == ["container-script.executable"]
    assert "container-script.executable" in result.stdout and "chmod +x container.sh" in result.stdout


def test_a_students_own_container_sh_is_kept_as_bak_when_the_lab_writes_its_own(solved, env, remote):
    own = "#!/bin/sh\necho my own container\n"
    remote.put(own.encode(), "/root/container.sh", 0o700)
    sh(remote, "rm -f /root/container.sh.bak")
    # Its checks pass (the lab leaves a working container.sh alone), so --force makes the step write.
    result = labkit(env, "lab.chroot", "--only", "container-script", "--force", "--busybox", HOST_BUSYBOX)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sh(remote, "cat /root/container.sh.bak; stat -c %a /root/container.sh") == own + "755\n"
    # Writing the same file again keeps nothing: there is nothing of the student's to keep.
    sh(remote, "rm /root/container.sh.bak")
    again = labkit(env, "lab.chroot", "--only", "container-script", "--force", "--busybox", HOST_BUSYBOX)
    assert again.returncode == 0, again.stdout + again.stderr
    assert sh(remote, "ls /root/container.sh.bak 2>&1 || true").endswith("No such file or directory\n")


def test_only_and_from_select_steps(solved, env):
    result = labkit(env, "lab.chroot", "--only", "symlinks")
    assert result.returncode == 0 and "[symlinks]" in result.stdout and "[rootfs]" not in result.stdout
    result = labkit(env, "lab.chroot", "--from", "overlay", "--force")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[overlay]" in result.stdout and "[proc]" in result.stdout and "[busybox]" not in result.stdout


# --- busybox sources ------------------------------------------------------------------------------

@pytest.fixture
def busybox_server(tmp_path):
    """Serves files over HTTP on this host; the VM reaches it at 10.0.2.2:PORT."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://10.0.2.2:{server.server_address[1]}/busybox"
    server.shutdown()


def test_url_source_records_then_enforces_the_sha256(solved, env, remote, busybox_server, qemu_settings):
    root, url = busybox_server
    data = Path(HOST_BUSYBOX).read_bytes()
    (root / "busybox").write_bytes(data)
    pins = Path(qemu_settings["state_dir"]) / "busybox-sha256.json"
    env = dict(env, INVOKE_CHROOT_BUSYBOX_URL=url)
    first = labkit(env, "lab.chroot", "--only", "busybox", "--force", "--busybox", "url")
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(pins.read_text())[url] == hashlib.sha256(data).hexdigest()
    assert "recorded" in first.stdout

    before = sh(remote, "sha256sum /root/rootfs/bin/busybox")
    (root / "busybox").write_bytes(data + b"tampered")
    second = labkit(env, "lab.chroot", "--only", "busybox", "--force", "--busybox", "url")
    assert second.returncode == 1
    assert "not " + hashlib.sha256(data).hexdigest() in second.stdout and "Nothing was installed" in second.stdout
    assert sh(remote, "sha256sum /root/rootfs/bin/busybox") == before
    assert sh(remote, "ls /root/rootfs/bin | grep labkit || true") == ""


def test_auto_falls_back_on_an_http_error(solved, env, remote, busybox_server):
    _, url = busybox_server  # serves nothing: 404
    result = labkit(dict(env, INVOKE_CHROOT_BUSYBOX_URL=url), "lab.chroot", "--only", "busybox", "--force")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"! The target could not download {url} (wget: server returned error: HTTP/1.0 404 File not found): " \
           "using the target's own static busybox /usr/bin/busybox instead." in result.stdout


def test_auto_never_falls_back_when_the_checksum_differs(solved, env, remote, busybox_server):
    root, url = busybox_server
    (root / "busybox").write_bytes(Path(HOST_BUSYBOX).read_bytes() + b"tampered")
    before = sh(remote, "sha256sum /root/rootfs/bin/busybox")
    env = dict(env, INVOKE_CHROOT_BUSYBOX_URL=url, INVOKE_CHROOT_BUSYBOX_SHA256=hashlib.sha256(Path(HOST_BUSYBOX).read_bytes()).hexdigest())
    result = labkit(env, "lab.chroot", "--only", "busybox", "--force")
    assert result.returncode == 1 and "chroot.busybox.sha256" in result.stdout and "Nothing was installed" in result.stdout
    assert "using the target's own" not in result.stdout
    assert sh(remote, "sha256sum /root/rootfs/bin/busybox") == before


def test_configured_sha256_is_enforced(solved, env, remote, busybox_server):
    root, url = busybox_server
    (root / "busybox").write_bytes(Path(HOST_BUSYBOX).read_bytes())
    env = dict(env, INVOKE_CHROOT_BUSYBOX_URL=url, INVOKE_CHROOT_BUSYBOX_SHA256="0" * 64)
    result = labkit(env, "lab.chroot", "--only", "busybox", "--force", "--busybox", "url")
    assert result.returncode == 1 and "chroot.busybox.sha256" in result.stdout


def test_a_file_that_is_not_busybox_is_refused_and_nothing_installed(solved, env, remote, tmp_path):
    fake = tmp_path / "busybox"
    fake.write_text("#!/bin/sh\necho not busybox\n")
    fake.chmod(0o755)
    before = sh(remote, "sha256sum /root/rootfs/bin/busybox")
    result = labkit(env, "lab.chroot", "--only", "busybox", "--force", "--busybox", str(fake))
    assert result.returncode == 1
    assert "does not run as busybox" in result.stdout
    assert sh(remote, "sha256sum /root/rootfs/bin/busybox") == before
    assert sh(remote, "ls /root/rootfs/bin | grep labkit; ls /tmp") == ""


def test_target_source_uses_the_vms_own_busybox(solved, env, remote):
    """The reported bug: in BusyBox ash `command -v busybox` answers "busybox", not a path."""
    assert sh(remote, "command -v busybox").strip() == "busybox"
    result = labkit(env, "lab.chroot", "--only", "busybox", "--force", "--busybox", "target")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "$ cp /usr/bin/busybox rootfs/bin/busybox" in result.stdout
    assert "! busybox from the target's own /usr/bin/busybox" in result.stdout
    assert sh(remote, "cmp /bin/busybox /root/rootfs/bin/busybox && echo same").strip() == "same"


def test_reset_undoes_the_lab_so_the_check_fails_at_the_first_step(solved, env, remote):
    """Runs last in this module: it takes the solved state away."""
    sh(remote, "mkdir -p /tmp/leftover1/upper /tmp/leftover1/workdir /tmp/leftover1/overlay && "
               "mount -t overlay -o lowerdir=/root/rootfs,upperdir=/tmp/leftover1/upper,workdir=/tmp/leftover1/workdir "
               "none /tmp/leftover1/overlay && mkdir -p /tmp/leftover1/overlay/proc && "
               "mount -t proc none /tmp/leftover1/overlay/proc")
    result = labkit(env, "lab.reset", "chroot")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/tmp/leftover1" not in sh(remote, "cat /proc/mounts; ls /tmp")
    assert sh(remote, "ls /root/rootfs /root/container.sh /root/.labkit/chroot.done 2>&1 || true").count("No such file") == 3
    report = check(remote)
    assert {c.step for c in report.checks if c.status == "fail"} == {"rootfs", "container-script"}
    assert all(c.status == "skip" for c in report.checks if c.step not in ("rootfs", "container-script"))
