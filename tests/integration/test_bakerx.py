"""The bakerx provider end to end, through the CLI, against a stand-in `bakerx`.

VirtualBox cannot run on these machines (no kernel modules) and bakerx is not on the npm registry, so
these tests put tests/bakerx_standin/bakerx first on PATH. It stands in for bakerx 0.6.3, 0.6.11,
0.6.12, 0.7.0 and 0.9.0 as the project's notes describe them (argument orders, outputs, errors printed
with exit status 0), and its `run` boots a real VM through the built-in QEMU provider. Everything after
`ssh-info` is real: host-key pinning, SSH, OpenSSH reading `vm.ssh-config`, and the whole chroot lab.
busybox.net cannot be reached from here, so the lab uploads the host's /bin/busybox (busybox-static).
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from pathlib import Path

import paramiko
import pytest

from labs.providers.qemu import QemuProvider
from tests import cli

pytestmark = pytest.mark.vm

STANDIN = cli.REPO / "tests" / "bakerx_standin"
HOST_BUSYBOX = "/bin/busybox"
VERSIONS = ["0.6.3", "0.6.12", "0.7.0", "0.9.0"]
STEP_IDS = ["rootfs", "busybox", "symlinks", "chroot-shell", "container-script", "overlay", "proc"]


def labkit(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return cli.labkit(env, *args, timeout=timeout)


def bakerx(env: dict, *args: str) -> subprocess.CompletedProcess:
    """The stand-in itself, as a person would type it."""
    return subprocess.run([str(STANDIN / "bakerx"), *args], capture_output=True, text=True, env=env, timeout=300,
                          stdin=subprocess.DEVNULL)


def make_env(home: Path, version: str, qemu_settings: dict, **extra: str) -> dict:
    """A user whose HOME holds bakerx's ~/.bakerx, with the stand-in first on PATH."""
    home.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("INVOKE_", "BAKERX_STANDIN_")) and key != "FORCE_COLOR"}
    env.update(HOME=str(home), PATH=f"{STANDIN}{os.pathsep}{os.environ['PATH']}", COLUMNS="120",
               BAKERX_STANDIN_VERSION=version, BAKERX_STANDIN_CACHE_DIR=str(qemu_settings["cache_dir"]),
               BAKERX_STANDIN_LOG=str(home / "bakerx-calls.jsonl"),
               INVOKE_VM_STATE_DIR=str(home / "labkit-state"), INVOKE_VM_CACHE_DIR=str(qemu_settings["cache_dir"]))
    env.update(extra)
    return env


def calls(env: dict) -> list[list[str]]:
    log = Path(env["BAKERX_STANDIN_LOG"])
    return [json.loads(line)["argv"] for line in log.read_text().splitlines()] if log.exists() else []


def standin_vms(home: Path) -> list[str]:
    """VMs the stand-in's QEMU still has a directory for (a running or stopped real VM)."""
    return sorted(path.name for path in (home / ".bakerx" / ".persist" / "standin-qemu" / "vms").glob("*") if path.is_dir())


def cleanup(home: Path) -> None:
    """Stop every real VM behind the stand-in, whatever a failing test left."""
    state = home / ".bakerx" / ".persist" / "standin-qemu"
    for vm in standin_vms(home):
        QemuProvider({"state_dir": str(state), "vms": {vm: "chroot"}}).destroy(vm)


def host_key(home: Path, vm: str = "con0") -> str:
    """The VM's real host key (the QEMU provider generated it), as `type base64`."""
    path = home / ".bakerx" / ".persist" / "standin-qemu" / "vms" / vm / "ssh_host_ed25519_key.pub"
    return " ".join(path.read_text().split()[:2])


def pinned(env: dict, port: int) -> str:
    """The host key labkit pinned for con0 on PORT, as `type base64`."""
    keys = paramiko.HostKeys(str(Path(env["INVOKE_VM_STATE_DIR"]) / "bakerx" / "con0" / "known_hosts"))
    return " ".join(f"{key.get_name()} {key.get_base64()}" for key in (keys.lookup(f"[127.0.0.1]:{port}") or {}).values())


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# --- host keys ---------------------------------------------------------------------------------------

