"""The docker lab: "Introducing Docker containers", step by step as the workshop tells it.

Checks run as root in the student's workdir with $LOGIN_USER, $BASE_IMAGE, $HELLO_IMAGE, $TAG and
the expected outputs set. They start containers only with `--rm --pull never`, so they leave no
container and fetch no image. Classrooms without Docker Hub get their images from archives uploaded
by labkit (`docker.preload`) or from a registry mirror written into the daemon's configuration.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from pathlib import Path
from shlex import quote

from .errors import StepFailed, UsageError
from .model import Cause, Check, Handin, Lab, Option, Step
from .providers.ssh import CommandTimedOutError
from .providers.target import LAB_VM_MARKER
from .runner import StepContext
from .templates import render


# Restarts dockerd however this machine runs services: systemd, an inittab that respawns dockerd
# (labkit's VMs: stopping it is enough), or a SysV script; then waits until it answers.
RESTART_DOCKER = """if [ -d /run/systemd/system ]; then systemctl restart docker
elif grep -q '^[^#].*respawn.*dockerd' /etc/inittab 2>/dev/null; then
  old=$(pidof dockerd 2>/dev/null || busybox pidof dockerd)
  # shellcheck disable=SC2086 # $old may name several processes: split on purpose
  [ -z "$old" ] || kill $old
  i=0
  # shellcheck disable=SC2086
  while [ -n "$old" ] && kill -0 $old 2>/dev/null; do
    i=$((i + 1)); [ $i -le 60 ] || { echo "dockerd does not stop"; exit 1; }; sleep 1
  done
elif [ -x /etc/init.d/docker ]; then service docker restart
fi
i=0; until docker version >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -le 120 ] || { echo "dockerd did not come back within 2 minutes"; exit 1; }; sleep 1
done
"""


DEFAULTS = {
    "vm": "docker0",
    "workdir": "",
    "points": {},
    "hidden": [],
    "install_method": "script",
    "install_script_url": "https://get.docker.com/",
    "registry_mirror": "",
    "insecure_registries": [],
    "preload": [],
    "allow_destructive": False,
    "images": {"hello": "hello-world", "base": "ubuntu:18.04"},
    "tag": "java11",
    "build_timeout": 3600,
    "expect": {"hello": "Hello from Docker!", "mvn": "Apache Maven"},
    "dockerfile": {
        "apt_update": True,
        "packages": [["openjdk-11-jre-headless", "wget", "curl", "unzip"], ["git"], ["maven"]],
        "java_home": "/usr/lib/jvm/java-11-openjdk-amd64",
        "extra_instructions": [],
    },
}


def dockerfile_values(settings: dict) -> dict:
    values = dict(settings["dockerfile"])
    values["base_image"] = settings["images"]["base"]
    return values


def normalized_dockerfile(text: str) -> str:
    """The Dockerfile's instructions without comments, blank lines or spacing differences."""
    lines = []
    for line in text.splitlines():
        stripped = " ".join(line.split())
        if stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return "".join(line + "\n" for line in lines)


# The same normalization on the target, with sed: equal digests mean equal instructions.
NORMALIZE_DOCKERFILE = ("sed -e '/^[[:space:]]*#/d' -e 's/[[:space:]][[:space:]]*/ /g' -e 's/^ //' -e 's/ $//' "
                        "-e '/^$/d' \"$DOCKERFILE\" | sha256sum | cut -c1-64")


def variables(settings: dict, workdir: str) -> dict[str, str]:
    rendered = render("Dockerfile.j2", dockerfile_values(settings), "docker.dockerfile")
    return {
        "DOCKERFILE": str(Path(workdir) / "Dockerfile"),
        "DOCKERFILE_DIGEST": hashlib.sha256(normalized_dockerfile(rendered).encode()).hexdigest(),
        "DOCKERFILE_EXPECTED": normalized_dockerfile(rendered),
        "BASE_IMAGE": settings["images"]["base"],
        "HELLO_IMAGE": settings["images"]["hello"],
        "TAG": settings["tag"],
        "HELLO_EXPECT": settings["expect"]["hello"],
        "MVN_EXPECT": settings["expect"]["mvn"],
        "MIRROR": settings["registry_mirror"],
    }


