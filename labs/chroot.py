"""The chroot lab: "Creating a simple container with chroot", step by step as the workshop tells it.

Every check runs as root in the student's workdir with $WORKDIR, $ROOTFS and $SCRIPT set. Checks that
need to run containers do it inside a private mount namespace with its own /tmp, so that they leave
no mount, directory or file behind; the lab's demonstrations do the same.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

from .errors import StepFailed, UsageError
from .model import Check, Lab, Option, Step
from .runner import StepContext
from .templates import render

DEFAULTS = {
    "vm": "con0",
    "workdir": "",
    "rootfs": "rootfs",
    "script": "container.sh",
    "busybox": {
        "source": "url",
        "url": "https://www.busybox.net/downloads/binaries/1.31.0-defconfig-multiarch-musl/busybox-i686",
        "sha256": "",
    },
    "container_sh": {
        "shebang": "auto",
        "tmp_base": "/tmp",
        "prompt_suffix": "-# ",
        "nonce_length": 10,
    },
}


def _busybox_source(value: str) -> None:
    if value not in ("url", "target") and not Path(value).expanduser().is_file():
        raise UsageError(f"--busybox {value}: no such file.", "Give url, target, or the path of a static busybox binary.")


# busybox picks its applet by the name it is run as, so the staged copy must start with "busybox".
STAGED_BUSYBOX = "bin/busybox.labkit-new"

# Runs a script in a private mount namespace where /, the workdir and the rootfs are read-only and
# /tmp is a fresh tmpfs: containers work as usual, but nothing they (or a broken container.sh) do
# survives. A workdir under /tmp is carried over through a scratch tmpfs on /mnt. Every mount
# command costs a process, which is slow on an emulated VM, so only the needed ones run.
PRIVATE_NAMESPACE = """command -v unshare >/dev/null || { echo "unshare is not installed on the target"; exit 1; }
unshare -m sh -s <<'LABKIT_NAMESPACE'
lk_private() {
  mount --make-rprivate / || return 1
  case "$WORKDIR/" in
    /tmp/*) mount -t tmpfs labkit-scratch /mnt && mkdir /mnt/work && mount --bind "$WORKDIR" /mnt/work || return 1 ;;
    *) mount --bind "$WORKDIR" "$WORKDIR" || return 1 ;;
  esac
  mount -o remount,bind,ro / && mount -t tmpfs labkit-tmp /tmp || return 1
  case "$WORKDIR/" in /tmp/*) mkdir -p "$WORKDIR" && mount --bind /mnt/work "$WORKDIR" || return 1 ;; esac
  mount -o remount,bind,ro "$WORKDIR" || return 1
  case "$ROOTFS/" in
    "$WORKDIR"/*) ;;
    *) mount --bind "$ROOTFS" "$ROOTFS" && mount -o remount,bind,ro "$ROOTFS" || return 1 ;;
  esac
  cd "$WORKDIR"
}
lk_private || { echo "cannot make a private, read-only view of the machine"; exit 1; }
"""
END_NAMESPACE = "\nLABKIT_NAMESPACE\n"

# A digest of every path, type and file content under the rootfs: equal digests, identical trees.
ROOTFS_DIGEST = """rootfs_digest() {
  (cd "$ROOTFS" && find . -print | sort && find . -type f -exec sha256sum {} + | sort) | sha256sum | cut -c1-64
}
"""


def in_private_namespace(script: str) -> str:
    return PRIVATE_NAMESPACE + script + END_NAMESPACE


def variables(settings: dict, workdir: str) -> dict[str, str]:
    return {
        "ROOTFS": str(Path(workdir) / settings["rootfs"]),
        "SCRIPT": str(Path(workdir) / settings["script"]),
    }


# --- rootfs -------------------------------------------------------------------------------------

ROOTFS_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin")


def make_rootfs(ctx: StepContext) -> None:
    ctx.sh('mkdir -p "$ROOTFS/bin" "$ROOTFS/sbin" "$ROOTFS/usr/bin" "$ROOTFS/usr/sbin"',
           show="mkdir -p rootfs/bin rootfs/sbin rootfs/usr/bin rootfs/usr/sbin")


ROOTFS_CHECK = Check(
    "rootfs.dirs",
    'missing=""\nfor d in ' + " ".join(ROOTFS_DIRS) + '; do [ -d "$ROOTFS/$d" ] || missing="$missing rootfs/$d"; done\n'
    '[ -z "$missing" ] || { echo "missing:$missing"; exit 1; }\necho "rootfs has bin, sbin, usr/bin and usr/sbin"',
    "The rootfs directories are not all there.",
    "Create them: mkdir -p rootfs/bin rootfs/sbin rootfs/usr/bin rootfs/usr/sbin",
)

# --- busybox ------------------------------------------------------------------------------------


def _pins_path(settings: dict) -> Path:
    return Path(settings["state_dir"]) / "busybox-sha256.json"


def _expected_sha256(settings: dict, url: str) -> tuple[str, str]:
    """The sha256 the download must have, and where that expectation comes from."""
    configured = settings["busybox"]["sha256"].strip().lower()
    if configured:
        return configured, "chroot.busybox.sha256"
    pins = _pins_path(settings)
    recorded = json.loads(pins.read_text()).get(url, "") if pins.exists() else ""
    return recorded, str(pins)


def _record_sha256(settings: dict, url: str, digest: str) -> Path:
    pins = _pins_path(settings)
    recorded = json.loads(pins.read_text()) if pins.exists() else {}
    recorded[url] = digest
    pins.parent.mkdir(parents=True, exist_ok=True)
    pins.write_text(json.dumps(recorded, indent=2) + "\n")
    return pins


def _stage_from_url(ctx: StepContext, staged: str) -> None:
    url = ctx.settings["busybox"]["url"]
    fetch = (f'if command -v wget >/dev/null; then wget -q -O {staged} {shlex.quote(url)}\n'
             f'elif command -v curl >/dev/null; then curl -fsSL -o {staged} {shlex.quote(url)}\n'
             f'else busybox wget -q -O {staged} {shlex.quote(url)}; fi')
    ctx.sh(fetch, show=f"wget {url} -O rootfs/bin/busybox",
           failure=(f"The target could not download {url}.",
                    "Check the VM's network, or use another source: --busybox target or --busybox PATH (a static busybox on this machine)."))
    digest = ctx.read(f"sha256sum {staged} | cut -c1-64").stdout.strip()
    expected, origin = _expected_sha256(ctx.settings, url)
    if not expected:
        pins = _record_sha256(ctx.settings, url, digest)
        ctx.say(f"sha256 {digest}: first download, recorded in {pins}")
    elif digest != expected:
        raise StepFailed(f"The busybox downloaded from {url} has sha256 {digest}, not {expected} ({origin}).",
                         f"Nothing was installed. If the new file is trusted, update {origin}; else use --busybox PATH.")
    else:
        ctx.say(f"sha256 {digest} matches {origin}")


def _stage_from_target(ctx: StepContext, staged: str) -> None:
    ctx.sh(f'cp "$(command -v busybox)" {staged}', show="cp $(command -v busybox) rootfs/bin/busybox",
           failure=("The target has no busybox of its own.",
                    "Install one (Debian: apt-get install busybox-static), or use --busybox url or --busybox PATH."))


def _stage_from_host(ctx: StepContext, staged: str, source: str) -> None:
    path = Path(source).expanduser()
    data = path.read_bytes()
    ctx.reporter.command(ctx.step, f"scp {path} TARGET:rootfs/bin/busybox")
    upload = ctx.upload(data)
    ctx.sh(f"mv -f {upload} {staged}", show="", failure=("Could not move the uploaded busybox into the rootfs.",
                                                         "Check that the rootfs is writable."))
    ctx.say(f"uploaded {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


def install_busybox(ctx: StepContext) -> None:
    """Fetch busybox from the chosen source into a staging name, prove it runs in the chroot, then install."""
    source = ctx.settings["busybox"]["source"]
    staged = f'"$ROOTFS"/{STAGED_BUSYBOX}'
    try:
        if source == "url":
            _stage_from_url(ctx, staged)
        elif source == "target":
            _stage_from_target(ctx, staged)
        else:
            _stage_from_host(ctx, staged, source)
        ctx.sh(f"chmod 755 {staged} && chroot \"$ROOTFS\" /{STAGED_BUSYBOX} --help 2>&1 | head -n 1 | grep '^BusyBox'",
               show="chmod +x rootfs/bin/busybox",
               failure=(f"The busybox from '{source}' does not run as busybox inside the rootfs.",
                        "It must be a static busybox build for this machine's CPU (Debian: busybox-static); nothing was installed."))
        ctx.sh(f'mv -f {staged} "$ROOTFS/bin/busybox"', show="")
    finally:
        ctx.read(f"rm -f {staged}")


BUSYBOX_CHECKS = (
    Check("busybox.present", '[ -f "$ROOTFS/bin/busybox" ] || { echo "no file rootfs/bin/busybox"; exit 1; }',
          "rootfs/bin/busybox is missing.",
          "Download it: wget <the workshop's busybox URL> -O rootfs/bin/busybox (or inv lab.chroot --only busybox)."),
    Check("busybox.executable", '[ -x "$ROOTFS/bin/busybox" ] || { echo "rootfs/bin/busybox is not executable"; exit 1; }',
          "rootfs/bin/busybox is not executable.", "Make it executable: chmod +x rootfs/bin/busybox"),
    Check("busybox.runs",
          'chroot "$ROOTFS" /bin/busybox --help 2>&1 | head -n 1 | grep "^BusyBox" '
          '|| { echo "rootfs/bin/busybox does not run as busybox in the chroot"; exit 1; }',
          "rootfs/bin/busybox does not run as busybox inside the rootfs.",
          "It must be a static busybox for this CPU: download it again, or copy a static build (Debian: busybox-static)."),
)

# --- symlinks -----------------------------------------------------------------------------------

SYMLINKS_CHECK = Check(
    "symlinks.installed",
    'missing=""\nfor applet in sh ls touch; do [ -L "$ROOTFS/bin/$applet" ] || missing="$missing bin/$applet"; done\n'
    '[ -z "$missing" ] || { echo "no symlinks for:$missing"; exit 1; }\n'
    'chroot "$ROOTFS" /bin/ls / >/dev/null || { echo "rootfs/bin/ls does not run in the chroot"; exit 1; }\n'
    'echo "applet symlinks installed"',
    "The busybox applet symlinks are not installed in the rootfs.",
    "Install them: chroot rootfs /bin/busybox --install -s",
)

# --- chroot-shell -------------------------------------------------------------------------------


def chroot_shell(ctx: StepContext) -> None:
    ctx.sh('PS1="C-$ " chroot "$ROOTFS" /bin/busybox sh', stdin="touch HELLO.txt\nls\nexit\n",
           show='PS1="C-$ " chroot rootfs /bin/busybox sh    # then: touch HELLO.txt; ls; exit')
    ctx.sh('ls -l "$ROOTFS/HELLO.txt"', show="ls -l rootfs/HELLO.txt    # the file is in the rootfs itself",
           failure=("HELLO.txt made in the chroot is not in the rootfs.", "Is rootfs the directory the shell ran in?"))
    ctx.say("The container changed its root filesystem: it is mutable. Removing HELLO.txt again.")
    ctx.sh('PS1="C-$ " chroot "$ROOTFS" /bin/busybox sh', stdin="ls\nrm HELLO.txt\nexit\n",
           show='PS1="C-$ " chroot rootfs /bin/busybox sh    # then: ls; rm HELLO.txt; exit')


# Demo mode hands the terminal to the workshop's own chroot shell, for the instructor to type into.
CHROOT_SHELL = 'PS1="C-$ " exec chroot "$ROOTFS" /bin/busybox sh'

CHROOT_SHELL_CHECKS = (
    Check("chroot-shell.runs",
          'printf "echo labkit-chroot-ok\\nexit\\n" | chroot "$ROOTFS" /bin/busybox sh | grep -x labkit-chroot-ok '
          '|| { echo "no shell answered in the chroot"; exit 1; }',
          "A shell does not run inside the rootfs.",
          "Try it: chroot rootfs /bin/busybox sh. Busybox and its symlinks must be in place first."),
    Check("chroot-shell.clean",
          '[ ! -e "$ROOTFS/HELLO.txt" ] || { echo "rootfs/HELLO.txt exists"; exit 1; }',
          "rootfs/HELLO.txt from the chroot exercise is still in the rootfs.",
          "Remove it as the workshop does: chroot rootfs /bin/busybox sh, then rm HELLO.txt, then exit."),
)

# --- container-script ---------------------------------------------------------------------------


def container_sh_values(settings: dict, shebang: str) -> dict:
    values = dict(settings["container_sh"])
    values["shebang"] = shebang
    return values


def write_container_script(ctx: StepContext) -> None:
    wanted = ctx.settings["container_sh"]["shebang"]
    shebang = wanted if wanted != "auto" else (
        "/bin/ash" if ctx.read("[ -x /bin/ash ]").ok else "/bin/sh")
    text = render("container.sh.j2", container_sh_values(ctx.settings, shebang), "chroot.container_sh")
    ctx.reporter.command(ctx.step, f"cat > container.sh    # rendered from templates/container.sh.j2, #!{shebang}")
    ctx.install_file(text.encode(), '"$SCRIPT"', mode=0o755, show="chmod +x container.sh")
    for line in text.splitlines():
        ctx.say(line)


CONTAINER_SCRIPT_CHECKS = (
    Check("container-script.present", '[ -f "$SCRIPT" ] || { echo "no file $SCRIPT"; exit 1; }',
          "container.sh is missing.", "Create container.sh next to rootfs, with the workshop's content."),
    Check("container-script.executable", '[ -x "$SCRIPT" ] || { echo "$SCRIPT is not executable"; exit 1; }',
          "container.sh is not executable.", "Make it executable: chmod +x container.sh"),
    Check("container-script.interpreter",
          'line=$(head -n 1 "$SCRIPT")\ncase "$line" in "#!"*) ;; *) echo "no #! line"; exit 1;; esac\n'
          'interpreter=$(echo "${line#??}" | sed "s/^ *//; s/ .*//")\n'
          '[ -x "$interpreter" ] || { echo "interpreter $interpreter does not exist here"; exit 1; }\necho "#!$interpreter"',
          "The interpreter on container.sh's first line does not exist on this machine.",
          "Alpine has /bin/ash; elsewhere start the script with #!/bin/sh."),
)

