"""The catalogue of student mistakes: each state made on a solved lab VM, then the self-check must fail
(or warn) at the right check and name the cause in its message, hint or evidence.

One solved baseline per VM (the session's con0 and docker0); each case breaks one thing, runs the
check in process, and restores the state at once, so the cases and other modules are unaffected.
States the VMs here cannot produce are listed in docs/catalogue.md as untested (a rootfs on a
vboxsf/9p/virtiofs shared folder). The tzdata prompt is a RUN that prints tzdata's question and then
waits: Ubuntu's tzdata cannot be installed offline, but the build, its timeout and the diagnosis are real.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace

import pytest
import yaml

from labs import chroot, docker
from labs.cli import DEFAULTS
from labs.providers.ssh import Remote
from labs.reporting import SilentReporter
from labs.runner import Runner
from tests import cli
from tests.docker_images import BASE, HELLO, offline_config, write_archive
from tests.remote import sh

pytestmark = pytest.mark.vm

R, S = "/root/rootfs", "/root/container.sh"
BB = f"{R}/bin/busybox"
KEEP_BB, RESTORE_BB = f"cp -p {BB} /root/bb.keep", f"mv -f /root/bb.keep {BB}"
KEEP_S, RESTORE_S = f"cp -p {S} /root/cs.keep", f"mv -f /root/cs.keep {S}"
UNLINK = f"find {R} -type l -exec rm -f {{}} +"  # every applet link (BusyBox find has no -delete)
RELINK = f"{UNLINK}; chroot {R} /bin/busybox --install -s"


@dataclass(frozen=True)
class Case:
    setup: str
    restore: str
    check: str          # the check that fails (or warns)
    words: tuple        # each must appear in its message, hint or evidence
    status: str = "fail"
    steps: tuple = ()   # the steps to check (default: the check's own)


CHROOT = {
    "rootfs-dir-missing": Case(f"mv {R}/usr/sbin /root/sbin.keep", f"mv /root/sbin.keep {R}/usr/sbin", "rootfs.dirs",
                               ("mkdir -p", "rootfs/usr/sbin")),
    "busybox-missing": Case(f"mv {BB} /root/bb.keep", RESTORE_BB, "busybox.present", ("missing", "wget")),
    "busybox-not-executable": Case(f"chmod -x {BB}", f"chmod 755 {BB}", "busybox.executable", ("chmod +x",)),
    "busybox-empty": Case(f"{KEEP_BB} && : > {BB}", RESTORE_BB, "busybox.runs", ("empty", "0 bytes", "download")),
    "busybox-html": Case(f"{KEEP_BB} && printf '<!DOCTYPE html>\\n<html><head><title>404 Not Found</title></head>\\n' > {BB}",
                         RESTORE_BB, "busybox.runs", ("web page", "HTML", "<!DOCTYPE html>")),
    "busybox-text": Case(f"{KEEP_BB} && printf 'busybox 1.31.0\\n' > {BB}", RESTORE_BB, "busybox.runs",
                         ("not a program", "ELF")),
    "busybox-dynamic": Case(f"{KEEP_BB} && cp /bin/ls {BB}", RESTORE_BB, "busybox.runs",
                            ("dynamically linked", "static", "ld-linux", "missing in the rootfs")),
    # The host's own busybox with its ELF machine field set to aarch64 (183 = octal 267).
    "busybox-other-cpu": Case(f"{KEEP_BB} && printf '\\267' | dd of={BB} bs=1 seek=18 count=1 conv=notrunc 2>/dev/null",
                              RESTORE_BB, "busybox.runs", ("another CPU", "aarch64", "x86_64")),
    "symlinks-missing": Case(UNLINK, RELINK, "symlinks.installed", ("--install -s", "bin/sh")),
    # busybox --install run outside the chroot links every applet to the host's path of the file.
    "symlinks-outside": Case(f"{UNLINK} && cd /root && rootfs/bin/busybox --install -s rootfs/bin",
                             RELINK, "symlinks.installed", ("outside the rootfs", "-> /root/rootfs/bin/busybox")),
    "symlinks-hard-links": Case(f"{UNLINK} && chroot {R} /bin/busybox --install",
                                f"find {R} -samefile {BB} ! -path {BB} -exec rm -f {{}} +; {RELINK}", "symlinks.installed",
                                ("hard links", "--install -s")),
    "hello-left": Case(f"touch {R}/HELLO.txt", f"rm {R}/HELLO.txt", "chroot-shell.clean", ("rm HELLO.txt",)),
    "script-missing": Case(f"mv {S} /root/cs.keep", RESTORE_S, "container-script.present", ("container.sh is missing",)),
    "script-not-executable": Case(f"chmod -x {S}", f"chmod 755 {S}", "container-script.executable", ("chmod +x",)),
    "script-crlf": Case(f"{KEEP_S} && sed -i 's/$/\\r/' {S}", RESTORE_S, "container-script.interpreter",
                        ("CR LF", "dos2unix", "lines end with CR LF")),
    "script-bom": Case(f"{KEEP_S} && {{ printf '\\357\\273\\277'; cat /root/cs.keep; }} > {S}", RESTORE_S,
                       "container-script.interpreter", ("byte order mark", "without BOM")),
    "script-no-shebang": Case(f"{KEEP_S} && sed -i 1d {S}", RESTORE_S, "container-script.interpreter",
                              ("#!", "first line: # container.sh")),
    # con0 is Alpine-like (BusyBox ash, no bash); #!/bin/ash on a machine without ash: test_ash_shebang_...
    "script-bash-missing": Case(f"{KEEP_S} && sed -i '1s|.*|#!/bin/bash|' {S}", RESTORE_S, "container-script.interpreter",
                                ("/bin/bash", "no bash", "#!/bin/ash")),
    "overlay-type-overlayfs": Case(f"{KEEP_S} && sed -i 's/-t overlay /-t overlayfs /' {S}", RESTORE_S,
                                   "overlay.isolated", ("called 'overlay'", "not overlayfs", "mount: ", "container.sh failed")),
    "overlay-no-workdir": Case(f"{KEEP_S} && sed -i 's/,workdir=[^\"]*//' {S}", RESTORE_S, "overlay.isolated",
                               ("without workdir=", "workdir=", "missing 'workdir'")),
    "overlay-upper-work-apart": Case(
        f"{KEEP_S} && mkdir -p /mnt/lkw && mount -t tmpfs lkw /mnt/lkw && "
        f"sed -i 's|workdir=$TMP_BASE/$nonce/workdir|workdir=/mnt/lkw/$nonce|; s|^mkdir -p |mkdir -p \"/mnt/lkw/$nonce\" |' {S}",
        f"{RESTORE_S}; umount /mnt/lkw && rmdir /mnt/lkw", "overlay.isolated",
        ("different file systems", "same mount")),
    "overlay-plain-chroot": Case(f"{KEEP_S} && printf '#!/bin/sh\\nchroot \"$1\" /bin/busybox sh\\n' > {S}", RESTORE_S,
                                 "overlay.isolated", ("overlay", "upper")),
    "overlay-left-mounted": Case("mkdir -p /tmp/lk1/upper /tmp/lk1/workdir /tmp/lk1/overlay && mount -t overlay "
                                 f"-o lowerdir={R},upperdir=/tmp/lk1/upper,workdir=/tmp/lk1/workdir none /tmp/lk1/overlay",
                                 "umount /tmp/lk1/overlay && rm -rf /tmp/lk1", "overlay.unmounted",
                                 ("still mounted", "/tmp/lk1/overlay", "umount"), status="pass"),
    "proc-left-in-container": Case("mkdir -p /tmp/abcdefghij/overlay/proc && mount -t proc none /tmp/abcdefghij/overlay/proc",
                                   "umount /tmp/abcdefghij/overlay/proc && rm -rf /tmp/abcdefghij", "proc.unmounted",
                                   ("umount", "/tmp/abcdefghij/overlay/proc")),
    "proc-in-rootfs": Case(f"mkdir {R}/proc && mount -t proc proc {R}/proc", f"umount {R}/proc && rmdir {R}/proc",
                           "proc.unmounted", ("inside the rootfs itself", "umount rootfs/proc")),
}


def settings_for(lab: str, **values) -> dict:
    settings = json.loads(json.dumps(DEFAULTS[lab]))
    settings.update(values)
    return settings


@pytest.fixture(scope="module")
def chroot_remote(con0, tmp_path_factory):
    """con0 with the chroot lab solved (the host's static busybox uploaded)."""
    remote = Remote(con0[1])
    settings = settings_for("chroot", state_dir=str(tmp_path_factory.mktemp("state")))
    settings["busybox"]["source"] = "/bin/busybox"
    runner = Runner(chroot.LAB, remote, SilentReporter(), settings)
    report = runner.solve()
    assert report.ok, [(c.id, c.message, c.detail) for c in report.checks if c.status != "pass"]
    yield remote, settings
    runner.reset(on_line=lambda line: None)  # the next modules start from an unsolved lab, as before
    remote.close()


def steps_of(lab, case: Case) -> list:
    """The steps a case checks: its own (the emulated VM is slow; the other steps are not in question)."""
    wanted = case.steps or (case.check.split(".")[0],)
    return [step for step in lab.steps if step.id in wanted]


def judged(report, case: Case):
    result = next(c for c in report.checks if c.id == case.check)
    text = "\n".join((result.message, result.hint, result.detail))
    return result, [word for word in case.words if word.lower() not in text.lower()]


@pytest.mark.parametrize("name", list(CHROOT))
def test_chroot_mistake_is_named(chroot_remote, name):
    remote, settings = chroot_remote
    case = CHROOT[name]
    sh(remote, case.setup)
    try:
        report = Runner(chroot.LAB, remote, SilentReporter(), settings).check(steps_of(chroot.LAB, case))
    finally:
        sh(remote, case.restore)
    result, missing = judged(report, case)
    assert result.status == case.status and not missing, (result, missing)
    if case.status == "pass":
        assert result.message, "a warning needs its message"


def test_with_busybox_broken_container_sh_is_still_judged_on_its_merits(chroot_remote):
    remote, settings = chroot_remote
    sh(remote, f"{KEEP_BB} && : > {BB} && {KEEP_S} && chmod -x {S}")
    try:
        report = Runner(chroot.LAB, remote, SilentReporter(), settings).check()
    finally:
        sh(remote, f"{RESTORE_BB}; {RESTORE_S}")
    status = {c.id: (c.status, c.message) for c in report.checks}
    assert status["busybox.runs"][0] == "fail"
    assert status["container-script.present"] == ("pass", "")
    assert status["container-script.executable"][0] == "fail"
    assert status["symlinks.installed"] == ("skip", "Waits for step busybox, which is not done.")
    assert status["overlay.isolated"] == ("skip", "Waits for step symlinks, which is not done.")


def test_the_overlay_error_of_container_sh_is_in_the_terminal_and_the_json_report(chroot_remote, con0, tmp_path):
    remote, _ = chroot_remote
    target = con0[1]
    sh(remote, f"{KEEP_S} && sed -i 's/-t overlay /-t overlayfs /' {S}")
    try:
        result = cli.labkit(dict(os.environ, INVOKE_VM_STATE_DIR=str(tmp_path / "state"), COLUMNS="200"),
                            "check.chroot", "--provider", "ssh", "--host", f"root@127.0.0.1:{target.port}",
                            "--key", str(target.key_path), "--report", str(tmp_path / "r.json"), timeout=300)
    finally:
        sh(remote, RESTORE_S)
    assert result.returncode == 1, result.stdout + result.stderr
    overlay = next(c for c in json.loads((tmp_path / "r.json").read_text())["checks"] if c["id"] == "overlay.isolated")
    # mount's own words: util-linux says "unknown filesystem type 'overlayfs'", BusyBox (con0) "No such device".
    assert any(line.startswith("mount: ") for line in overlay["detail"].splitlines()), overlay
    assert overlay["detail"].splitlines()[0] in result.stdout
    assert "mount -t overlay (not overlayfs)" in result.stdout



def test_ash_shebang_on_a_machine_without_ash_is_named(docker0, tmp_path):
    """The workshop's #!/bin/ash on Debian or Ubuntu (docker0: dash, no ash link): the chroot lab's
    container-script check names that cause, which Alpine-like con0 cannot show."""
    workdir = "/tmp/labkit-ash-case"
    remote = Remote(replace(docker0[1], workdir=workdir))
    try:
        sh(remote, f"rm -rf {workdir} && mkdir -p {workdir} && printf '#!/bin/ash\\necho hi\\n' > {workdir}/container.sh"
                   f" && chmod 755 {workdir}/container.sh && [ ! -e /bin/ash ]")
        settings = settings_for("chroot", state_dir=str(tmp_path))
        step = [step for step in chroot.LAB.steps if step.id == "container-script"]
        report = Runner(chroot.LAB, remote, SilentReporter(), settings).check(step)
    finally:
        sh(remote, f"rm -rf {workdir}")
        remote.close()
    result = next(c for c in report.checks if c.id == "container-script.interpreter")
    assert result.status == "fail" and "Alpine" in result.message and "#!/bin/sh" in result.hint, result

# --- the docker lab ---------------------------------------------------------------------------------

def retag(image: str) -> tuple[str, str]:
    """Take `image` away (kept under another name) and bring it back."""
    kept = "labkit-keep/" + image.replace("/", "-").replace(":", "-") + ":kept"
    return f"docker tag {image} {kept} && docker rmi {image}", f"docker tag {kept} {image} && docker rmi {kept}"


D = "/home/vagrant/Dockerfile"
KEEP_D, RESTORE_D = f"cp -p {D} /root/df.keep", f"mv -f /root/df.keep {D}"
START_DOCKERD = "i=0; until docker version >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 120 ] || exit 1; sleep 1; done"
OLD_SESSION = ("gpasswd -d vagrant docker >/dev/null && "
               "(setsid runuser -u vagrant -- sh -c 'sleep 600; :' </dev/null >/dev/null 2>&1 &) && "
               "until pgrep -u vagrant -x sleep >/dev/null; do sleep 0.2; done && usermod -aG docker vagrant")

DOCKER = {
    "docker-not-installed": Case("mv /usr/bin/docker /usr/bin/docker.keep", "mv /usr/bin/docker.keep /usr/bin/docker",
                                 "install.daemon", ("not installed", "get.docker.com"), steps=("install",)),
    "daemon-stopped": Case("mv /usr/sbin/dockerd /usr/sbin/dockerd.keep && pkill -x dockerd; "
                           "while docker version >/dev/null 2>&1; do sleep 1; done",
                           f"mv /usr/sbin/dockerd.keep /usr/sbin/dockerd; {START_DOCKERD}", "install.daemon",
                           ("not running", "systemctl start docker", "Cannot connect to the Docker daemon"),
                           steps=("install", "group")),
    "not-in-group": Case("gpasswd -d vagrant docker", "usermod -aG docker vagrant", "group.member",
                         ("usermod -aG docker", "not in the docker group"), steps=("group",)),
    "similar-group": Case("gpasswd -d vagrant docker && groupadd -f dockers && usermod -aG dockers vagrant",
                          "gpasswd -d vagrant dockers; groupdel dockers; usermod -aG docker vagrant", "group.member",
                          ("similar name", "dockers", "exactly docker"), steps=("group",)),
    "no-docker-group": Case("groupmod -n dockerx docker", "groupmod -n docker dockerx", "group.member",
                            ("no docker group", "groupadd docker"), steps=("group",)),
    "socket-opened-to-everyone": Case("chmod 666 /var/run/docker.sock", "chmod 660 /var/run/docker.sock", "group.member",
                                      ("open to every user", "chmod 660", "srw-rw-rw-"), status="pass", steps=("group",)),
    "socket-chmod-instead-of-group": Case("gpasswd -d vagrant docker && chmod 666 /var/run/docker.sock",
                                          "chmod 660 /var/run/docker.sock; usermod -aG docker vagrant", "group.member",
                                          ("chmod 666", "usermod -aG docker", "not in the docker group"), steps=("group",)),
    "group-added-no-new-login": Case(OLD_SESSION, "pkill -u vagrant -x sleep; true",
                                     "group.session", ("started before", "log out and back in", "(sh)"), steps=("group",)),
    "hello-image-missing": Case(*retag(HELLO), "hello-world.runs", ("docker pull hello-world", "No such image"),
                                steps=("hello-world",)),
    "base-image-missing": Case(*retag(BASE), "pull.present", ("docker pull", "No such image"), steps=("pull", "images")),
    "dockerfile-missing": Case(f"mv {D} /root/df.keep", RESTORE_D, "dockerfile.matches", ("no Dockerfile",),
                               steps=("dockerfile",)),
    "dockerfile-misnamed": Case(f"mv {D} /home/vagrant/Dockerfile.txt", f"mv /home/vagrant/Dockerfile.txt {D}",
                                "dockerfile.matches", ("found Dockerfile.txt", "named exactly Dockerfile"),
                                steps=("dockerfile",)),
    "dockerfile-crlf": Case(f"{KEEP_D} && sed -i 's/$/\\r/' {D}", RESTORE_D, "dockerfile.matches",
                            ("CR LF", "dos2unix"), status="pass", steps=("dockerfile",)),
    "dockerfile-apt-without-y": Case(f"{KEEP_D} && echo 'RUN apt-get install maven' >> {D}", RESTORE_D,
                                     "dockerfile.matches", ("-y", "[Y/n]", "RUN apt-get install maven"),
                                     steps=("dockerfile",)),
    "dockerfile-tzdata-prompt": Case(f"{KEEP_D} && echo 'RUN apt-get update && apt-get install -y tzdata' >> {D}",
                                     RESTORE_D, "dockerfile.matches", ("DEBIAN_FRONTEND", "time zone"),
                                     steps=("dockerfile",)),
    "dockerfile-differs": Case(f"{KEEP_D} && sed -i 's|^ENV JAVA_HOME .*|ENV JAVA_HOME /opt/java|' {D}", RESTORE_D,
                               "dockerfile.matches", ("ENV JAVA_HOME /opt/java", "the workshop has: ENV JAVA_HOME"),
                               steps=("dockerfile",)),
    "java11-missing": Case(*retag("java11"), "build.image", ("docker build -t java11",), steps=("build", "run-mvn")),
    "java11-without-mvn": Case(f"{retag('java11')[0]} && docker tag {BASE} java11",
                               f"docker rmi java11 && {retag('java11')[1]}", "run-mvn.answers",
                               ("no mvn command", "executable file not found"), steps=("build", "run-mvn")),
}


@pytest.fixture(scope="module")
def docker_settings(tmp_path_factory):
    archive = write_archive(tmp_path_factory.mktemp("images") / "labkit-test-images.tar")
    base = json.loads(json.dumps(DEFAULTS["docker"]))
    for key, value in offline_config(archive).items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return base


@pytest.fixture(scope="module")
def docker_remote(docker0, docker_settings):
    """docker0 with the docker lab solved; the connection is made after joining the group."""
    remote = Remote(docker0[1])
    runner = Runner(docker.LAB, remote, SilentReporter(), docker_settings)
    report = runner.solve()
    assert report.ok, [(c.id, c.message, c.detail) for c in report.checks if c.status != "pass"]
    remote.reconnect()
    yield remote
    runner.reset(on_line=lambda line: None)  # test_docker_lab's first run must build, as on a new VM
    remote.close()


@pytest.mark.parametrize("name", list(DOCKER))
def test_docker_mistake_is_named(docker_remote, docker_settings, name):
    case = DOCKER[name]
    sh(docker_remote, case.setup)
    try:
        report = Runner(docker.LAB, docker_remote, SilentReporter(), docker_settings).check(steps_of(docker.LAB, case))
    finally:
        sh(docker_remote, case.restore)
    result, missing = judged(report, case)
    assert result.status == case.status and not missing, (result, missing)
    waiting = [c for c in report.checks if c.step != result.step and c.status == "skip"]
    assert all(f"Waits for step {result.step}" in c.message for c in waiting)


def test_a_build_stopped_at_an_interactive_prompt_names_debian_frontend(docker_remote, docker_settings):
    """tzdata's question, as Ubuntu's tzdata prints it, then a wait for an answer (see the module's docstring)."""
    prompt = ("RUN echo 'Configuring tzdata'; echo 'Please select the geographic area in which you live.'; "
              "echo 'Geographic area: '; sleep 600")
    sh(docker_remote, f"{KEEP_D} && echo {json.dumps(prompt)} >> {D}")
    settings = dict(docker_settings, build_timeout=40)
    build = [step for step in docker.LAB.steps if step.id == "build"]
    try:
        report = Runner(docker.LAB, docker_remote, SilentReporter(), settings).solve(build, force=True)
    finally:
        sh(docker_remote, f"{RESTORE_D}; ids=$(docker ps -aq --filter ancestor={BASE}); [ -z \"$ids\" ] || docker rm -f $ids")
    failure = next(c for c in report.checks if c.id == "build.action")
    assert "waited for an answer" in failure.message and "DEBIAN_FRONTEND=noninteractive" in failure.hint
    assert "Geographic area" in failure.detail
    assert sh(docker_remote, "docker image inspect --format ok java11").strip() == "ok"
