"""Bad input, as students and instructors will type it: each case ends in a short error that says what
is wrong and what to do, with the documented exit status, no traceback, and nothing changed on the
target. Targets here are real sshd servers on loopback, serving a student's directory."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tests import cli
from tests.sshd import free_port, keygen, start_sshd



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An sshd accepting `key`, a student's home to watch, a state dir, and a silent TCP port."""
    base = tmp_path_factory.mktemp("bad")
    key = keygen(base / "key")
    server = start_sshd(base / "sshd", client_key=key, user="root")
    home = base / "home"
    (home / "rootfs" / "bin").mkdir(parents=True)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    accepted = []

    def hold_connections():
        """Accept and never answer, until the fixture closes the socket."""
        try:
            while True:
                accepted.append(silent.accept())
        except OSError:
            pass

    threading.Thread(target=hold_connections, daemon=True).start()
    yield {"base": base, "key": key, "port": server.port, "home": home, "silent": silent.getsockname()[1],
           "host": f"root@127.0.0.1:{server.port}"}
    server.stop()
    silent.close()


def run(world, *args, env=None, config: str | None = None):
    environment = dict(os.environ, INVOKE_VM_STATE_DIR=str(world["base"] / "state"), INVOKE_TARGET_CONNECT_TIMEOUT="2",
                       COLUMNS="120", **(env or {}))
    command = cli.inv()
    if config:
        path = world["base"] / "config.yaml"
        path.write_text(config)
        command += ["-f", str(path)]
    return subprocess.run(command + list(args), capture_output=True, text=True, env=environment, timeout=120,
                          stdin=subprocess.DEVNULL)


def listing(path: Path) -> list:
    return sorted((str(p.relative_to(path)), p.stat().st_size if p.is_file() else -1) for p in path.rglob("*"))


def ssh_args(world, key=None):
    return ["--provider", "ssh", "--host", world["host"], "--key", str(key or world["key"]), "--workdir", str(world["home"])]


def world_readable_key(world):
    key = world["base"] / "open_key"
    key.write_bytes(world["key"].read_bytes())
    key.chmod(0o644)
    return key