def test_a_recreated_vm_is_refused_unless_labkit_recreated_it(qemu_settings, tmp_path):
    # 0.6.11 is the version whose JSON also carries sshUser/privateKey.
    home = tmp_path / "home"
    env = make_env(home, "0.6.11", qemu_settings)
    try:
        assert labkit(env, "vm.up", "con0", "--provider", "bakerx").returncode == 0
        first = host_key(home)
        info = json.loads(bakerx(env, "ssh-info", "con0", "--format", "json").stdout)
        assert (info["sshUser"], info["privateKey"]) == ("root", f"{home}/.bakerx/baker_rsa")
        port = info["port"]
        assert pinned(env, port) == first

        # The student deletes and recreates the VM with bakerx itself: same name, same port, new key.
        assert "deleted" in bakerx(env, "delete", "vm", "con0").stdout
        assert f"-p {port}" in bakerx(env, "run", "con0", "alpine3.9-simple").stdout
        assert host_key(home) != first
        for args in (["vm.up", "con0"], ["check.chroot"]):
            refused = labkit(env, *args, "--provider", "bakerx")
            assert refused.returncode == 3, refused.stdout + refused.stderr
            message, hint = error_lines(refused)
            assert message.startswith(f"Error: con0 ([127.0.0.1]:{port}) presents an SSH host key that differs from the one pinned")
            assert "inv vm.destroy con0 --provider bakerx" in hint
        assert pinned(env, port) == first

        # The hint's own command clears the pin; the next vm.up pins the key it sees.
        forget = hint.split("forget the pin: ", 1)[1]
        assert subprocess.run(forget, shell=True, capture_output=True, env=env).returncode == 0
        assert labkit(env, "vm.up", "con0", "--provider", "bakerx").returncode == 0
        assert pinned(env, port) == host_key(home)

        # Destroyed and recreated through labkit: the new key replaces the pin on purpose.
        assert labkit(env, "vm.destroy", "con0", "--provider", "bakerx").returncode == 0
        previous = pinned(env, port)
        recreated = labkit(env, "vm.up", "con0", "--provider", "bakerx")
        assert recreated.returncode == 0, recreated.stdout + recreated.stderr
        assert "Replaced the SSH host key of con0" in recreated.stdout
        assert pinned(env, port) == host_key(home) != previous

        # Destroyed through labkit but recreated by hand: labkit did not make that VM, so it is refused.
        assert labkit(env, "vm.destroy", "con0", "--provider", "bakerx").returncode == 0
        kept = pinned(env, port)
        assert f"-p {port}" in bakerx(env, "run", "con0", "alpine3.9-simple").stdout
        refused = labkit(env, "vm.up", "con0", "--provider", "bakerx")
        assert refused.returncode == 3 and "differs from the one pinned" in refused.stderr
        assert pinned(env, port) == kept
    finally:
        cleanup(home)


def test_kvm_provider_string_port_and_null_key(qemu_settings, tmp_path):
    home = tmp_path / "home"
    env = make_env(home, "0.9.0", qemu_settings, INVOKE_BAKERX_PROVIDER="kvm")
    try:
        up = labkit(env, "vm.up", "con0", "--provider", "bakerx")
        assert up.returncode == 0, up.stdout + up.stderr
        info = json.loads(bakerx(env, "ssh-info", "con0", "--format", "json", "--provider", "kvm").stdout)
        assert (info["port"], info["private_key"]) == ("2022", None)
        assert "con0 is up: ssh root@127.0.0.1:2022" in up.stdout
        assert ["run", "con0", "alpine3.9-simple", "--memory", "1024", "--cpus", "1", "--provider", "kvm"] in calls(env)
        # The fresh VM fails the self-check (exit 1), which needs a working login with the fallback key.
        checked = labkit(env, "check.chroot", "--provider", "bakerx")
        assert checked.returncode == 1, checked.stdout + checked.stderr
        assert labkit(env, "vm.destroy", "con0", "--provider", "bakerx").returncode == 0
        assert standin_vms(home) == []
    finally:
        cleanup(home)