# --- getting images, online or not ----------------------------------------------------------------

def _canonical(reference: str) -> str:
    """`ubuntu` -> `ubuntu:latest`, `docker.io/library/ubuntu:18.04` -> `ubuntu:18.04`."""
    name = re.sub(r"^(docker\.io/)?(library/)?", "", reference)
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def archive_tags(path: Path) -> set[str]:
    """The image names a `docker save` archive holds, read from its manifest."""
    try:
        with tarfile.open(path) as archive:
            manifest = json.load(archive.extractfile("manifest.json"))
    except (OSError, KeyError, tarfile.TarError, json.JSONDecodeError):
        raise UsageError(f"{path} is not an archive made by `docker save`.",
                         "List only `docker save -o FILE IMAGE...` archives in docker.preload.") from None
    return {_canonical(tag) for entry in manifest for tag in entry.get("RepoTags") or []}


def ensure_image(ctx: StepContext, reference: str) -> None:
    """Make `reference` present on the target: already there, from a preload archive, or pulled."""
    if ctx.read(f"docker image inspect {quote(reference)} >/dev/null 2>&1").ok:
        ctx.say(f"{reference} is already on the machine")
        return
    for path in (Path(item).expanduser() for item in ctx.settings["preload"]):
        if not path.is_file():
            raise StepFailed(f"The preload archive {path} does not exist.", "Fix docker.preload in the configuration.")
        if _canonical(reference) in archive_tags(path):
            ctx.reporter.command(ctx.step, f"scp {path} TARGET && docker load -i {path.name}    # offline image supply")
            upload = ctx.upload(path.read_bytes())
            try:
                ctx.sh(f"docker load -i {upload}", show="",
                       failure=(f"docker load of {path} failed.", "Check that the archive was made by `docker save`."))
            finally:
                ctx.read(f"rm -f {upload}")
            return
    ctx.sh(f"docker pull {quote(reference)}", root=False, timeout=1800,
           failure=(f"docker pull {reference} failed.",
                    "Without Docker Hub, supply images with docker.preload (archives) or docker.registry_mirror; see docs/docker-lab.md."))


# --- install ----------------------------------------------------------------------------------------

def _daemon_config(settings: dict) -> dict:
    config = {}
    if settings["registry_mirror"]:
        config["registry-mirrors"] = [settings["registry_mirror"]]
    if settings["insecure_registries"]:
        config["insecure-registries"] = list(settings["insecure_registries"])
    return config


def install_docker(ctx: StepContext) -> None:
    if ctx.read("docker version >/dev/null 2>&1").ok:
        ctx.say("Docker is already installed and its daemon answers: nothing to install.")
    elif ctx.settings["install_method"] == "package":
        ctx.sh("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io",
               show="sudo apt-get install -y docker.io", timeout=1800)
    elif ctx.settings["install_method"] == "script":
        url = ctx.settings["install_script_url"]
        ctx.sh(f"(curl -sSL {quote(url)} || busybox wget -qO- {quote(url)}) | sh", show=f"curl -sSL {url} | sh",
               timeout=1800, failure=(f"The Docker install script from {url} failed.",
                                      "Without internet, use docker.install_method: package, or an image with Docker."))
    else:
        raise StepFailed(f"Unknown docker.install_method '{ctx.settings['install_method']}'.", "Use script or package.")
    config = _daemon_config(ctx.settings)
    if config:
        ctx.sh("mkdir -p /etc/docker", show="")
        ctx.install_file((json.dumps(config, indent=2) + "\n").encode(), "/etc/docker/daemon.json", mode=0o644,
                         show=f"echo '{json.dumps(config)}' | sudo tee /etc/docker/daemon.json")
    ctx.sh(RESTART_DOCKER if config else "docker version >/dev/null 2>&1 || {\n" + RESTART_DOCKER + "}",
           show="sudo systemctl restart docker    # or however this machine restarts services" if config else "",
           timeout=300,
           failure=("The Docker daemon does not start.", "Look at its log on the VM (/var/log/dockerd.log or journalctl -u docker)."))
    ctx.sh("docker version", show="docker version")