CASES = {
    # id: (arguments (a function of world), expected exit status, words the error must contain, extra env, config)
    "unknown-only-step": (lambda w: ["lab.chroot", "--only", "nope"], 2, "Unknown step 'nope'", None, None),
    "unknown-from-step": (lambda w: ["lab.chroot", "--from", "nope"], 2, "Unknown step 'nope'", None, None),
    "from-after-only": (lambda w: ["lab.chroot", "--from", "proc", "--only", "rootfs"], 2, "comes before", None, None),
    "unknown-docker-step": (lambda w: ["lab.docker", "--only", "compose"], 2, "Unknown step 'compose'", None, None),
    "unknown-provider": (lambda w: ["check.chroot", "--provider", "vagrant"], 2, "Unknown provider 'vagrant'", None, None),
    "ssh-without-host": (lambda w: ["check.chroot", "--provider", "ssh"], 2, "needs a machine", None, None),
    "host-with-qemu": (lambda w: ["check.chroot", "--provider", "qemu", "--host", w["host"]], 2, "cannot be combined", None, None),
    "host-no-hostname": (lambda w: ["check.chroot", "--host", "root@", "--key", str(w["key"])], 2, "Cannot read --host", None, None),
    "host-bad-port": (lambda w: ["check.chroot", "--host", "root@127.0.0.1:99999", "--key", str(w["key"])], 2, "Cannot read --host", None, None),
    "host-two-ats": (lambda w: ["check.chroot", "--host", "a@b@c", "--key", str(w["key"])], 2, "Cannot read --host", None, None),
    "missing-key": (lambda w: ["check.chroot", "--host", w["host"], "--key", "/nonexistent/key"], 2, "does not exist", None, None),
    "world-readable-key": (lambda w: ["check.chroot", "--host", w["host"], "--key", str(world_readable_key(w))], 2, "chmod 600", None, None),
    "wrong-key": (lambda w: ["check.chroot", *ssh_args(w, keygen(w["base"] / f"wrong{os.getpid()}"))], 3, "answered and refused the login", None, None),
    "refused-port": (lambda w: ["check.chroot", "--host", f"root@127.0.0.1:{free_port()}", "--key", str(w["key"])], 3, "Cannot connect", None, None),
    "silent-port": (lambda w: ["check.chroot", "--host", f"root@127.0.0.1:{w['silent']}", "--key", str(w["key"])], 3, "", None, None),
    "busybox-not-a-file": (lambda w: ["lab.chroot", "--busybox", "/nonexistent/busybox"], 2, "no such file", None, None),
    "reset-unknown-lab": (lambda w: ["lab.reset", "kubernetes"], 2, "Unknown lab 'kubernetes'", None, None),
    "report-unknown-format": (lambda w: ["check.chroot", *ssh_args(w), "--report", str(w["base"] / "r.txt")], 2, ".json", None, None),
    "report-not-writable": (lambda w: ["check.chroot", *ssh_args(w), "--report", "/proc/labkit/r.json"], 2, "Cannot write the report", None, None),
    "report-format-unknown": (lambda w: ["check.chroot", *ssh_args(w), "--report", str(w["base"] / "r.json"), "--format", "yaml"], 2, "Unknown report format 'yaml'", None, None),
    "report-format-without-path": (lambda w: ["check.chroot", *ssh_args(w), "--format", "gradescope"], 2, "without --report", None, None),
    "report-format-for-a-class": (lambda w: ["check.chroot", "--inventory", str(inventory(w, "hosts: [{name: a, host: h}]")), "--report", str(w["base"] / "r.json"), "--format", "classroom"], 2, "one submission, not a class", None, None),
    "points-unknown-step": (lambda w: ["check.chroot", *ssh_args(w)], 2, "Unknown step 'overlays' in the setting chroot.points", None, "chroot:\n  points: {overlays: 3}\n"),
    "points-not-a-number": (lambda w: ["check.chroot", *ssh_args(w)], 2, "not a number of points", None, "chroot:\n  points: {overlay: three}\n"),
    "grade-without-submission": (lambda w: ["grade.chroot"], 2, "grade needs --submission DIR", None, None),
    "grade-submission-missing": (lambda w: ["grade.chroot", "--submission", str(w["base"] / "nope")], 2, "no such directory", None, None),
    "grade-unknown-vm": (lambda w: ["grade.docker", "--submission", str(w["base"]), "--vm", "con9"], 2, "Unknown VM 'con9' to grade on", None, None),
    "inventory-missing": (lambda w: ["check.chroot", "--inventory", "/nonexistent/class.yaml"], 2, "does not exist", None, None),
    "inventory-invalid-yaml": (lambda w: ["check.chroot", "--inventory", str(inventory(w, "hosts: [a, {b"))], 2, "not valid YAML", None, None),
    "inventory-duplicate-host": (lambda w: ["check.chroot", "--inventory", str(inventory(w, "hosts: [{name: a, host: h}, {name: a, host: g}]"))], 2, "repeats the name", None, None),
    "inventory-missing-host": (lambda w: ["check.chroot", "--inventory", str(inventory(w, "hosts: [{name: a}]"))], 2, "no 'host' field", None, None),
    "inventory-unknown-field": (lambda w: ["check.chroot", "--inventory", str(inventory(w, "hosts: [{name: a, host: h, pasword: x}]"))], 2, "unknown field", None, None),
    "vm-unknown-name": (lambda w: ["vm.up", "Bad_Name!"], 2, "", None, None),
    "vm-ssh-missing": (lambda w: ["vm.ssh", "con0"], 3, "not running", None, None),
    "qemu-missing": (lambda w: ["vm.up", "con0"], 3, "not found", {"PATH": "/nonexistent"}, None),
    "cache-not-writable": (lambda w: ["vm.up", "con0"], 3, "", {"INVOKE_VM_CACHE_DIR": "/proc/labkit-cache"}, None),
    "shebang-injection": (lambda w: ["render.container-sh", "--shebang", "/bin/sh; rm -rf ~"], 2, "interpreter", None, None),
    "nonce-not-a-number": (lambda w: ["render.container-sh"], 2, "not a whole number", None,
                           "chroot:\n  container_sh:\n    nonce_length: \"10$(id)\"\n"),
    "base-image-invalid": (lambda w: ["render.dockerfile"], 2, "not a Docker image name", {"INVOKE_DOCKER_IMAGES_BASE": "ubuntu 18.04"}, None),
    "java-home-newline": (lambda w: ["render.dockerfile"], 2, "spans several lines", None, "docker:\n  dockerfile:\n    java_home: \"/opt\\nRUN touch /tmp/x\"\n"),
    "extra-instruction-newline": (lambda w: ["render.dockerfile"], 2, "not one line", None, "docker:\n  dockerfile:\n    extra_instructions: [\"RUN a\\nRUN b\"]\n"),
}


def inventory(world, text: str) -> Path:
    path = world["base"] / f"inventory-{abs(hash(text))}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_error(world, case):
    arguments, status, words, env, config = CASES[case]
    before = listing(world["home"])
    result = run(world, *arguments(world), env=env, config=config)
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    error = result.stderr.strip()
    assert error.startswith("Error: ") and len(error.splitlines()) <= 2, error
    assert words in error
    assert listing(world["home"]) == before


def test_missing_workdir_is_a_failed_check_not_a_crash(world):
    result = run(world, "check.chroot", "--provider", "ssh", "--host", world["host"], "--key", str(world["key"]),
                 "--workdir", str(world["base"] / "nowhere"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "does not exist on the target" in result.stdout
