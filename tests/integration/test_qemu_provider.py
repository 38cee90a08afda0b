"""The QEMU provider against real VMs under TCG: SSH with the pinned key, lifecycle, and a build as a
normal user. `con0` is shared with other tests, so the tests that stop VMs use their own."""

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import paramiko
import pytest

from labs.errors import TargetError
from labs.providers.qemu import QemuProvider
from tests.integration.conftest import progress

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
NONROOT_USER = "labkit-nonroot"


def connect(target, known_hosts: Path | None = None) -> paramiko.SSHClient:
    """Paramiko client that trusts only the host keys in `known_hosts` (the VM's pin by default)."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or target.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(target.host, port=target.port, username=target.user, key_filename=str(target.key_path),
                   look_for_keys=False, allow_agent=False, timeout=30, banner_timeout=30)
    return client


def run(client: paramiko.SSHClient, command: str) -> str:
    _, stdout, stderr = client.exec_command(command, timeout=120)
    output = stdout.read().decode()
    assert stdout.channel.recv_exit_status() == 0, output + stderr.read().decode()
    return output


def state_of(provider: QemuProvider, vm: str) -> tuple[str, int | None]:
    return next((s.state, s.pid) for s in provider.status() if s.name == vm)


@pytest.fixture(scope="module")
def ssh(con0):
    client = connect(con0[1])
    yield client
    client.close()


def test_up_is_idempotent(con0):
    provider, target = con0
    _, pid = state_of(provider, "con0")
    # The same QEMU process answers: up() neither booted nor created anything (no timed assert: the
    # wait for the SSH banner depends on the machine's load).
    assert provider.up("con0") == target
    assert [(s.name, s.state, s.pid) for s in provider.status() if s.name == "con0"] == [("con0", "running", pid)]


def test_con0_is_a_root_debian_vm_for_the_chroot_lab(ssh):
    assert "Linux con0" in run(ssh, "uname -a")
    assert run(ssh, "id -u").strip() == "0"
    assert run(ssh, "cat /etc/labkit-vm").strip() == "con0"
    assert "BusyBox" in run(ssh, "busybox --help | head -1")
    assert run(ssh, "echo abc | busybox sha256sum").startswith("edeaaff3f1774ad2888673770c6d64097e391bc362d7d6fb34982ddf0efd18cb")


def test_overlay_proc_and_mount_namespaces_work_on_the_root_disk(ssh):
    # On the root filesystem, not /tmp: an overlay's upper dir needs d_type, which the image must have.
    run(ssh, "rm -rf /root/ov && mkdir -p /root/ov/lower /root/ov/upper /root/ov/work /root/ov/merged /root/ov/proc"
             " && echo low > /root/ov/lower/f")
    run(ssh, "mount -t overlay overlay -o lowerdir=/root/ov/lower,upperdir=/root/ov/upper,workdir=/root/ov/work /root/ov/merged")
    try:
        run(ssh, "echo high > /root/ov/merged/f && rm -f /root/ov/merged/gone")
        assert run(ssh, "cat /root/ov/lower/f /root/ov/upper/f") == "low\nhigh\n"
    finally:
        run(ssh, "umount /root/ov/merged")
    run(ssh, "mount -t proc proc /root/ov/proc && test -e /root/ov/proc/self/status && umount /root/ov/proc")
    assert run(ssh, "unshare -m sh -c 'mount -t tmpfs none /mnt && grep -c \" /mnt \" /proc/mounts'").strip() == "1"
    assert " /mnt " not in run(ssh, "cat /proc/mounts")
    run(ssh, "rm -rf /root/ov")


def test_guest_reaches_the_debian_mirror_through_qemu_networking(ssh, qemu_settings):
    mirror = qemu_settings.get("mirror", "http://deb.debian.org/debian")
    assert "default via 10.0.2.2" in run(ssh, "busybox ip route")
    run(ssh, f"busybox wget -q -O /dev/null {mirror}/dists/bookworm/Release")


def test_private_key_is_mode_600(con0):
    _, target = con0
    assert stat.S_IMODE(os.stat(target.key_path).st_mode) == 0o600


def test_ssh_command_logs_in_with_the_pinned_host_key(con0):
    provider, _ = con0
    done = subprocess.run(provider.ssh_command("con0") + ["-o", "BatchMode=yes", "id -un"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stdout.strip()) == (0, "root"), done.stderr


def test_a_different_host_key_is_refused(con0, tmp_path):
    provider, target = con0
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    key_type, key = (tmp_path / "other.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{target.host}]:{target.port} {key_type} {key}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        connect(target, wrong)
    argv = [arg if not arg.startswith("UserKnownHostsFile=") else f"UserKnownHostsFile={wrong}" for arg in provider.ssh_command("con0")]
    done = subprocess.run(argv + ["-o", "BatchMode=yes", "true"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 255 and "host key" in done.stderr.lower()


@pytest.fixture(scope="module")
def scratch(qemu_settings):
    """A provider with a second VM on the same image, for tests that stop and delete VMs."""
    provider = QemuProvider({**qemu_settings, "vms": {"scratch0": "chroot"}}, progress)
    yield provider
    provider.destroy("scratch0")


def test_down_keeps_the_disk_and_up_boots_it_again(scratch):
    target = scratch.up("scratch0")
    with connect(target) as client:
        run(client, "echo kept > /root/survivor")
    state, pid = state_of(scratch, "scratch0")
    assert state == "running" and pid

    scratch.down("scratch0")
    assert state_of(scratch, "scratch0") == ("stopped", None)
    with pytest.raises(TargetError, match="VM 'scratch0' is not running."):
        scratch.target("scratch0")
    scratch.down("scratch0")  # already stopped: nothing to do

    again = scratch.up("scratch0")
    assert state_of(scratch, "scratch0")[0] == "running"
    with connect(again) as client:
        assert run(client, "cat /root/survivor") == "kept\n"


def test_destroy_removes_the_vm_directory(scratch, qemu_settings):
    scratch.up("scratch0")
    vm_dir = Path(qemu_settings["state_dir"]) / "vms" / "scratch0"
    assert (vm_dir / "known_hosts").exists()
    scratch.destroy("scratch0")
    assert not vm_dir.exists()
    assert "scratch0" not in [s.name for s in scratch.status()]


def test_a_boot_that_hangs_is_tried_again_then_named_with_the_serial_log(qemu_settings):
    """A 1 s boot_timeout makes every boot 'hang': both boots are killed, the second is announced
    with what the console showed, and the error names the serial log. The disk the two killed
    boots leave is still good: the same VM then boots with the normal timeout."""
    messages: list[str] = []
    provider = QemuProvider({**qemu_settings, "vms": {"slow0": "chroot"}, "boot_timeout": 1}, messages.append)
    try:
        with pytest.raises(TargetError) as error:
            provider.up("slow0")
        assert "did not answer on SSH within 1 s" in error.value.message
        assert str(Path(qemu_settings["state_dir"]) / "vms" / "slow0" / "serial.log") in error.value.hint
        assert state_of(provider, "slow0") == ("stopped", None)
        assert sum(m.startswith("Booting slow0") for m in messages) == 2, messages
        again = [m for m in messages if "Starting it again (boot 2 of 2)" in m]
        assert len(again) == 1 and "did not answer on SSH within 1 s. Its console" in again[0], messages
        target = QemuProvider({**qemu_settings, "vms": {"slow0": "chroot"}}).up("slow0")
        with connect(target) as client:
            assert run(client, "echo up") == "up\n"
    finally:
        provider.destroy("slow0")


# -- a normal user builds the image and boots it ------------------------------------------------------

CHILD = r"""
import json, subprocess, sys, types
src, home = sys.argv[1], sys.argv[2]
sys.path.insert(0, src)
# Load the provider without labs/providers/__init__.py, whose transports import packages this
# interpreter may lack: the provider itself needs only the standard library.
package = types.ModuleType("labs.providers")
package.__path__ = [src + "/labs/providers"]
sys.modules["labs.providers"] = package
from labs.providers.qemu import QemuProvider