# --- overlay ------------------------------------------------------------------------------------

# Feeds a container commands on stdin; $1 is its number, so each leaves its own probe file.
CONTAINER_PROBE = """container() {
  printf '%s\\n' 'echo "labkit-prompt:$PS1"' "[ -e /labkit-probe-1 ] && echo labkit-sees-probe-1" \\
    "touch /labkit-probe-$1" 'ls /' exit | "$SCRIPT" "$ROOTFS" 2>&1
}
upper_of() { find /tmp -xdev -name "labkit-probe-$1" 2>/dev/null | head -n 1; }
"""

OVERLAY_CHECK = Check(
    "overlay.isolated",
    # The namespace makes the rootfs read-only, so it is unchanged afterwards by construction: a
    # container.sh that writes into it fails here instead of leaving its probe in an upper dir.
    in_private_namespace(CONTAINER_PROBE + """first=$(container 1) || { echo "$first" | tail -n 3; echo "container.sh failed"; exit 1; }
second=$(container 2) || { echo "$second" | tail -n 3; echo "container.sh failed"; exit 1; }
one=$(upper_of 1); two=$(upper_of 2)
[ -n "$one" ] && [ -n "$two" ] || { echo "files made in the containers are not in an upper directory under /tmp"; exit 1; }
[ "${one%/*}" != "${two%/*}" ] || { echo "both containers share one upper directory"; exit 1; }
case "$second" in *labkit-sees-probe-1*) echo "the second container sees the first one's file"; exit 1;; esac
echo "two containers, own upper dirs ${one%/*} and ${two%/*}, rootfs unchanged"
"""),
    "container.sh does not give each container its own overlay snapshot of the rootfs.",
    "Mount an overlay with lowerdir=$ROOTFS and an upperdir/workdir under /tmp/$nonce, then chroot into the overlay.",
)


