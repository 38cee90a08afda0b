"""`inv lab.test LAB`, the lab author's proof, end to end: the chroot and namespaces labs pass it on
a fresh VM each (a new overlay disk on the cached image, destroyed afterwards), and a lab with a
vacuous check and a check that changes the target fails it, naming both.

The docker lab is not run here: lab.test needs a fresh docker0, whose images (hello-world,
ubuntu:18.04 and the java11 build) must come from a local registry since Docker Hub is out of reach,
and one docker lab run takes several minutes under TCG (tests/integration/test_docker_lab.py runs
the lab itself on the shared docker0). `inv lab.test docker` works where Docker Hub or a mirror is
reachable (docker.registry_mirror).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests import cli

pytestmark = pytest.mark.vm

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "labs"


@pytest.fixture(scope="module")
def env(qemu_settings, tmp_path_factory):
    """The CLI's environment: the tests' image cache, the target's own busybox for the chroot lab
    (busybox.net is out of reach), labs.paths naming the fixture labs, and boot and login waits that
    allow for a fresh VM on a machine busy with other TCG VMs."""
    config = tmp_path_factory.mktemp("lab-test") / "labs.yaml"
    config.write_text(yaml.safe_dump({"labs": {"paths": [str(FIXTURES)]}}))
    return dict(os.environ, INVOKE_VM_STATE_DIR=str(qemu_settings["state_dir"]),
                INVOKE_VM_CACHE_DIR=str(qemu_settings["cache_dir"]), INVOKE_CHROOT_BUSYBOX_SOURCE="target",
                INVOKE_RUNTIME_CONFIG=str(config), INVOKE_TARGET_CONNECT_TIMEOUT="60",
                INVOKE_VM_BOOT_TIMEOUT="600", COLUMNS="120")


def verdicts(report: Path) -> dict[str, str]:
    return {check["id"]: check["status"] for check in json.loads(report.read_text())["checks"]}


@pytest.mark.parametrize("lab", ["chroot", "namespaces"])
def test_lab_test_passes_on_a_fresh_vm(env, tmp_path, lab):
    report = tmp_path / f"{lab}.json"
    result = cli.labkit(env, "lab.test", lab, "--provider", "qemu", "--report", str(report), timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    seen = verdicts(report)
    assert set(seen.values()) == {"pass"}
    assert {"lab.rerun", "check.unchanged", "reset.first-step"} <= set(seen)
    assert f"{'rootfs.dirs' if lab == 'chroot' else 'rootfs.busybox'}.before" in seen
    assert "Destroyed VM con0" in result.stdout


def test_lab_test_names_a_vacuous_check_and_a_check_that_changes_the_target(env, con0, tmp_path):
    _, target = con0
    report = tmp_path / "vacuous.json"
    result = cli.labkit(env, "lab.test", "vacuous", "--host", f"{target.user}@{target.host}:{target.port}",
                        "--key", str(target.key_path), "--report", str(report), timeout=600)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    assert "vacuous: tmp.exists passes before step mark is solved" in result.stdout
    assert "the self-check changed the target" in result.stdout and "/tmp/vacuous-was-here" in result.stdout
    seen = verdicts(report)
    assert seen["tmp.exists.before"] == "fail" and seen["check.unchanged"] == "fail"
    assert seen["mark.file.before"] == "pass" and seen["mark.file.after"] == "pass" and seen["lab.rerun"] == "pass"
