"""`inv check.setup` through the CLI on this machine: every item that can fail here, made to fail for
real (a PATH without QEMU or bakerx, a full filesystem, an encrypted key, a closed port), and a
passing run for the built-in provider and against a real sshd on loopback.

VirtualBox cannot run on these machines and bakerx is not on the npm registry: `VBoxManage` and
`bakerx` are stand-ins (tests/bakerx_standin/), and so is `node` where an old one is needed
(tests/node_standin/). No VM is booted: check.setup never needs one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from labs.providers import vmimage
from labs.providers.qemu import choose_accel, host_facts
from tests import cli
from tests.sshd import free_port, keygen

STANDINS = cli.REPO / "tests" / "bakerx_standin"
NODE_STANDIN = cli.REPO / "tests" / "node_standin"
CACHE = os.environ.get("LABKIT_TEST_CACHE_DIR") or str(vmimage.default_dir("XDG_CACHE_HOME", ".cache"))


def environment(tmp_path: Path, **extra: str) -> dict:
    """This user's environment without labkit settings, a state directory of the test's own."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("INVOKE_", "BAKERX_STANDIN_", "NODE_STANDIN_", "VBOXMANAGE_STANDIN_"))}
    env.update(COLUMNS="200", INVOKE_VM_STATE_DIR=str(tmp_path / "state"), INVOKE_VM_CACHE_DIR=CACHE)
    env.update(extra)
    return env


def bin_dir(tmp_path: Path, *tools: str) -> Path:
    """A directory for PATH holding only python3 (the bakerx stand-in runs on it) and `tools`."""
    directory = tmp_path / "bin"
    directory.mkdir(exist_ok=True)
    (directory / "python3").symlink_to(sys.executable)
    for tool in tools:
        (directory / Path(tool).name).symlink_to(tool)
    return directory


def setup_check(env: dict, *args: str) -> subprocess.CompletedProcess:
    return cli.labkit(env, "check.setup", *args, timeout=120)


def line(result: subprocess.CompletedProcess, check: str) -> str:
    """The line the plain reporter printed for `check`, and its hint line when it failed."""
    lines = result.stdout.splitlines()
    for index, text in enumerate(lines):
        if f"check {check}:" in text:
            hint = lines[index + 2] if index + 2 < len(lines) and "hint:" in lines[index + 2] else ""
            hint = hint or (lines[index + 1] if index + 1 < len(lines) and "hint:" in lines[index + 1] else "")
            return text + ("\n" + hint if hint else "")
    raise AssertionError(f"no line for check {check}:\n{result.stdout}")