INSTALL_CHECKS = (
    Check("install.daemon", r"""command -v docker >/dev/null || { echo "no docker command on this machine"; echo "labkit-cause not-installed"; exit 1; }
out=$(docker version --format 'server {{.Server.Version}}' 2>&1) && { echo "$out"; exit 0; }
printf '%s\n' "$out" | tail -n 3
case "$out" in *"Cannot connect to the Docker daemon"*|*"daemon running"*|*"docker.sock"*) echo "labkit-cause daemon-down";; esac
exit 1
""",
          "The Docker daemon does not answer.",
          "Install Docker (curl -sSL https://get.docker.com/ | sh) and make sure the daemon runs.",
          causes=(
              Cause("not-installed", "Docker is not installed: there is no docker command.",
                    "Install it: curl -sSL https://get.docker.com/ | sh (or sudo apt-get install docker.io)."),
              Cause("daemon-down", "Docker is installed, but its daemon (dockerd) is not running.",
                    "Start it: sudo systemctl start docker (or sudo service docker start); "
                    "if it stops again, read its log: journalctl -u docker."),
          )),
    Check("install.mirror",
          '[ -z "$MIRROR" ] || docker info --format \'{{json .RegistryConfig.Mirrors}}\' | grep -F "${MIRROR%/}" '
          '|| { echo "the daemon does not use the mirror $MIRROR"; exit 1; }',
          "The Docker daemon is not configured with the classroom's registry mirror.",
          "Add it to /etc/docker/daemon.json as registry-mirrors and restart Docker (or run inv lab.docker --only install --force)."),
)

# --- group ------------------------------------------------------------------------------------------


def join_docker_group(ctx: StepContext) -> None:
    user = ctx.remote.target.user
    if user == "root":
        ctx.say("You log in as root, which needs no group to use Docker.")
        return
    ctx.sh(f"usermod -aG docker {quote(user)}", show="sudo usermod -aG docker $(whoami)")
    ctx.say("The new group applies to new logins only: logging out and back in (a new SSH session).")
    ctx.remote.reconnect()
    ctx.sh("docker ps", root=False, failure=("docker ps does not work without sudo, even in a new session.",
                                             "Check that the docker group exists and owns /var/run/docker.sock."))


# The socket's permission bits as ls shows them (-rw-rw-rw- after chmod 666): the 9th says "others may write".
SOCKET_OPEN = """sock=/var/run/docker.sock
# shellcheck disable=SC2012  # the mode string of one known path: stat options differ between GNU and BusyBox builds
perm=$(ls -lL "$sock" 2>/dev/null | cut -c1-10)
case "$perm" in ????????w?) open=yes;; *) open=;; esac
"""

GROUP_MEMBER = SOCKET_OPEN + r"""[ "$LOGIN_USER" != root ] || { echo "root needs no group"; exit 0; }
groups=$(id -nG "$LOGIN_USER")
echo "$LOGIN_USER is in the groups: $groups"
if printf '%s\n' "$groups" | tr ' ' '\n' | grep -qx docker; then
  [ -z "$open" ] || { echo "$sock is $perm"; echo "labkit-cause socket-open"; }
  exit 0
fi
echo "$LOGIN_USER is not in the docker group"
grep -q '^docker:' /etc/group || { echo "there is no group named docker on this machine"; echo "labkit-cause no-group"; exit 1; }
similar=$(printf '%s\n' "$groups" | tr ' ' '\n' | grep -i docker | head -n 1)
[ -z "$similar" ] || { echo "in the group $similar, which is not docker"; echo "labkit-cause similar"; exit 1; }
[ -z "$open" ] || { echo "$sock is $perm: docker works only because the socket is open to every user"; echo "labkit-cause socket-instead"; }
exit 1
"""

