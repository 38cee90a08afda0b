"""Students' work directories for the chroot lab, in the states a teacher meets in a class.

Used by the class-scale test and by scripts/bench_class: each state is laid out for real (a rootfs
with the host's static busybox, a rendered container.sh, ...) and comes with the step statuses
`check.chroot` must report for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from labs.chroot import container_sh_values
from labs.cli import DEFAULTS
from labs.templates import render
from tests.sshd import Sshd, start_sshd

HOST_BUSYBOX = Path("/bin/busybox")
STEPS = ("rootfs", "busybox", "symlinks", "chroot-shell", "container-script", "overlay", "proc")

# state: the status of each step, in STEPS order (p pass, f fail, s skip). container-script needs no
# earlier step, so it is judged (and fails without a container.sh) whatever the rootfs is like.
EXPECTED = {
    "solved": "ppppppp",
    "empty": "fsssfss",
    "rootfs-only": "pfssfss",
    "busybox-not-executable": "pfssfss",
    "no-symlinks": "ppfsfss",
    "hello-left": "pppffss",
    "no-script": "ppppfss",
    "script-not-executable": "ppppfss",
    "wrong-interpreter": "ppppfss",
    "no-overlay": "pppppfs",
    "proc-blocked": "ppppppf",
}
STATUS = {"p": "pass", "f": "fail", "s": "skip"}

# The workshop's container.sh without the overlay: containers write into the rootfs itself.
NO_OVERLAY = '#!/bin/sh\nPS1="C-$ " chroot "$1" /bin/busybox sh\n'


def expected_steps(state: str) -> dict[str, str]:
    return {step: STATUS[letter] for step, letter in zip(STEPS, EXPECTED[state])}


def prepare(home: Path, state: str, busybox: Path = HOST_BUSYBOX) -> None:
    """Lay out a student's work directory in `state`; `busybox` is hard-linked where it can be."""
    home.mkdir(parents=True)
    if state == "empty":
        return
    rootfs = home / "rootfs"
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin"):
        (rootfs / directory).mkdir(parents=True)
    if state == "rootfs-only":
        return
    if state == "busybox-not-executable":
        shutil.copy(busybox, rootfs / "bin" / "busybox")
        (rootfs / "bin" / "busybox").chmod(0o644)
        return
    os.link(busybox, rootfs / "bin" / "busybox")
    if state == "no-symlinks":
        return
    subprocess.run(["chroot", str(rootfs), "/bin/busybox", "--install", "-s"], check=True)
    if state == "hello-left":
        (rootfs / "HELLO.txt").touch()
        return
    if state == "no-script":
        return
    script = home / "container.sh"
    settings = {"container_sh": DEFAULTS["chroot"]["container_sh"]}
    text = render("container.sh.j2", container_sh_values(settings, "/bin/sh"), "chroot.container_sh")
    if state == "wrong-interpreter":
        text = text.replace("#!/bin/sh", "#!/bin/no-such-shell", 1)
    elif state == "no-overlay":
        text = NO_OVERLAY
    elif state == "proc-blocked":
        # Containers without CAP_SYS_ADMIN: the overlay works, mounting proc inside does not.
        text = text.replace('" chroot "$TMP_BASE', '" setpriv --bounding-set=-sys_admin chroot "$TMP_BASE')
        assert "setpriv" in text
    script.write_text(text)
    script.chmod(0o644 if state == "script-not-executable" else 0o755)


def serve_students(base: Path, client_key: Path, states: dict[str, str], lay_out=None) -> tuple[list[Sshd], list[str]]:
    """Each student of `states` ({name: state}) on an sshd of their own that accepts `client_key`,
    their work directory `base/NAME/home` laid out by `lay_out(home, state)` (default: `prepare`);
    with the inventory's `hosts:` lines for them."""
    servers, hosts = [], []
    for name, state in states.items():
        server = start_sshd(base / name / "sshd", client_key=client_key, user="root")
        servers.append(server)
        (lay_out or prepare)(base / name / "home", state)
        hosts.append(f"  - {{name: {name}, host: 127.0.0.1, port: {server.port}, workdir: '{base / name / 'home'}'}}")
    return servers, hosts


def write_inventory(path: Path, client_key: Path, hosts: list[str]) -> Path:
    """An inventory at `path` of the `hosts:` lines, logging in as root with `client_key`."""
    path.write_text(f"defaults: {{user: root, key: '{client_key}'}}\nhosts:\n" + "\n".join(hosts) + "\n")
    return path


def staged_busybox(directory: Path) -> Path:
    """A copy of the host's busybox on the filesystem of `directory`, for students to hard-link."""
    copy = directory / "busybox"
    shutil.copy(HOST_BUSYBOX, copy)
    copy.chmod(0o755)
    return copy