def overlay_demo(ctx: StepContext) -> None:
    ctx.sh(in_private_namespace(ROOTFS_DIGEST + CONTAINER_PROBE + """before=$(rootfs_digest)
echo "--- container 1: touch /labkit-probe-1; ls /"
container 1
echo "--- its upper directory holds the change:"
ls -l "$(dirname "$(upper_of 1)")"
echo "--- container 2: does it see labkit-probe-1? ls /"
container 2
[ "$(rootfs_digest)" = "$before" ] && echo "--- rootfs unchanged: sha256 $before"
"""), show="./container.sh rootfs    # twice: each container gets its own overlay on the read-only rootfs")


# Demo mode hands the terminal to a container of container.sh, in the private namespace (with its
# fresh /tmp) so that the container's overlay and upper directory vanish when its shell exits.
OVERLAY_SHELL = in_private_namespace('exec "$SCRIPT" "$ROOTFS" </dev/tty')

# --- proc ---------------------------------------------------------------------------------------

PROC_PROBE = """printf '%s\\n' 'mkdir -p /proc' 'mount -t proc none /proc' \\
  'echo "labkit-processes: $(ls /proc | grep -c "^[0-9]")"' '[ -d /proc/1 ] && echo labkit-sees-pid-1' \\
  'ps -o pid,comm | head -n 12' 'umount /proc' exit | "$SCRIPT" "$ROOTFS" 2>&1
"""