def test_docker0_is_a_vagrant_box_reached_as_vagrant_with_sudo(qemu_settings, tmp_path):
    # 0.6.3 has no ssh-info: user and key come from the line `run` prints.
    home = tmp_path / "home"
    env = make_env(home, "0.6.3", qemu_settings)
    try:
        up = labkit(env, "vm.up", "docker0", "--provider", "bakerx")
        assert up.returncode == 0, up.stdout + up.stderr
        assert ["pull", "cloud-images.ubuntu.com", "bionic"] in calls(env)
        assert re.search(r"docker0 is up: ssh vagrant@127\.0\.0\.1:\d+", up.stdout)
        path = tmp_path / "ssh_config"
        path.write_text(labkit(env, "vm.ssh-config", "--provider", "bakerx").stdout)
        assert f'IdentityFile "{home}/.bakerx/insecure_private_key"' in path.read_text()
        login = subprocess.run(["ssh", "-F", str(path), "-o", "BatchMode=yes", "docker0",
                                "id -un; sudo -n id -u; cat /etc/labkit-vm"],
                               capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
        # The stand-in's new VMs have no lab-VM marker, as bakerx's own don't: labkit wrote it.
        assert (login.returncode, login.stdout.split()) == (0, ["vagrant", "0", "docker0"]), login.stderr
        assert "Marking docker0 as a lab VM (/etc/labkit-vm)" in up.stdout
        assert labkit(env, "vm.destroy", "docker0", "--provider", "bakerx").returncode == 0
    finally:
        cleanup(home)


# --- errors: printed with exit status 0, turned into one line and exit 3 ------------------------------

ERRORS = {
    # case: (bakerx version, environment, labkit task, the message's start)
    "wsl": ("0.9.0", {"BAKERX_STANDIN_FAIL": "*=wsl", "FORCE_COLOR": "1"}, ["vm.up", "con0"],
            "bakerx refuses to run inside WSL"),
    "vboxmanage": ("0.7.0", {"BAKERX_STANDIN_FAIL": "run=vboxmanage", "FORCE_COLOR": "1"}, ["vm.up", "con0"],
                   "VirtualBox is not installed"),
    "virtualisation": ("0.9.0", {"BAKERX_STANDIN_FAIL": "run=vtx"}, ["vm.up", "con0"],
                       "VirtualBox cannot start the VM: hardware virtualisation (VT-x/AMD-V) is not enabled"),
    "image": ("0.7.0", {"INVOKE_BAKERX_VMS_CON0_IMAGE": "nosuch"}, ["vm.up", "con0"], "bakerx has no image 'nosuch'"),
    "download": ("0.6.12", {"INVOKE_BAKERX_VMS_CON0_IMAGE": "nosuch"}, ["vm.up", "con0"],
                 "bakerx pull did not download image 'nosuch'"),
    "unsupported-image": ("0.9.0", {"INVOKE_BAKERX_PROVIDER": "kvm"}, ["vm.up", "docker0"],
                          "bakerx found no image file that its provider can boot"),
    "provider": ("0.6.12", {"INVOKE_BAKERX_PROVIDER": "hyperv"}, ["vm.up", "con0"],
                 "bakerx does not know the provider 'hyperv'"),
    "locate": ("0.6.12", {"BAKERX_STANDIN_FAIL": "ssh-info=locate", "FORCE_COLOR": "1"}, ["lab.chroot"],
               "bakerx has no VM called 'con0'"),
    "missing": ("0.9.0", {}, ["vm.down", "con0"], "bakerx has no VM called 'con0'"),
    "ssh-timeout": ("0.7.0", {"BAKERX_STANDIN_FAIL": "run=timeout"}, ["vm.up", "con0"],
                    "bakerx run gave up waiting for the VM's SSH server (exit status 1)"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_each_bakerx_error_ends_in_one_line_and_exit_3_with_nothing_half_made(case, qemu_settings, tmp_path):
    version, extra, task, start = ERRORS[case]
    home = tmp_path / "home"
    env = make_env(home, version, qemu_settings, **extra)
    try:
        # The VT-x stand-in then hangs for 300 s, as bakerx polls SSH: a labkit that waited for it
        # would overrun this run's 240 s limit instead of ending at the error line.
        result = labkit(env, *task, "--provider", "bakerx", timeout=240)
        assert result.returncode == 3, result.stdout + result.stderr
        lines = error_lines(result)
        assert len(lines) == 2 and lines[0].startswith(f"Error: {start}"), result.stderr
        assert "\x1b" not in result.stderr and "Traceback" not in result.stderr
        vm = task[1] if len(task) > 1 else "con0"
        persist = home / ".bakerx" / ".persist"
        assert not (persist / "vms" / vm).exists() and standin_vms(home) == []
        assert not (persist / "images" / "nosuch").exists()
        assert not (Path(env["INVOKE_VM_STATE_DIR"]) / "bakerx" / vm / "vm.json").exists()
    finally:
        cleanup(home)


STANDIN_ERRORS = {
    # bakerx arguments, failure to force, version, what it prints; the exit status is 0 each time
    "wsl": (["--version"], "*=wsl", "0.9.0", "Error: Running virtualization software inside Windows Subsystem for Linux is not supported."),
    "image": (["run", "con0", "nosuch"], "", "0.9.0", "nosuch image not found"),
    "provider": (["ssh-info", "con0", "-p", "hyperv"], "", "0.9.0", "provider hyperv is unknown or not suppported."),
    "locate": (["ssh-info", "con0"], "", "0.6.12", "Could not locate VM called 'con0'"),
    "missing": (["delete", "vm", "con0"], "", "0.7.0", "Error: vm con0 does not exist"),
    "vboxmanage": (["run", "con0", "alpine3.9-simple"], "run=vboxmanage", "0.7.0", "Could not find required VBoxManage executable on your path."),
}


@pytest.mark.parametrize("case", list(STANDIN_ERRORS))
def test_standin_prints_bakerx_errors_with_exit_status_0(case, qemu_settings, tmp_path):
    args, fail, version, message = STANDIN_ERRORS[case]
    env = make_env(tmp_path, version, qemu_settings, BAKERX_STANDIN_FAIL=fail)
    done = bakerx(env, *args)
    assert done.returncode == 0 and message in done.stdout + done.stderr


def test_standin_colours_only_on_a_terminal(qemu_settings, tmp_path):
    env = make_env(tmp_path, "0.9.0", qemu_settings)
    assert "\x1b[" not in bakerx(env, "ssh-info", "con0").stdout
    leader, follower = pty.openpty()
    try:
        subprocess.run([str(STANDIN / "bakerx"), "ssh-info", "con0"], stdout=follower, stderr=follower,
                       stdin=subprocess.DEVNULL, env=env, timeout=60)
        assert "\x1b[31mCould not locate VM called 'con0'\x1b[39m" in os.read(leader, 4096).decode()
    finally:
        os.close(leader)
        os.close(follower)


def test_wrong_pull_order_fails_on_each_side_of_0_7(qemu_settings, tmp_path):
    """The stand-in really depends on the order, so the end-to-end tests prove labkit picks the right one."""
    old = make_env(tmp_path / "old", "0.6.12", qemu_settings)
    bakerx(old, "pull", "alpine3.9-simple", "ottomatica/slim#images")
    assert not (tmp_path / "old" / ".bakerx" / ".persist" / "images" / "alpine3.9-simple" / "vbox.iso").exists()
    new = make_env(tmp_path / "new", "0.7.0", qemu_settings)
    assert "ottomatica/slim#images image not found" in bakerx(new, "pull", "ottomatica/slim#images", "alpine3.9-simple").stderr


# --- auto ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setup, said", [
    ("working", "--provider auto: using bakerx 0.9.0, which is installed and working"),
    ("wsl", "--provider auto: using the built-in qemu VM (bakerx refuses to run inside WSL"),
    ("absent", "--provider auto: using the built-in qemu VM (bakerx is not installed"),
])
def test_auto_picks_bakerx_only_when_it_works_and_says_so(setup, said, qemu_settings, tmp_path):
    env = make_env(tmp_path, "0.9.0", qemu_settings, BAKERX_STANDIN_FAIL="*=wsl" if setup == "wsl" else "")
    if setup == "absent":
        env["PATH"] = os.environ["PATH"]
    result = labkit(env, "vm.status")
    assert result.returncode == 0 and said in result.stdout, result.stdout + result.stderr


def test_vm_up_without_bakerx_installed_is_exit_3(qemu_settings, tmp_path):
    env = dict(make_env(tmp_path, "0.9.0", qemu_settings), PATH=os.environ["PATH"])
    result = labkit(env, "vm.up", "con0", "--provider", "bakerx")
    assert result.returncode == 3
    assert error_lines(result)[0] == "Error: bakerx is not installed (no 'bakerx' on PATH) (setup check bakerx)."
    assert "npm install -g ottomatica/bakerx" in result.stderr and "--provider qemu" in result.stderr
    assert "then run inv check.setup" in result.stderr


# --- every version, end to end ----------------------------------------------------------------------

@pytest.fixture(scope="module", params=VERSIONS)
def booted(request, con0, qemu_settings, tmp_path_factory):
    """(version, env, result of `inv vm.up con0 --provider bakerx`) with the VM behind that version.
    labkit's state directory is the QEMU test VM's, so `vm.ssh-config` lists VMs of both providers."""
    version = request.param
    home = tmp_path_factory.mktemp(f"bakerx-{version}")
    env = make_env(home, version, qemu_settings, INVOKE_VM_STATE_DIR=str(qemu_settings["state_dir"]))
    try:
        yield version, env, labkit(env, "vm.up", "con0", "--provider", "bakerx")
        destroyed = labkit(env, "vm.destroy", "con0", "--provider", "bakerx")
        assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
        assert standin_vms(home) == []
    finally:
        cleanup(home)


def test_vm_up_pulls_in_the_versions_argument_order_and_runs_the_vm(booted):
    version, env, up = booted
    assert up.returncode == 0, up.stdout + up.stderr
    assert "con0 is up: ssh root@127.0.0.1:2002" in up.stdout
    made = calls(env)
    pulls = [argv for argv in made if argv[0] == "pull"]
    if version.startswith("0.6."):
        assert pulls == [["pull", "ottomatica/slim#images", "alpine3.9-simple"]]
    else:
        assert pulls == [["pull", "alpine3.9-simple", "ottomatica/slim#images"]]
    assert ["run", "con0", "alpine3.9-simple", "--memory", "1024", "--cpus", "1"] in made
    ssh_info = [argv for argv in made if argv[0] == "ssh-info"]
    assert ssh_info == ([] if version == "0.6.3" else [["ssh-info", "con0", "--format", "json"]] * 2)
    assert pinned(env, 2002) == host_key(Path(env["HOME"]))


def test_chroot_lab_passes_end_to_end_on_the_vm(booted, tmp_path):
    _, env, _ = booted
    result = labkit(env, "lab.chroot", "--provider", "bakerx", "--busybox", HOST_BUSYBOX, "--report", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["provider"] == "bakerx" and report["host"] == "con0"
    assert [(step["id"], step["status"]) for step in report["steps"]] == [(step, "pass") for step in STEP_IDS]
    assert report["summary"]["failed"] == 0 and report["summary"]["errors"] == 0


def test_status_and_an_ssh_config_that_openssh_accepts(booted, con0, tmp_path):
    _, env, _ = booted
    status = labkit(env, "vm.status", "--provider", "bakerx")
    assert status.returncode == 0 and re.search(r"con0 +│ bakerx +│ running +│ root@127\.0\.0\.1:2002", status.stdout), status.stdout
    config = labkit(env, "vm.ssh-config")
    assert config.returncode == 0, config.stderr
    path = tmp_path / "ssh_config"
    path.write_text(config.stdout)
    # bakerx is installed, so its con0 keeps the bare name; the QEMU VM of the same name is con0.qemu.
    for host, port, key in (("con0", 2002, f"{env['HOME']}/.bakerx/baker_rsa"), ("con0.bakerx", 2002, None),
                            ("con0.qemu", con0[1].port, str(con0[1].key_path))):
        parsed = subprocess.run(["ssh", "-G", "-F", str(path), host], capture_output=True, text=True, env=env)
        assert parsed.returncode == 0, parsed.stderr
        settings = dict(line.split(" ", 1) for line in parsed.stdout.splitlines())
        assert (settings["hostname"], settings["port"], settings["user"]) == ("127.0.0.1", str(port), "root")
        assert settings["stricthostkeychecking"] == "true" and settings["identityfile"] == (key or settings["identityfile"])
        login = subprocess.run(["ssh", "-F", str(path), "-o", "BatchMode=yes", host, "cat /etc/labkit-vm"],
                               capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
        assert (login.returncode, login.stdout.strip()) == (0, "con0"), login.stderr


def test_down_needs_bakerx_0_9_and_an_upgraded_bakerx_finds_the_old_vm(booted):
    version, env, _ = booted
    if version != "0.9.0":
        refused = labkit(env, "vm.down", "con0", "--provider", "bakerx")
        assert refused.returncode == 2 and f"bakerx {version} has no stop command" in refused.stderr
        if version != "0.6.3":
            return
        # The student upgrades bakerx. 0.6.3 wrote no image.txt, so 0.9.0's ssh-info names neither
        # user nor key, and labkit falls back to the ones bakerx uses for its alpine images.
        env = dict(env, BAKERX_STANDIN_VERSION="0.9.0")
        info = json.loads(bakerx(env, "ssh-info", "con0", "--format", "json").stdout)
        assert "user" not in info and "private_key" not in info
        again = labkit(env, "vm.up", "con0", "--provider", "bakerx")
        assert again.returncode == 0, again.stdout + again.stderr
        assert labkit(env, "check.chroot", "--provider", "bakerx").returncode == 0
    down = labkit(env, "vm.down", "con0", "--provider", "bakerx")
    assert down.returncode == 0, down.stdout + down.stderr
    assert ["stop", "con0"] in calls(env)
    assert re.search(r"con0 +│ bakerx +│ stopped", labkit(env, "vm.status", "--provider", "bakerx").stdout)
    if version == "0.9.0":
        up = labkit(env, "vm.up", "con0", "--provider", "bakerx")
        assert up.returncode == 0, up.stdout + up.stderr
        # The disk survived the stop: the lab done before is still there.
        assert labkit(env, "check.chroot", "--provider", "bakerx").returncode == 0