def test_builtin_provider_passes_and_says_which_accelerator(tmp_path):
    result = setup_check(environment(tmp_path), "--provider", "qemu", "--report", str(tmp_path / "setup.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    accel = choose_accel("auto", host_facts("x86_64")).name
    expected = "pass: KVM: /dev/kvm opens" if accel == "kvm" else "pass: TCG (software emulation, slow"
    assert expected in line(result, "accelerator")
    if accel == "tcg":
        assert "because the CPU shows no vmx/svm flag" in line(result, "accelerator") or "/dev/kvm" in line(result, "accelerator")
    report = json.loads((tmp_path / "setup.json").read_text())
    assert report["lab"] == "setup" and report["provider"] == "qemu" and report["summary"]["failed"] == 0
    assert [check["id"] for check in report["checks"]] == ["qemu-binary", "vm-tools", "accelerator", "image", "disk", "memory", "port"]
    assert not (tmp_path / "state").exists()  # read-only: not even the state directory is made


def test_missing_qemu_fails_its_item_and_guards_vm_up(tmp_path):
    env = environment(tmp_path, PATH=str(bin_dir(tmp_path)))
    result = setup_check(env, "--provider", "qemu", "--report", str(tmp_path / "setup.xml"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL check qemu-binary: qemu-system-x86_64 not found: the built-in VM needs QEMU for x86_64 guests." in result.stdout
    assert "hint: Install it: sudo apt-get install qemu-system-x86" in line(result, "qemu-binary")
    failure = ET.parse(tmp_path / "setup.xml").getroot().find(".//testcase[@name='qemu-binary']/failure")
    assert failure is not None and "qemu-system-x86_64 not found" in failure.get("message")
    up = cli.labkit(env, "vm.up", "con0", timeout=120)
    assert up.returncode == 3
    assert up.stderr.strip().splitlines() == [
        "Error: qemu-system-x86_64 not found: the built-in VM needs QEMU for x86_64 guests (setup check qemu-binary).",
        "Install it: sudo apt-get install qemu-system-x86; then run inv check.setup to check the rest of this "
        "computer's setup (--provider qemu)."]
    assert not (tmp_path / "state" / "vms" / "con0").exists()


@pytest.fixture
def full_cache(tmp_path):
    """A real 16 MiB filesystem (tmpfs) as the image cache: no room to build an image."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the CI runs as root)")
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "labkit-test", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_no_disk_free_in_the_cache_directory(tmp_path, full_cache):
    env = environment(tmp_path, INVOKE_VM_CACHE_DIR=str(full_cache))
    result = setup_check(env, "--provider", "qemu")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAIL check disk: Only 16 MiB free in the cache directory {full_cache} ({full_cache}): 3.0 GiB needed to build chroot, docker." in result.stdout
    assert "hint: Free space there (df -h shows where), or set vm.cache_dir to a disk with room." in line(result, "disk")
    up = cli.labkit(env, "vm.up", "con0", timeout=120)
    assert up.returncode == 3 and "(setup check disk)" in up.stderr and "1.5 GiB needed to build chroot" in up.stderr
    assert "inv check.setup" in up.stderr and list(full_cache.iterdir()) == []


# -- bakerx -------------------------------------------------------------------------------------------

def bakerx_env(tmp_path: Path, *tools: str, **extra: str) -> dict:
    """A student's HOME with no ~/.bakerx yet; PATH holds only the given stand-ins, python3 and
    ssh-keygen (the bakerx stand-in writes bakerx's keys with it)."""
    (tmp_path / "home").mkdir(exist_ok=True)
    path = bin_dir(tmp_path, *tools, shutil.which("ssh-keygen"))
    return environment(tmp_path, HOME=str(tmp_path / "home"), PATH=str(path), **extra)


def test_without_bakerx_it_fails_with_the_install_hint(tmp_path):
    result = setup_check(bakerx_env(tmp_path, str(NODE_STANDIN / "node")), "--provider", "bakerx")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL check bakerx: bakerx is not installed (no 'bakerx' on PATH)." in result.stdout
    assert "npm install -g ottomatica/bakerx" in line(result, "bakerx")
    assert "check node: pass: Node.js 20.0.0" in result.stdout


def test_old_bakerx_and_old_node(tmp_path):
    env = bakerx_env(tmp_path, str(NODE_STANDIN / "node"), str(STANDINS / "bakerx"), str(STANDINS / "VBoxManage"),
                     BAKERX_STANDIN_VERSION="0.6.2", NODE_STANDIN_VERSION="10.24.1")
    result = setup_check(env, "--provider", "bakerx")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL check node: Node.js v10.24.1 is older than 12.14, which bakerx needs." in result.stdout
    assert "FAIL check bakerx: bakerx 0.6.2 is older than 0.6.3, the oldest labkit drives." in result.stdout
    assert "Upgrade it: npm install -g ottomatica/bakerx" in line(result, "bakerx")
    up = cli.labkit(env, "vm.up", "con0", "--provider", "bakerx", timeout=120)
    assert up.returncode == 3 and up.stderr.startswith(
        "Error: bakerx 0.6.2 is older than 0.6.3, the oldest labkit drives (setup check bakerx).")
    assert "then run inv check.setup to check the rest of this computer's setup (--provider bakerx)." in up.stderr


def test_node_missing(tmp_path):
    result = setup_check(bakerx_env(tmp_path, str(STANDINS / "bakerx")), "--provider", "bakerx")
    assert "FAIL check node: Node.js is not installed (no node on PATH): bakerx runs on it." in result.stdout
    assert result.returncode == 1


def test_virtualbox_without_vt_x(tmp_path):
    """The VBoxManage stand-in answers `list hostinfo` as VirtualBox does on a machine whose VT-x is off."""
    env = bakerx_env(tmp_path, str(NODE_STANDIN / "node"), str(STANDINS / "bakerx"), str(STANDINS / "VBoxManage"),
                     VBOXMANAGE_STANDIN_VTX="no")
    result = setup_check(env, "--provider", "bakerx", "--report", str(tmp_path / "setup.json"))
    assert result.returncode == 1
    assert "check bakerx: pass: bakerx 0.9.0 (its argument order: bakerx pull <image> [registry])" in result.stdout
    assert "check vboxmanage: pass: VBoxManage at" in result.stdout and "(VirtualBox 7.0.14r161095)" in result.stdout
    assert "FAIL check virtualisation: VirtualBox reports no hardware virtualisation (VT-x/AMD-V) on this processor." in result.stdout
    assert "Enable virtualisation (Intel VT-x / AMD-V, SVM) in the BIOS/UEFI settings" in line(result, "virtualisation")
    checks = {check["id"]: check for check in json.loads((tmp_path / "setup.json").read_text())["checks"]}
    assert checks["virtualisation"]["status"] == "fail" and checks["bakerx-images"]["status"] == "pass"


def test_auto_without_bakerx_checks_the_builtin_provider(tmp_path):
    result = setup_check(environment(tmp_path))
    assert "--provider auto: using the built-in qemu VM" in result.stdout
    assert "check qemu-binary: pass" in result.stdout and result.returncode == 0


# -- ssh ------------------------------------------------------------------------------------------------

def ssh_args(server, key=None) -> list[str]:
    return ["--provider", "ssh", "--host", f"{server.user}@127.0.0.1:{server.port}", "--key", str(key or server.client_key)]


def test_ssh_passes_against_a_real_sshd_and_pins_nothing(tmp_path, sshd):
    result = setup_check(environment(tmp_path), *ssh_args(sshd))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"check key-file: pass: {sshd.client_key} exists, readable only by you (mode 600)" in result.stdout
    assert "check key-passphrase: pass: No passphrase;" in result.stdout
    assert f"check host-reachable: pass: 127.0.0.1:{sshd.port} accepts connections" in result.stdout
    kind, key = sshd.known_hosts_line.split()[1:3]
    assert f"check host-key: pass: Host key {kind} SHA256:" in result.stdout and "is not pinned yet" in result.stdout
    assert f"check login: pass: Logged in as {sshd.user}" in result.stdout
    assert not (tmp_path / "state" / "known_hosts").exists()
    state = tmp_path / "state"
    state.mkdir()
    (state / "known_hosts").write_text(sshd.known_hosts_line)
    again = setup_check(environment(tmp_path), *ssh_args(sshd))
    assert again.returncode == 0 and "is the one pinned in" in line(again, "host-key")


def test_ssh_encrypted_key(tmp_path, sshd):
    key = tmp_path / "encrypted_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret-Word-17", "-f", str(key)], check=True)
    result = setup_check(environment(tmp_path), *ssh_args(sshd, key))
    assert result.returncode == 1
    assert f"FAIL check key-passphrase: {key} is protected by a passphrase, which labkit cannot type" in result.stdout
    assert "ssh-keygen -t ed25519 -N ''" in line(result, "key-passphrase")
    assert "s3cret-Word-17" not in result.stdout + result.stderr
    assert "FAIL check login:" in result.stdout  # labkit cannot use it, so the login fails too


def test_a_key_in_ssh_agent_is_said_so(tmp_path, sshd):
    socket_path = tmp_path / "agent.sock"
    started = subprocess.run(["ssh-agent", "-a", str(socket_path)], capture_output=True, text=True, check=True)
    pid = int(started.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        env = environment(tmp_path, SSH_AUTH_SOCK=str(socket_path))
        before = setup_check(env, *ssh_args(sshd))
        assert "check key-passphrase: pass: No passphrase; it is not in ssh-agent" in before.stdout
        subprocess.run(["ssh-add", "-q", str(sshd.client_key)], env=env, check=True, capture_output=True)
        after = setup_check(env, *ssh_args(sshd))
        assert after.returncode == 0 and "check key-passphrase: pass: No passphrase; it is in ssh-agent" in after.stdout
    finally:
        os.kill(pid, 15)


def test_ssh_unreachable_host(tmp_path):
    key = keygen(tmp_path / "key")
    port = free_port()
    result = setup_check(environment(tmp_path), "--provider", "ssh", "--host", f"root@127.0.0.1:{port}", "--key", str(key))
    assert result.returncode == 1
    assert f"FAIL check host-reachable: Nothing answers at 127.0.0.1:{port}: connection refused." in result.stdout
    assert "check host-key: skip: Needs the machine to answer" in result.stdout
    assert "check login: skip: Needs the machine to answer" in result.stdout


def test_ssh_refused_key(tmp_path, sshd):
    result = setup_check(environment(tmp_path), *ssh_args(sshd, keygen(tmp_path / "other")))
    assert result.returncode == 1
    assert "FAIL check login:" in result.stdout and "answered and refused the login" in line(result, "login")


def test_usage_errors_exit_2(tmp_path):
    env = environment(tmp_path)
    assert setup_check(env, "--provider", "vagrant").returncode == 2
    assert setup_check(env, "--provider", "ssh").returncode == 2
    assert setup_check(env, "--report", str(tmp_path / "r.txt")).returncode == 2
    assert setup_check(env, "--host", "a@b@c").returncode == 2