PROC_CHECKS = (
    Check("proc.visible",
          in_private_namespace("out=$(" + PROC_PROBE.strip() + ")\n"
                               'echo "$out" | grep -q labkit-sees-pid-1 || { echo "$out" | tail -n 3; exit 1; }\n'
                               'echo "$out" | grep labkit-processes:'),
          "Mounting proc inside a container does not work.",
          "Inside a container: mkdir -p /proc && mount -t proc none /proc (busybox's mount applet is needed)."),
    Check("proc.unmounted",
          'found=$(awk \'$3 == "proc" && $2 ~ "^/tmp/.*/overlay/proc$" { print $2 }\' /proc/mounts)\n'
          '[ -z "$found" ] || { echo "still mounted: $found"; exit 1; }\necho "no proc mounted in a container"',
          "A proc filesystem is still mounted inside a container: it exposes every process of the VM.",
          "Unmount it: umount /tmp/<nonce>/overlay/proc"),
)


def proc_demo(ctx: StepContext) -> None:
    ctx.sh(in_private_namespace(PROC_PROBE), show="mount -t proc none /tmp/$nonce/overlay/proc    # inside a container, then ps")
    ctx.say("The container sees (and could kill) every process of the VM: proc is unmounted again.")


CLEANUP = f'rm -f "$ROOTFS/{STAGED_BUSYBOX}" /tmp/labkit-upload-*\n'