# Shells and SSH sessions of the login user that lack the docker group, though the user is in it:
# started before `usermod -aG docker`, they keep their old groups until a new login.
GROUP_SESSION = r"""runuser -u "$LOGIN_USER" -- docker ps -q >/dev/null || { echo "docker ps fails for $LOGIN_USER"; exit 1; }
[ "$LOGIN_USER" != root ] || { echo "root needs no group"; exit 0; }
gid=$(grep '^docker:' /etc/group | cut -d: -f3); uid=$(id -u "$LOGIN_USER")
old=$(cat /proc/[0-9]*/status 2>/dev/null | awk -v uid="$uid" -v gid="$gid" '
  function flush() { if (name ~ /^(sh|ash|dash|bash|zsh|ksh|fish|sshd|tmux.*|screen)$/ && u == uid && index(" " groups " ", " " gid " ") == 0) print pid "(" name ")" }
  /^Name:/ { flush(); name = $2; pid = ""; u = ""; groups = "" }
  /^Pid:/ { pid = $2 }
  /^Uid:/ { u = $2 }
  /^Groups:/ { $1 = ""; groups = $0 }
  END { flush() }' | tr '\n' ' ')
[ -z "$old" ] || { echo "a new login can use docker, but these processes of $LOGIN_USER started before it joined the group: $old"; echo "labkit-cause old-session"; exit 1; }
echo "docker ps works for $LOGIN_USER in a new login"
"""

GROUP_CHECKS = (
    Check("group.member", GROUP_MEMBER,
          "Your user is not in the docker group.", "Add it: sudo usermod -aG docker $(whoami), then log out and back in.",
          causes=(
              Cause("no-group", "There is no docker group on this machine (Docker's packages make it).",
                    "Install Docker (it creates the group), or: sudo groupadd docker && sudo usermod -aG docker $(whoami)"),
              Cause("similar", "Your user is in a group with a similar name, not in the group docker.",
                    "Add it to the group named exactly docker: sudo usermod -aG docker $(whoami), then log out and back in."),
              Cause("socket-instead", "Your user is not in the docker group; docker only works because "
                                      "/var/run/docker.sock was opened to every user (chmod 666).",
                    "Undo that (sudo chmod 660 /var/run/docker.sock) and join the group: sudo usermod -aG docker $(whoami)."),
              Cause("socket-open", "/var/run/docker.sock is open to every user (chmod 666): anyone on this machine "
                                   "can use Docker, which means becoming root.",
                    "Close it again (sudo chmod 660 /var/run/docker.sock); the docker group is the way to use Docker without sudo."),
          )),
    Check("group.session", GROUP_SESSION,
          "docker ps does not work without sudo in a new login.",
          "Log out and back in after usermod, so the docker group applies.",
          causes=(Cause("old-session", "You joined the docker group, but your shells started before that do not have it yet.",
                        "Log out and back in (close every SSH session to the machine), or run newgrp docker in that shell."),)),
)

# --- hello-world, pull, images ----------------------------------------------------------------------


def hello_world(ctx: StepContext) -> None:
    image = ctx.settings["images"]["hello"]
    ensure_image(ctx, image)
    ctx.sh(f"docker run --rm {quote(image)}", root=False, show=f"docker run {image}")


HELLO_CHECK = Check(
    "hello-world.runs",
    'out=$(docker run --rm --pull never "$HELLO_IMAGE" 2>&1) || { echo "$out" | tail -n 3; '
    'case "$out" in *"No such image"*) echo "labkit-cause no-image";; esac; exit 1; }\n'
    'echo "$out" | grep -F "$HELLO_EXPECT" || { echo "no \'$HELLO_EXPECT\' in its output"; exit 1; }',
    "docker run hello-world does not work.",
    "Run it: docker run hello-world (it needs the image: docker pull hello-world).",
    causes=(Cause("no-image", "The hello-world image is not on this machine.",
                  "Pull it: docker pull hello-world (without Docker Hub: ask for the class's registry mirror)."),),
)


def pull_base(ctx: StepContext) -> None:
    ensure_image(ctx, ctx.settings["images"]["base"])


PULL_CHECK = Check(
    "pull.present", 'docker image inspect --format "{{.Id}}" "$BASE_IMAGE" || exit 1',
    "The base image is not on the machine.", "Pull it: docker pull ubuntu:18.04",
)

IMAGES_FORMAT = "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"