provider = QemuProvider({"cache_dir": home + "/cache", "state_dir": home + "/state"}, lambda m: print(m, flush=True))
try:
    provider.up("con0")
    done = subprocess.run(provider.ssh_command("con0") + ["-o", "BatchMode=yes", "id -u; stat -c %U:%G /etc/shadow"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
finally:
    provider.destroy("con0")
print("RESULT " + json.dumps({"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}))
"""


@pytest.fixture
def normal_user():
    """A user without root: ourselves when not root, else a throwaway account with subordinate ids."""
    if os.geteuid() != 0:
        yield None
        return
    created = False
    try:
        pwd.getpwnam(NONROOT_USER)
    except KeyError:
        made = subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", NONROOT_USER], capture_output=True, text=True)
        if made.returncode != 0:
            reason = f"cannot create a normal user to build as: {made.stderr.strip()}"
            print(reason)
            pytest.skip(reason)
        created = True
    for table, flag in (("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")):
        lines = Path(table).read_text().splitlines() if Path(table).exists() else []
        if not any(line.startswith(NONROOT_USER + ":") for line in lines):
            subprocess.run(["usermod", flag, "300000-365535", NONROOT_USER], check=True)
    yield NONROOT_USER
    if created:
        subprocess.run(["userdel", "--remove", NONROOT_USER], capture_output=True)


def test_a_normal_user_builds_and_boots_con0(normal_user):
    work = Path(tempfile.mkdtemp(prefix="labkit-nonroot-", dir="/tmp"))
    try:
        # A copy the user can read even when the checkout lives under root's private home.
        shutil.copytree(REPO / "labs", work / "src" / "labs", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REPO / "scripts" / "guest", work / "src" / "scripts" / "guest")
        (work / "child.py").write_text(CHILD)
        env = ["env", "-i", f"HOME={work}", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        if normal_user:
            shutil.chown(work, normal_user, normal_user)
            for path in work.rglob("*"):
                shutil.chown(path, normal_user, normal_user)
            as_user = ["runuser", "-u", normal_user, "--"]
            # The test's interpreter may sit in root's private home; the system one works for everybody.
            python = next((py for py in (sys.executable, "/usr/bin/python3")
                           if subprocess.run(as_user + [py, "-c", "pass"], capture_output=True).returncode == 0), None)
            if python is None:
                pytest.skip(f"no Python interpreter that {normal_user} may run")
        else:
            as_user, python = [], sys.executable
        done = subprocess.run(as_user + env + [python, str(work / "child.py"), str(work / "src"), str(work)],
                              capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL)
        print(done.stdout[-4000:], done.stderr[-4000:])
        assert done.returncode == 0, done.stderr[-2000:]
        result = json.loads(done.stdout.split("RESULT ", 1)[1])
        assert result["rc"] == 0, result["stderr"]
        # Root inside the guest owns what dpkg made root's, though no root built the image.
        assert result["stdout"].split() == ["0", "root:shadow"]
        image = next((work / "cache" / "images").glob("chroot-*/rootfs.img"))
        assert image.stat().st_uid == (pwd.getpwnam(normal_user).pw_uid if normal_user else os.getuid())
    finally:
        shutil.rmtree(work, ignore_errors=True)