# Containers made by container.sh leave /tmp/<nonce>/{upper,workdir,overlay} and an overlay (maybe
# with proc) mounted on it: unmount those, remove them, then the rootfs and the script.
RESET = CLEANUP + """for dir in /tmp/*/; do
  if [ ! -d "${dir}upper" ] || [ ! -d "${dir}workdir" ] || [ ! -d "${dir}overlay" ]; then continue; fi
  umount "${dir}overlay/proc" 2>/dev/null; umount "${dir}overlay" 2>/dev/null
  grep -q " ${dir%/}/overlay" /proc/mounts && { echo "still mounted: ${dir}overlay"; exit 1; }
  rm -rf "$dir" && echo "removed $dir"
done
rm -rf "$ROOTFS" "$SCRIPT" && echo "removed $ROOTFS and $SCRIPT"
"""

LAB = Lab(
    name="chroot",
    title="Creating a simple container with chroot",
    variables=variables,
    defaults=DEFAULTS,
    options=(Option("busybox", "busybox.source", "Where busybox comes from: url (the workshop's download, default), "
                    "target (the target's own busybox) or a PATH to a static busybox on this machine (uploaded).",
                    validate=_busybox_source),),
    cleanup=CLEANUP,
    reset=RESET,
    steps=(
        Step("rootfs", "Prepare the rootfs directories",
             "A container needs a root filesystem: start with the directories busybox installs into.",
             make_rootfs, (ROOTFS_CHECK,)),
        Step("busybox", "Put busybox into the rootfs",
             "Busybox is one static binary that acts as `sh`, `ls` and hundreds of other tools.",
             install_busybox, BUSYBOX_CHECKS),
        Step("symlinks", "Install the busybox symlinks",
             "`busybox --install -s` creates a symlink for every applet, so `/bin/ls` runs busybox as `ls`.",
             lambda ctx: ctx.sh('chroot "$ROOTFS" /bin/busybox --install -s',
                                show="chroot rootfs /bin/busybox --install -s"),
             (SYMLINKS_CHECK,)),
        Step("chroot-shell", "Play with the container",
             "`chroot` runs a shell whose `/` is the rootfs. Files it creates land in the rootfs itself: "
             "our container's filesystem is mutable, so we can delete and mess up things.",
             chroot_shell, CHROOT_SHELL_CHECKS, interactive=True, demonstration=True, shell=CHROOT_SHELL),
        Step("container-script", "Create container.sh",
             "container.sh creates a new snapshot of the filesystem every time it launches a container.",
             write_container_script, CONTAINER_SCRIPT_CHECKS),
        Step("overlay", "Run containers on an overlay filesystem",
             "The overlay keeps the rootfs read-only (the lower dir); each container's changes go to its "
             "own upper dir, and the merged view is the container's root.",
             overlay_demo, (OVERLAY_CHECK,), interactive=True, demonstration=True, shell=OVERLAY_SHELL),
        Step("proc", "Mount proc in a container, and see why not to",
             "With proc mounted, the container sees every process of the machine and could kill them: "
             "nothing isolates it yet (no pid namespace).",
             proc_demo, PROC_CHECKS, demonstration=True),
    ),
)
