"""The chroot lab's 14 checks (labs/chroot.py) written as pytest-testinfra tests, one test per check.

scripts/bench runs this module next to `inv check.chroot` on the same VM to compare the two. It is
not part of the test suite: its name has no `test_` prefix, so `pytest` (testpaths: tests) does not
collect it; the benchmark names it explicitly:

    pytest --noconftest -p no:cacheprovider tests/bench/testinfra_chroot.py \\
        --hosts=paramiko://con0 --ssh-config=FILE      # FILE: the output of `inv vm.ssh-config`

Each test reads like the check it mirrors: `host.file(...)` properties for files, `host.run(...)` for
the commands a check runs, assertions in Python. The two checks that judge containers share one run
of the same shell as labkit's (the probe labs.chroot.CONTAINERS: two containers inside its private,
read-only mount namespace), run once per connection here, so that both sides start the same containers,
as often, and leave nothing behind; their verdicts are asserted here.

Host keys: testinfra's paramiko backend does not read `UserKnownHostsFile` and accepts an unknown
host key with a warning (paramiko.WarningPolicy), so the `StrictHostKeyChecking yes` that
`inv vm.ssh-config` writes would be ignored silently. The `pinned_host_key` fixture below enforces it:
it opens the connection itself with the pinned keys loaded and paramiko's RejectPolicy, and hands
that client to the backend before any test runs a command.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
import weakref
from pathlib import Path

import paramiko
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from labs import chroot  # noqa: E402

# The student's work directory on the target (con0 logs in as root: its home).
WORKDIR = os.environ.get("LABKIT_BENCH_WORKDIR", "/root")
ROOTFS = f"{WORKDIR}/rootfs"
SCRIPT = f"{WORKDIR}/container.sh"
# What labkit's checks get through the runner's preamble: the lab's variables, the workdir as cwd.
ENVIRONMENT = f"export WORKDIR='{WORKDIR}' ROOTFS='{ROOTFS}' SCRIPT='{SCRIPT}'; cd \"$WORKDIR\"\n"


def connect_pinned(host, ssh_config: str | None) -> None:
    """Give `host`'s paramiko backend a client that verifies the host key against the pin named by
    the ssh_config's UserKnownHostsFile (RejectPolicy: an unknown or changed key fails)."""
    backend = host.backend
    if backend.NAME != "paramiko":
        return  # testinfra's ssh backend runs OpenSSH, which honours the config itself
    if "client" in vars(backend):
        raise RuntimeError("the backend is already connected, without the pinned host key")
    settings = paramiko.SSHConfig.from_path(ssh_config).lookup(backend.host.name) if ssh_config else {}
    known_hosts = settings.get("userknownhostsfile")
    if not known_hosts or settings.get("stricthostkeychecking") != "yes":
        raise RuntimeError(f"--ssh-config must pin {backend.host.name}'s host key "
                           "(UserKnownHostsFile and StrictHostKeyChecking yes, as inv vm.ssh-config writes)")
    client = paramiko.SSHClient()
    client.load_host_keys(os.path.expanduser(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(hostname=settings.get("hostname", backend.host.name),
                   port=int(backend.host.port or settings.get("port", 22)),
                   username=backend.host.user or settings.get("user"),
                   key_filename=backend.ssh_identity_file or settings.get("identityfile", [None])[0],
                   look_for_keys=False, allow_agent=False, timeout=backend.timeout)
    backend.client = client  # the backend's cached_property: every command now uses this connection


@pytest.fixture(scope="module", autouse=True)
def pinned_host_key(host, pytestconfig):
    connect_pinned(host, pytestconfig.getoption("ssh_config"))


_CONTAINERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def containers(host) -> dict[str, list[str]]:
    """The output of labkit's probe CONTAINERS, run once per host connection (as labkit runs it once
    per check run; scripts/bench calls the tests with a new host each round), by part: "upper-1" and
    "upper-2" (where each container's probe file landed), "1" and "2" (each container's lines), or
    "failed" (its whole output when a container failed)."""
    if host in _CONTAINERS:
        return _CONTAINERS[host]
    result = host.run(ENVIRONMENT + chroot.CONTAINERS.script)
    parts: dict[str, list[str]] = {"1": [], "2": []}
    part = ""
    for line in result.stdout.splitlines():
        if line.startswith("labkit-upper-"):
            key, _, path = line[len("labkit-"):].partition(" ")
            parts[key] = [path] if path else []
        elif line in ("labkit-container-1", "labkit-container-2"):
            part = line[-1]
        elif part:
            parts[part].append(line)
    _CONTAINERS[host] = parts if result.succeeded else {"failed": result.stdout.splitlines()}
    return _CONTAINERS[host]


# --- rootfs -------------------------------------------------------------------------------------

def test_rootfs_dirs(host):
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin"):
        assert host.file(f"{ROOTFS}/{directory}").is_directory, f"missing rootfs/{directory}"


# --- busybox ------------------------------------------------------------------------------------

def test_busybox_present(host):
    assert host.file(f"{ROOTFS}/bin/busybox").is_file


def test_busybox_executable(host):
    assert host.file(f"{ROOTFS}/bin/busybox").is_executable


def test_busybox_runs(host):
    result = host.run("chroot %s /bin/busybox --help", ROOTFS)
    assert (result.stdout + result.stderr).startswith("BusyBox")


# --- symlinks -----------------------------------------------------------------------------------

def test_symlinks_installed(host):
    for applet in ("sh", "ls", "touch"):
        assert host.file(f"{ROOTFS}/bin/{applet}").is_symlink, f"no symlink for bin/{applet}"
    assert host.run("chroot %s /bin/ls /", ROOTFS).succeeded


# --- chroot-shell -------------------------------------------------------------------------------

def test_chroot_shell_runs(host):
    result = host.run("printf 'echo labkit-chroot-ok\\nexit\\n' | chroot %s /bin/busybox sh", ROOTFS)
    assert "labkit-chroot-ok" in result.stdout.splitlines()


def test_chroot_shell_clean(host):
    assert not host.file(f"{ROOTFS}/HELLO.txt").exists


# --- container-script ---------------------------------------------------------------------------

def test_container_script_present(host):
    assert host.file(SCRIPT).is_file


def test_container_script_executable(host):
    assert host.file(SCRIPT).is_executable


def test_container_script_interpreter(host):
    first_line = host.file(SCRIPT).content_string.splitlines()[0]
    assert first_line.startswith("#!")
    interpreter = first_line[2:].split()[0]
    assert host.file(interpreter).is_executable, f"interpreter {interpreter} does not exist here"


# --- overlay ------------------------------------------------------------------------------------

def test_overlay_isolated(host):
    parts = containers(host)
    assert "failed" not in parts, f"container.sh failed: {parts.get('failed', [])[-5:]}"
    one, two = ("".join(parts.get(f"upper-{n}", [])) for n in "12")
    assert one and two, "files made in the containers are not in an upper directory under /tmp"
    assert one.rsplit("/", 1)[0] != two.rsplit("/", 1)[0], "both containers share one upper directory"
    assert not any("labkit-sees-probe-1" in line for line in parts["2"]), "the second container sees the first one's file"


def test_overlay_unmounted(host):
    """A warning, not a failure, as in labkit: overlays of earlier containers still mounted under /tmp."""
    leftovers = [mount.path for mount in host.mount_point.get_mountpoints()
                 if mount.filesystem == "overlay" and mount.path.startswith("/tmp/")]
    if leftovers:
        warnings.warn(f"{len(leftovers)} overlays of earlier containers are mounted: {leftovers[:5]}")


# --- proc ---------------------------------------------------------------------------------------

def test_proc_visible(host):
    parts = containers(host)
    assert "failed" not in parts, f"container.sh failed: {parts.get('failed', [])[-3:]}"
    assert any("labkit-sees-pid-1" in line for line in parts["2"])
    assert any(line.startswith("labkit-processes:") for line in parts["2"])


def test_proc_unmounted(host):
    leftovers = [mount.path for mount in host.mount_point.get_mountpoints()
                 if mount.filesystem == "proc" and re.match(r"^/tmp/.*/overlay/proc$", mount.path)]
    assert not leftovers, f"still mounted: {leftovers}"
