"""The docker lab end to end on the real QEMU VM docker0, with a real Docker engine inside it.

Docker Hub, get.docker.com and Ubuntu's mirrors cannot be reached from these machines, so the images
come through the toolkit's offline image supply (`docker.preload`): small images built by
tests/docker_images.py and named for what they are. Installing a JDK and Maven inside an emulated VM
would take far too long, so the Dockerfile used here installs nothing and adds a stand-in `mvn`
script (tests/docker_images.MVN_STANDIN); the workshop's own Dockerfile is checked by rendering.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from labs import docker
from labs.cli import DEFAULTS
from tests import cli
from tests.remote import ShellRemote, sh
from labs.reporting import SilentReporter
from labs.runner import Runner
from tests.docker_images import BASE, HELLO_TEXT, offline_config, write_archive
from tests.sshd import free_port

pytestmark = pytest.mark.vm

STEP_IDS = ["install", "group", "hello-world", "pull", "images", "run-shell", "isolation", "dockerfile", "build", "run-mvn"]

# Everything a docker check could leave behind: containers, images, the home and /tmp, the mounts.
SNAPSHOT = r"""
docker ps -a --format '{{.ID}} {{.Image}} {{.Status}}' | sort
docker images -a --format '{{.ID}} {{.Repository}}:{{.Tag}}' | sort
find /home/vagrant /tmp -xdev -printf '%p %y %s\n' | sort
cut -d' ' -f1-4 /proc/mounts | sort
"""


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """A configuration file supplying every image of the lab from one `docker save` archive."""
    base = tmp_path_factory.mktemp("offline")
    archive = write_archive(base / "labkit-test-images.tar")
    config = base / "offline.yaml"
    config.write_text(yaml.safe_dump({"docker": offline_config(archive)}))
    return config


@pytest.fixture(scope="module")
def env(qemu_settings):
    return dict(os.environ, INVOKE_VM_STATE_DIR=str(qemu_settings["state_dir"]),
                INVOKE_VM_CACHE_DIR=str(qemu_settings["cache_dir"]), COLUMNS="100")


def labkit(env: dict, offline: Path, *args: str) -> subprocess.CompletedProcess:
    return cli.labkit(env, "-f", str(offline), *args, timeout=1800)


VM = "docker0"


def merged(base: dict, override: dict) -> dict:
    """The defaults with the configuration file's values on top, as invoke merges them."""
    result = dict(base)
    for key, value in override.items():
        result[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return result


def settings(offline: Path) -> dict:
    return merged(DEFAULTS["docker"], yaml.safe_load(offline.read_text())["docker"])


@pytest.fixture(scope="module")
def solved(docker0, env, offline, tmp_path_factory):
    report = tmp_path_factory.mktemp("docker") / "r.json"
    result = labkit(env, offline, "lab.docker", "--report", str(report))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    return json.loads(report.read_text()), result.stdout


def test_lab_passes_every_step(solved):
    report, output = solved
    assert [(s["id"], s["status"]) for s in report["steps"]] == [(i, "pass") for i in STEP_IDS]
    assert report["summary"]["failed"] == 0
    # Docker is preinstalled in the image: the install step is a verified no-op.
    assert report["steps"][0]["already_done"]
    assert HELLO_TEXT in output
    assert "Successfully tagged java11:latest" in output
    assert "No goals have been specified" in output


def test_group_applies_in_a_new_session(solved, remote):
    assert "docker" in sh(remote, "id -nG vagrant").split()
    assert remote.run("docker ps -q", root=False).ok


def test_rerun_reports_every_step_already_done(solved, env, offline, tmp_path):
    result = labkit(env, offline, "lab.docker", "--report", str(tmp_path / "again.json"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    report = json.loads((tmp_path / "again.json").read_text())
    assert [(s["id"], s["already_done"]) for s in report["steps"]] == [(i, True) for i in STEP_IDS]


def test_check_passes_and_leaves_no_trace(solved, docker0, env, offline, remote, tmp_path):
    target = docker0[1]
    before = sh(remote, SNAPSHOT)
    result = labkit(env, offline, "check.docker", "--provider", "ssh", "--host", f"vagrant@127.0.0.1:{target.port}",
                    "--key", str(target.key_path), "--report", str(tmp_path / "check.json"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert {c["status"] for c in json.loads((tmp_path / "check.json").read_text())["checks"]} == {"pass"}
    assert sh(remote, SNAPSHOT) == before


# The docker lab's checks under the other shells students have (docker0 runs them with dash as sh):
# BusyBox ash with its applets preferred, and bash.
OTHER_SHELLS = {"busybox-ash": "/bin/busybox ash", "bash": "/bin/bash"}


@pytest.mark.parametrize("shell", list(OTHER_SHELLS))
def test_checks_pass_under_busybox_ash_and_bash(solved, docker0, offline, shell):
    connection = ShellRemote(docker0[1], OTHER_SHELLS[shell])
    try:
        assert sh(connection, "readlink /proc/$$/exe; :").strip() == {"busybox-ash": "/usr/bin/busybox",
                                                                     "bash": "/usr/bin/bash"}[shell]
        report = Runner(docker.LAB, connection, SilentReporter(), settings(offline)).check()
    finally:
        connection.close()
    assert {(c.id, c.status) for c in report.checks if c.status != "pass"} == set(), \
        [(c.id, c.detail) for c in report.checks]


# States broken by hand (the daemon stopped, the user out of the group, images missing, ...):
# tests/integration/test_catalogue.py.


def test_isolation_refuses_a_machine_labkit_did_not_make(solved, env, offline, remote):
    sh(remote, "mv /etc/labkit-vm /etc/labkit-vm.keep")
    started = sh(remote, "date +%s").strip()
    try:
        result = labkit(env, offline, "lab.docker", "--only", "isolation", "--force")
        created = sh(remote, f"docker events --since {started} --until $(date +%s) --filter event=create | wc -l")
    finally:
        sh(remote, "mv /etc/labkit-vm.keep /etc/labkit-vm")
    assert result.returncode == 1
    assert "not a lab VM made by labkit" in result.stdout and "--allow-destructive" in result.stdout
    assert created.strip() == "0"


def test_isolation_on_a_host_reached_over_ssh_needs_the_explicit_flag(solved, docker0, env, offline, remote):
    """A machine reached with --provider ssh was not provisioned by labkit: without the marker the
    destructive step refuses it, and --allow-destructive lets it run for that one run."""
    _, target = docker0
    over_ssh = ["--provider", "ssh", "--host", f"vagrant@127.0.0.1:{target.port}", "--key", str(target.key_path)]
    sh(remote, "mv /etc/labkit-vm /etc/labkit-vm.keep")
    started = sh(remote, "date +%s").strip()
    try:
        refused = labkit(env, offline, "lab.docker", "--only", "isolation", "--force", *over_ssh)
        created = sh(remote, f"docker events --since {started} --until $(date +%s) --filter event=create | wc -l")
        allowed = labkit(env, offline, "lab.docker", "--only", "isolation", "--force", "--allow-destructive", *over_ssh)
        again = labkit(env, offline, "lab.docker", "--only", "isolation", "--force", *over_ssh)
    finally:
        sh(remote, "mv /etc/labkit-vm.keep /etc/labkit-vm")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"vagrant@127.0.0.1:{target.port} is not a lab VM made by labkit" in refused.stdout
    assert created.strip() == "0"
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "rm -rf --no-preserve-root /" in allowed.stdout and "check isolation.fresh: pass" in allowed.stdout
    # The flag was for that run only.
    assert again.returncode == 1 and "is not a lab VM made by labkit" in again.stdout


def test_preload_loads_images_on_a_machine_without_them(solved, env, offline, remote):
    sh(remote, f"docker rmi {BASE}")
    result = labkit(env, offline, "lab.docker", "--only", "pull")
    assert result.returncode == 0, result.stdout[-2000:]
    assert "offline image supply" in result.stdout
    assert sh(remote, f"docker image inspect --format ok {BASE}").strip() == "ok"
    assert sh(remote, "ls /tmp | grep labkit-upload || true") == ""


def wait_for_port(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the registry did not listen on port {port}")


@pytest.fixture
def registry(tmp_path):
    """A real registry (Debian's docker-registry) on this host; the VM reaches it at 10.0.2.2:PORT."""
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(yaml.safe_dump({
        "version": 0.1, "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"}, "log": {"level": "info"}}))
    log = (tmp_path / "registry.log").open("w")
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port)
    yield port, tmp_path / "registry.log"
    process.terminate()
    process.wait(10)


def test_registry_mirror_supplies_images(solved, env, offline, remote, registry, tmp_path):
    port, log = registry
    mirror = f"10.0.2.2:{port}"
    config = yaml.safe_load(offline.read_text())
    config["docker"].update(preload=[], registry_mirror=f"http://{mirror}", insecure_registries=[mirror])
    mirrored = tmp_path / "mirror.yaml"
    mirrored.write_text(yaml.safe_dump(config))
    result = labkit(env, mirrored, "lab.docker", "--only", "install", "--force")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert '"registry-mirrors"' in sh(remote, "cat /etc/docker/daemon.json")
    # Fill the classroom registry, then take the image off the VM: only the mirror can bring it back.
    sh(remote, f"docker tag {BASE} {mirror}/{BASE} && docker push {mirror}/{BASE} && docker rmi {mirror}/{BASE} {BASE}")
    result = labkit(env, mirrored, "lab.docker", "--only", "pull")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "docker pull" in result.stdout
    assert sh(remote, f"docker image inspect --format ok {BASE}").strip() == "ok"
    assert "/v2/labkit-test/base/manifests/offline" in log.read_text()


def test_reset_removes_the_lab_so_the_check_fails_again(solved, env, offline, remote):
    """Runs last in this module. Docker and the group stay (they are the machine's): the check fails
    at the steps that the reset undid."""
    result = labkit(env, offline, "lab.reset", "docker")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sh(remote, "docker images -q java11; ls /home/vagrant") == ""
    report = Runner(docker.LAB, remote, SilentReporter(), settings(offline)).check()
    # Steps that need none of the undone ones are still judged: docker and the group pass.
    assert [c.step for c in report.checks if c.status == "fail"] == ["hello-world", "pull", "dockerfile", "build"]
    assert {c.step for c in report.checks if c.status == "skip"} == {"images", "run-shell", "isolation", "run-mvn"}
