"""The chroot lab's scripts under the three shells students' machines have, on the real con0.

con0 is Alpine-like: root logs in to BusyBox ash, whose applets come before anything on PATH (there
`command -v busybox` answers a bare `busybox`). Debian's dash and GNU tools are still installed
behind the applets, and bash is not: the bash leg runs the host's `bash-static` (Debian package)
uploaded to the VM. Each leg runs every script of the lab (actions, checks, the batch script, the
clean-up, the reset, the SSH stop script) as labkit sends them, with one shell in place of `sh`:

- busybox-ash: `/bin/ash`, applets preferred, as Alpine's root runs them;
- dash: `/bin/dash` with only Debian's GNU tools on PATH, as on Debian and Ubuntu;
- bash: bash with the same GNU PATH, as an Ubuntu login shell.

The busybox step uses `--busybox auto` with a URL nothing listens on, so every leg also goes
through the failed download, the fallback and the search for the target's own busybox.
"""

from __future__ import annotations

import copy
import dataclasses
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

from labs import chroot
from labs.cli import DEFAULTS
from labs.providers.ssh import stop_script
from labs.reporting import SilentReporter
from labs.runner import Runner
from tests.remote import ShellRemote, sh

pytestmark = pytest.mark.vm

VM = "con0"
HOST_BASH = "/bin/bash-static"
VM_BASH = "/usr/local/lib/labkit-test-bash"
GNU_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# shell name -> (how labkit's `sh -c` is replaced, the program /proc/$$/exe must be)
SHELLS = {
    "busybox-ash": ("/bin/ash", "/usr/bin/busybox"),
    "dash": (f"PATH={GNU_PATH} /bin/dash", "/usr/bin/dash"),
    "bash": (f"PATH={GNU_PATH} {VM_BASH}", VM_BASH),
}


@pytest.fixture(scope="module")
def vm_bash(con0, remote):
    """bash on con0 for the bash leg, removed again at the end (con0 has none of its own)."""
    assert "no bash" in sh(remote, "command -v bash || echo no bash")
    remote.put(Path(HOST_BASH).read_bytes(), VM_BASH, 0o755)
    yield VM_BASH
    sh(remote, f"rm -f {VM_BASH}")


@pytest.fixture(params=list(SHELLS))
def shell_remote(request, con0, remote, vm_bash):
    """A connection whose scripts run under one shell, working in its own fresh work directory."""
    name = request.param
    _, target = con0
    workdir = f"/root/shell-{name}"
    sh(remote, f"rm -rf {workdir} && mkdir -p {workdir}")
    connection = ShellRemote(dataclasses.replace(target, workdir=workdir), SHELLS[name][0])
    yield name, connection
    connection.close()
    sh(remote, f"rm -rf {workdir}")


def settings(tmp_path: Path) -> dict:
    values = copy.deepcopy(DEFAULTS["chroot"])
    values["busybox"].update(source="auto", url="http://10.0.2.2:1/busybox")
    values["state_dir"] = str(tmp_path)
    return values


def test_the_login_shell_is_busybox_ash_with_applets_first(remote):
    """The premise: what `ssh root@con0` runs, and what it finds first."""
    assert sh(remote, "readlink /proc/$$/exe; command -v busybox; command -v mount").split() == [
        "/usr/bin/busybox", "busybox", "mount"]
    assert sh(remote, "grep '^root:' /etc/passwd").strip().endswith(":/bin/ash")
    assert sh(remote, f"PATH={shlex.quote('/usr/local/sbin:/usr/local/bin:' + GNU_PATH)} /bin/dash -c "
                      "'for c in mkdir wget chmod chroot mount tr head ls rm touch umount unshare sh; do "
                      "readlink \"$(command -v $c)\"; done' | sort -u").split() == ["/bin/busybox"]


def test_an_interactive_ssh_login_lands_in_busybox_ash(con0):
    """`inv vm.ssh con0` (ssh with a terminal): a login shell, BusyBox ash, reading Debian's profile."""
    provider, _ = con0
    login = subprocess.run(provider.ssh_command("con0") + ["-tt", "-o", "BatchMode=yes"], text=True,
                           input='echo "shell=$0 exe=$(readlink /proc/$$/exe) path=$PATH"; exit\n',
                           capture_output=True, timeout=120)
    assert "shell=-ash exe=/usr/bin/busybox path=/usr/local/sbin:/usr/local/bin:" in login.stdout, login.stdout + login.stderr


def test_the_whole_lab_solves_checks_stops_and_resets_under_each_shell(shell_remote, tmp_path):
    name, connection = shell_remote
    # "; :" keeps bash from exec-ing readlink in its own process, which $$ would then name.
    assert sh(connection, "readlink /proc/$$/exe; :").strip() == SHELLS[name][1]
    runner = Runner(chroot.LAB, connection, SilentReporter(), settings(tmp_path))

    solved = runner.solve()
    failed = [(c.id, c.message, c.hint, c.detail) for c in solved.checks if c.status != "pass"]
    assert failed == [] and solved.ok, name
    notes = next(step.notes for step in solved.steps if step.id == "busybox")
    assert len(notes) == 1 and "could not download http://10.0.2.2:1/busybox" in notes[0], notes
    assert "using the target's own static busybox /usr/bin/busybox" in notes[0], notes

    checked = runner.check()
    assert {c.status for c in checked.checks} == {"pass"}, [(c.id, c.detail) for c in checked.checks]
    runs = next(c for c in checked.checks if c.id == "busybox.runs")
    assert runs.detail.startswith("BusyBox v1.35.0 (Debian"), runs.detail

    # The stop script (Ctrl-C, a timeout) ends a run's processes under this shell too.
    token = uuid.uuid4().hex[:16]
    pid = sh(connection, f"env LABKIT_RUN={token} sleep 300 </dev/null >/dev/null 2>&1 & echo $!").strip()
    assert sh(connection, f"tr '\\000' '\\n' </proc/{pid}/environ | grep -x LABKIT_RUN={token}")
    sh(connection, stop_script(token))
    assert sh(connection, f"[ ! -e /proc/{pid} ] || grep '^State:' /proc/{pid}/status").strip() in ("", "State:\tZ (zombie)")

    lines: list[str] = []
    runner.reset(lines.append)
    assert any(line.startswith("removed ") and line.endswith("container.sh") for line in lines), lines
    after = runner.check()
    # Undone: the first step fails, and container.sh (which needs no earlier step) is judged missing.
    assert [c.id for c in after.checks if c.status == "fail"] == [
        "rootfs.dirs", "container-script.present", "container-script.executable", "container-script.interpreter"]