def list_images(ctx: StepContext) -> None:
    result = ctx.sh(f"docker images --format '{IMAGES_FORMAT}'", root=False, show="docker images")
    rows = [["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]]
    rows += [line.split("\t") for line in result.stdout.splitlines() if line.count("\t") == 4]
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    ctx.say("")
    for row in rows:
        ctx.say("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


IMAGES_CHECK = Check(
    "images.listed",
    'docker images --format "{{.Repository}}:{{.Tag}} {{.Size}}" | grep -F "$BASE_IMAGE " '
    '|| { echo "docker images does not list $BASE_IMAGE"; exit 1; }',
    "docker images does not list the base image with its size.", "Pull the image first, then run: docker images",
)

# --- run-shell, isolation ---------------------------------------------------------------------------


def run_shell(ctx: StepContext) -> None:
    image = ctx.settings["images"]["base"]
    ctx.sh(f"docker run --rm -i {quote(image)} sh", stdin="ls\necho \"I am $(hostname) in a container\"\nexit\n",
           root=False, show=f"docker run -it {image} sh    # then: ls; exit")


RUN_SHELL_CHECK = Check(
    "run-shell.works",
    'printf "echo labkit-in-container\\nexit\\n" | docker run --rm -i --pull never "$BASE_IMAGE" sh | grep -x labkit-in-container '
    '|| { echo "no shell answered in a container"; exit 1; }',
    "A shell does not run in a container of the base image.", "Try it: docker run -it ubuntu:18.04 sh",
)


def isolation(ctx: StepContext) -> None:
    """Wreck a throwaway container's filesystem, then show that a new container is untouched."""
    marked = ctx.read(f"[ -f {LAB_VM_MARKER} ]").ok
    if not marked and not ctx.settings["allow_destructive"]:
        raise StepFailed(
            f"{ctx.remote.target.name} is not a lab VM made by labkit (no {LAB_VM_MARKER}): the isolation step "
            "runs rm -rf --no-preserve-root / and only ever does so on a lab VM.",
            "Use a VM from inv vm.up, or pass --allow-destructive if this machine is a disposable lab machine.")
    image = ctx.settings["images"]["base"]
    ctx.sh(f"docker run --rm -i --network none {quote(image)} sh", root=False, check=False,
           stdin="rm -rf --no-preserve-root /\nls /\nexit\n",
           show=f"docker run -it {image} sh    # then: rm -rf --no-preserve-root /; ls; exit")
    ctx.say("Oh no, what have we done? Is everything okay? A new container from the same image:")
    ctx.sh(f"docker run --rm {quote(image)} ls /", root=False, show=f"docker run -it {image} sh    # then: ls",
           failure=("A new container from the image is broken.", "This should not happen: the image is read-only."))


ISOLATION_CHECK = Check(
    "isolation.fresh",
    'docker run --rm --pull never "$BASE_IMAGE" sh -c "ls /bin/sh >/dev/null && echo intact" '
    '|| { echo "a fresh container of $BASE_IMAGE is broken"; exit 1; }',
    "A fresh container of the base image does not start intact.",
    "Remove and pull the image again: docker rmi ubuntu:18.04 && docker pull ubuntu:18.04",
)

# --- dockerfile, build, run-mvn ---------------------------------------------------------------------


def write_dockerfile(ctx: StepContext) -> None:
    text = render("Dockerfile.j2", dockerfile_values(ctx.settings), "docker.dockerfile")
    ctx.reporter.command(ctx.step, "cat > Dockerfile    # rendered from templates/Dockerfile.j2")
    # The file belongs to the student, as if they had written it.
    ctx.install_file(text.encode(), '"$DOCKERFILE"', mode=0o644, show="", then='chown "$LOGIN_USER:" "$DOCKERFILE"')
    for line in text.splitlines():
        ctx.say(line)


# Why the Dockerfile differs: a misnamed file, apt-get without -y (the build cannot answer its
# question), tzdata without DEBIAN_FRONTEND (its interactive prompt hangs a build), or the first line
# that differs from the workshop's. CR LF line endings are a warning: the instructions still match.
DOCKERFILE_SCRIPT = r"""if [ ! -f "$DOCKERFILE" ]; then
  echo "no Dockerfile in $WORKDIR"
  for other in dockerfile DockerFile Dockerfile.txt Dockerfile.dockerfile; do
    [ -f "$WORKDIR/$other" ] && { echo "found $other instead"; echo "labkit-cause misnamed"; break; }
  done
  exit 1
fi
actual=$(""" + NORMALIZE_DOCKERFILE.replace(" | sha256sum | cut -c1-64", "") + r""")
if [ "$(printf '%s\n' "$actual" | sha256sum | cut -c1-64)" = "$DOCKERFILE_DIGEST" ]; then
  echo "the instructions match the workshop's"
  cr=$(printf '\r'); n=$(grep -c "$cr" "$DOCKERFILE")
  [ "$n" -eq 0 ] || { echo "$n lines end with CR LF"; echo "labkit-cause crlf"; }
  exit 0
fi
printf '%s\n' "$actual" | awk '
  BEGIN { n = split(ENVIRON["DOCKERFILE_EXPECTED"], want, "\n") }
  $0 != want[NR] && !shown { print "line " NR ": " $0; print "the workshop has: " (NR <= n ? want[NR] : "(nothing more)"); shown = 1 }
  END { if (!shown && NR < n) print "the workshop has more: " want[NR + 1] }'
code=$(printf '%s\n' "$actual" | grep 'apt-get')
if printf '%s\n' "$code" | grep -i 'tzdata' | grep -qv 'DEBIAN_FRONTEND=noninteractive' && ! grep -q 'DEBIAN_FRONTEND' "$DOCKERFILE"; then
  echo "labkit-cause tzdata"
elif printf '%s\n' "$code" | grep ' install' | grep -qv -e ' -y' -e '--yes' -e ' -[a-z]*y'; then
  echo "labkit-cause no-yes"
fi
exit 1
"""

DOCKERFILE_CHECK = Check(
    "dockerfile.matches", DOCKERFILE_SCRIPT,
    "The Dockerfile is missing or its instructions differ from the workshop's.",
    "Write it as the workshop shows (inv render.dockerfile prints it), in your home directory.",
    causes=(
        Cause("misnamed", "The Dockerfile has another name: docker build looks for a file named exactly Dockerfile.",
              "Rename it: mv <the file> Dockerfile (editors on Windows may add .txt)."),
        Cause("no-yes", "An apt-get install in the Dockerfile has no -y: it asks 'Do you want to continue? [Y/n]', "
                        "which a build cannot answer, so the build aborts.",
              "Write apt-get install -y ... as the workshop does."),
        Cause("tzdata", "The Dockerfile installs tzdata without DEBIAN_FRONTEND=noninteractive: tzdata asks for a "
                        "time zone and the build waits for an answer that never comes.",
              "Add ENV DEBIAN_FRONTEND=noninteractive before the apt-get lines (or prefix the RUN with it)."),
        Cause("crlf", "The Dockerfile has Windows line endings (CR LF); its instructions match, but a \\ continuation "
                      "or a script copied from it breaks on the stray CR.",
              "Convert it: dos2unix Dockerfile, or sed -i 's/\\r$//' Dockerfile."),
    ),
)

# Lines a build prints when a program in it waits for an answer on a terminal it does not have.
PROMPTS = re.compile(r"Geographic area|Time zone|Please select|Configuring tzdata|\[Y/n\]|\[y/N\]|\(yes/no\)", re.I)


def build(ctx: StepContext) -> None:
    tag = ctx.settings["tag"]
    timeout = ctx.settings["build_timeout"]
    try:
        ctx.sh(f"docker build -t {quote(tag)} .", root=False, timeout=timeout, show=f"docker build -t {tag} .",
               failure=(f"docker build of {tag} failed.", "Read the build output above; the failing instruction is the last one shown."))
    except CommandTimedOutError:
        if any(PROMPTS.search(line) for line in ctx.recent):
            raise StepFailed(f"docker build of {tag} waited for an answer to a question and was stopped after {timeout:g}s.",
                             "A package asks interactively (tzdata asks for a time zone): add "
                             "ENV DEBIAN_FRONTEND=noninteractive before the apt-get lines, and use apt-get install -y.") from None
        raise StepFailed(f"docker build of {tag} did not finish within {timeout:g}s (docker.build_timeout) and was stopped.",
                         "Read the last lines of its output; on a slow network raise docker.build_timeout.") from None


BUILD_CHECK = Check(
    "build.image", 'docker image inspect --format "{{.Id}}" "$TAG" || exit 1',
    "The java11 image has not been built.", "Build it next to the Dockerfile: docker build -t java11 .",
)


def run_mvn(ctx: StepContext) -> None:
    tag = ctx.settings["tag"]
    ctx.sh(f"docker run --rm {quote(tag)} mvn", root=False, check=False, show=f"docker run {tag} mvn")
    ctx.say("Maven answers (asking for goals): the image has Java and Maven.")


MVN_CHECK = Check(
    "run-mvn.answers",
    'out=$(docker run --rm --pull never "$TAG" mvn --version 2>&1)\n'
    'echo "$out" | grep -F "$MVN_EXPECT" || { echo "$out" | tail -n 3; case "$out" in *"not found"*|*"no such file"*) '
    'echo "labkit-cause no-mvn";; esac; exit 1; }',
    "mvn does not answer in the java11 image.", "Rebuild it from the workshop's Dockerfile: docker build -t java11 .",
    causes=(Cause("no-mvn", "The java11 image has no mvn command: it was built from another Dockerfile (or tagged from another image).",
                  "Rebuild it from the workshop's Dockerfile, which installs maven: docker build -t java11 ."),),
)

LAB = Lab(
    name="docker",
    title="Introducing Docker containers",
    variables=variables,
    defaults=DEFAULTS,
    options=(Option("allow-destructive", "allow_destructive", "Run the isolation step (rm -rf / inside a container) "
                    "even on a machine that labkit did not provision as a lab VM.", boolean=True),),
    cleanup="rm -f /tmp/labkit-upload-*\n",
    handins=(Handin("Dockerfile", '"$DOCKERFILE"', "dockerfile", 0o644),),
    # Docker itself and the group stay: they are the machine's, not the exercise's.
    reset="""rm -f /tmp/labkit-upload-*
for image in "$TAG" "$HELLO_IMAGE" "$BASE_IMAGE"; do
  ids=$(docker ps -aq --filter "ancestor=$image" 2>/dev/null)
  # shellcheck disable=SC2086  # one word per container id
  [ -z "$ids" ] || docker rm -f $ids
  ! docker image inspect "$image" >/dev/null 2>&1 || docker rmi -f "$image"
done
rm -f "$DOCKERFILE" && echo "removed $DOCKERFILE"
""",
    steps=(
        Step("install", "Install Docker", "The recommended way is Docker's own packages; in the interest of time, "
             "the workshop pipes get.docker.com into sh.", install_docker, INSTALL_CHECKS),
        Step("group", "Use Docker without sudo", "Add yourself to the docker group; it applies to new logins only, "
             "so log out and back in.", join_docker_group, GROUP_CHECKS, needs=("install",)),
        Step("hello-world", "Verify you can run docker", "`docker run hello-world` pulls a tiny image and runs it.",
             hello_world, (HELLO_CHECK,), needs=("install",)),
        Step("pull", "Pull an ubuntu image", "`docker pull ubuntu:18.04` fetches the image's layers.", pull_base, (PULL_CHECK,),
             needs=("install",)),
        Step("images", "Check the size of the images", "`docker images` lists the images on the machine with their sizes.",
             list_images, (IMAGES_CHECK,), demonstration=True, needs=("pull",)),
        Step("run-shell", "Create a simple container", "`-i` keeps stdin open and `-t` allocates a terminal: together "
             "they give a shell in a private snapshot of the image.", run_shell, (RUN_SHELL_CHECK,),
             interactive=True, demonstration=True, shell='docker run --rm -it "$BASE_IMAGE" sh', needs=("pull",)),
        Step("isolation", "Oh no, what have we done?", "Delete everything inside a container, then start a new one: "
             "the image itself is untouched.", isolation, (ISOLATION_CHECK,), destructive=True, demonstration=True,
             needs=("pull",)),
        Step("dockerfile", "Create a Dockerfile", "A Dockerfile lists the instructions that build an image.",
             write_dockerfile, (DOCKERFILE_CHECK,), points=2),
        Step("build", "Build the java11 image", "`docker build -t java11 .` runs each instruction in a container "
             "and commits the result as a layer.", build, (BUILD_CHECK,), needs=("install",), points=2),
        Step("run-mvn", "Run mvn in the image", "`docker run java11 mvn` runs Maven from the image.", run_mvn, (MVN_CHECK,),
             demonstration=True, needs=("build",), points=2),
    ),
)
