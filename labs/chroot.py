"""The chroot lab: "Creating a simple container with chroot", step by step as the workshop tells it.

Every check runs as root in the student's workdir with $WORKDIR, $ROOTFS and $SCRIPT set. Checks that
need to run containers do it inside a private mount namespace with its own /tmp, so that they leave
no mount, directory or file behind; the lab's demonstrations do the same.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import replace
from pathlib import Path

from .errors import StepFailed, UsageError
from .model import Cause, Check, Handin, Lab, Option, Probe, Step
from .runner import StepContext
from .templates import render

# `--busybox` (setting chroot.busybox.source) takes one of these, or the path of a file on this machine.
BUSYBOX_SOURCES = ("auto", "url", "target")


def _busybox_source(value: str) -> None:
    """--busybox: one of BUSYBOX_SOURCES or a file on this machine; UsageError otherwise."""
    if value not in BUSYBOX_SOURCES and not Path(value).expanduser().is_file():
        raise UsageError(f"--busybox {value}: no such file.", "Give auto, url, target, or the path of a static busybox binary.")

# busybox picks its applet by the name it is run as, so the staged copy must start with "busybox".
STAGED_BUSYBOX = "bin/busybox.labkit-new"

# Runs a script in a private mount namespace where /, the workdir and the rootfs are read-only and
# /tmp is a fresh tmpfs: containers work as usual, but nothing they (or a broken container.sh) do
# survives. A workdir under /tmp is carried over through a scratch tmpfs on /mnt. Every mount
# command costs a process, which is slow on an emulated VM, so only the needed ones run (unshare
# itself makes every mount private, as `mount --make-rprivate /` would).
PRIVATE_NAMESPACE = """command -v unshare >/dev/null || { echo "unshare is not installed on the target"; exit 1; }
unshare -m --propagation private sh -s <<'LABKIT_NAMESPACE'
lk_private() {
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


# The workshop's release also has an ARMv8 build; its sha256 as published with that download (Bazel
# http_file pins of it agree), so the first aarch64 download is already verified.
ARMV8_URL = "https://www.busybox.net/downloads/binaries/1.31.0-defconfig-multiarch-musl/busybox-armv8l"
PUBLISHED_SHA256 = {ARMV8_URL: "141adb1b625a6f44c4b114f76b4387b4ea4f7ab802b88eb40e0d2f6adcccb1c3"}


def busybox_url(settings: dict, machine: str) -> str:
    """The busybox download for a target whose `uname -m` is `machine`: its entry in the setting
    chroot.busybox.urls (aarch64: the ARMv8 build), else chroot.busybox.url (the workshop's i686 build)."""
    if machine in settings["busybox"].get("urls", {}):
        return settings["busybox"]["urls"][machine]
    return settings["busybox"]["url"]


def _pins_path(settings: dict) -> Path:
    return Path(settings["state_dir"]) / "busybox-sha256.json"


def _expected_sha256(settings: dict, url: str) -> tuple[str, str]:
    """The sha256 the download must have, and where that expectation comes from."""
    configured = settings["busybox"]["sha256"].strip().lower()
    if configured:
        return configured, "chroot.busybox.sha256"
    if url in PUBLISHED_SHA256:
        return PUBLISHED_SHA256[url], "the sha256 labkit ships for this URL"
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


class DownloadFailed(StepFailed):
    """The target could not fetch the busybox URL (no route, DNS, an HTTP error): `auto` may fall back."""


def _download(ctx: StepContext, staged: str, url: str) -> str:
    """Download busybox from `url` to `staged`; returns the sha256 to record once it has proved to
    run (empty when it is already pinned). A digest that differs from the pin is never a fallback."""
    fetch = (f'if command -v wget >/dev/null; then wget -q -O {staged} {shlex.quote(url)}\n'
             f'elif command -v curl >/dev/null; then curl -fsSL -o {staged} {shlex.quote(url)}\n'
             f'else busybox wget -q -O {staged} {shlex.quote(url)}; fi')
    result = ctx.sh(fetch, show=f"wget {url} -O rootfs/bin/busybox", check=False)
    if not result.ok:
        reason = next((line.strip() for line in reversed(result.stderr.splitlines()) if line.strip()),
                      f"exit status {result.exit_code}")
        raise DownloadFailed(f"The target could not download {url} ({reason}).",
                             "Check the VM's network, or use another source: --busybox auto (the default: falls back to "
                             "the target's own busybox), target, or PATH (a static busybox on this machine).")
    digest = ctx.read(f"sha256sum {staged} | cut -c1-64").stdout.strip()
    expected, origin = _expected_sha256(ctx.settings, url)
    if expected and digest != expected:
        raise StepFailed(f"The busybox downloaded from {url} has sha256 {digest}, not {expected} ({origin}).",
                         f"Nothing was installed. If the new file is trusted, update {origin}; else use --busybox PATH.")
    ctx.say(f"sha256 {digest} matches {origin}" if expected else f"sha256 {digest}: first download")
    return "" if expected else digest


# The target's own busybox as a path. `command -v` is not enough: BusyBox ash (Alpine's login shell)
# answers a bare "busybox" for its applets, so PATH and the usual directories are searched as well.
FIND_TARGET_BUSYBOX = """found=$(command -v busybox 2>/dev/null)
case "$found" in /*) [ -f "$found" ] && { printf '%s\\n' "$found"; exit 0; } ;; esac
IFS=:
for dir in $PATH:/bin:/usr/bin:/sbin:/usr/sbin; do
  [ -f "$dir/busybox" ] && [ -x "$dir/busybox" ] && { printf '%s\\n' "$dir/busybox"; exit 0; }
done
exit 1
"""


def _copy_from_target(ctx: StepContext, staged: str) -> str:
    """Copy the target's own busybox to `staged`; returns its path on the target."""
    found = ctx.read(FIND_TARGET_BUSYBOX)
    path = found.stdout.strip()
    if not found.ok or not path:
        raise StepFailed("The target has no busybox of its own.",
                         "Install one (Debian: apt-get install busybox-static), or use --busybox url or --busybox PATH.")
    ctx.sh(f"cp {shlex.quote(path)} {staged}", show=f"cp {path} rootfs/bin/busybox",
           failure=(f"Could not copy the target's busybox {path} into the rootfs.", "Check that the rootfs is writable."))
    return path


def _upload_from_host(ctx: StepContext, staged: str, source: str) -> str:
    """Upload the host's file `source` to `staged`; returns a description of it."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise UsageError(f"chroot.busybox.source {source}: no such file.",
                         f"Set it to {', '.join(BUSYBOX_SOURCES)}, or the path of a static busybox binary.")
    data = path.read_bytes()
    ctx.reporter.command(ctx.step, f"scp {path} TARGET:rootfs/bin/busybox")
    upload = ctx.upload(data)
    ctx.sh(f"mv -f {upload} {staged}", show="", failure=("Could not move the uploaded busybox into the rootfs.",
                                                         "Check that the rootfs is writable."))
    digest = hashlib.sha256(data).hexdigest()
    ctx.say(f"uploaded {len(data)} bytes, sha256 {digest}")
    return f"{path} on this machine (sha256 {digest})"


def _stage(ctx: StepContext, staged: str) -> tuple[str, tuple[str, str] | None]:
    """Put busybox from the configured source at `staged`: (where it came from, (URL, sha256) to pin or None).

    `auto` falls back to the target's own busybox only when the download fails; that is said at once,
    in one notice line that the report keeps in the step's notes."""
    source = ctx.settings["busybox"]["source"]
    if source in ("url", "auto"):
        url = busybox_url(ctx.settings, ctx.read("uname -m").stdout.strip())
        try:
            digest = _download(ctx, staged, url)
            return f"busybox from {url}", (url, digest) if digest else None
        except DownloadFailed as failure:
            if source == "url":
                raise
            path = _copy_from_target(ctx, staged)
            ctx.note(f"{failure.message.rstrip('.')}: using the target's own static busybox {path} instead.")
            return f"busybox from the target's own {path}", None
    if source == "target":
        return f"busybox from the target's own {_copy_from_target(ctx, staged)}", None
    return f"busybox from {_upload_from_host(ctx, staged, source)}", None


def install_busybox(ctx: StepContext) -> None:
    """Fetch busybox from the chosen source into a staging name, prove it runs in the chroot, then install.

    The step's notes (report and output) say where it came from."""
    staged = f'"$ROOTFS"/{STAGED_BUSYBOX}'
    try:
        origin, pin = _stage(ctx, staged)
        ctx.sh(f"chmod 755 {staged} && chroot \"$ROOTFS\" /{STAGED_BUSYBOX} --help 2>&1 | head -n 1 | grep '^BusyBox'",
               show="chmod +x rootfs/bin/busybox",
               failure=(f"The {origin} does not run as busybox inside the rootfs.",
                        "It must be a static busybox build for this machine's CPU (Debian: busybox-static); nothing was installed."))
        ctx.sh(f'mv -f {staged} "$ROOTFS/bin/busybox"', show="")
        if pin:
            ctx.say(f"sha256 recorded in {_record_sha256(ctx.settings, *pin)}")
        if not ctx.notes:  # a fallback has said where busybox came from already
            ctx.note(origin)
    finally:
        ctx.read(f"rm -f {staged}")


# Why a file that is there and executable does not run as busybox in the chroot. `od` reads the
# ELF header: byte 4 is the class (1: 32-bit, 2: 64-bit), bytes 18-19 the machine (e_machine).
BUSYBOX_RUNS = """bb="$ROOTFS/bin/busybox"
out=$(chroot "$ROOTFS" /bin/busybox --help 2>&1)
nl='
'
first=${out%%"$nl"*}
case "$first" in BusyBox*) echo "$first"; exit 0;; esac
printf '%s\\n' "$out" | tail -n 3
size=$(wc -c < "$bb" | tr -d ' ')
[ "$size" -gt 0 ] || { echo "rootfs/bin/busybox is empty (0 bytes)"; echo "labkit-cause empty"; exit 1; }
magic=$(od -An -c -N4 "$bb" | tr -d ' ')
if [ "$magic" != '177ELF' ]; then
  echo "rootfs/bin/busybox is $size bytes of something else; it starts with: $(head -n 1 "$bb" | cut -c1-60)"
  if head -n 20 "$bb" | grep -qi -e '<html' -e '<!doctype' -e '<head'; then echo "labkit-cause html"; else echo "labkit-cause not-elf"; fi
  exit 1
fi
machine=$(od -An -tu1 -j18 -N1 "$bb" | tr -d ' ')
case "$machine" in 3) cpu=i386;; 62) cpu=x86_64;; 40) cpu=arm;; 183) cpu=aarch64;; 243) cpu=riscv;; 8) cpu=mips;; 20|21) cpu=powerpc;; *) cpu="machine $machine";; esac
case "$(uname -m):$cpu" in
  x86_64:x86_64|x86_64:i386|i?86:i386|aarch64:aarch64|aarch64:arm|arm*:arm|riscv64:riscv) ;;
  *) echo "rootfs/bin/busybox is built for $cpu; this machine is $(uname -m)"; echo "labkit-cause cpu"; exit 1;;
esac
loader=$(tr -cs 'A-Za-z0-9/._-' '\\n' < "$bb" | grep -e '^/lib[^ ]*/ld-' | head -n 1)
if [ -n "$loader" ]; then
  [ -e "$ROOTFS$loader" ] && where="present" || where="missing"
  echo "rootfs/bin/busybox is dynamically linked: it needs $loader ($where in the rootfs) and its libraries"
  echo "labkit-cause dynamic"; exit 1
fi
echo "rootfs/bin/busybox does not run as busybox in the chroot"
exit 1
"""

BUSYBOX_CHECKS = (
    Check("busybox.present", '[ -f "$ROOTFS/bin/busybox" ] || { echo "no file rootfs/bin/busybox"; exit 1; }',
          "rootfs/bin/busybox is missing.",
          "Download it: wget <the workshop's busybox URL> -O rootfs/bin/busybox (or inv lab.chroot --only busybox)."),
    Check("busybox.executable", '[ -x "$ROOTFS/bin/busybox" ] || { echo "rootfs/bin/busybox is not executable"; exit 1; }',
          "rootfs/bin/busybox is not executable.", "Make it executable: chmod +x rootfs/bin/busybox"),
    Check("busybox.runs", BUSYBOX_RUNS,
          "rootfs/bin/busybox does not run as busybox inside the rootfs.",
          "It must be a static busybox for this CPU: download it again, or copy a static build (Debian: busybox-static).",
          causes=(
              Cause("empty", "rootfs/bin/busybox is an empty file: the download failed or was cut off.",
                    "Download it again (wget URL -O rootfs/bin/busybox) and check its size with ls -l; "
                    "behind a proxy or offline, copy a static busybox from another machine."),
              Cause("html", "rootfs/bin/busybox is a web page (HTML), not a program: the download saved an error "
                            "or redirect page.",
                    "Download the binary itself (the busybox-i686 file, not the page listing it), e.g. "
                    "wget https://www.busybox.net/downloads/binaries/1.31.0-defconfig-multiarch-musl/busybox-i686 -O rootfs/bin/busybox"),
              Cause("not-elf", "rootfs/bin/busybox is not a program (not an ELF binary).",
                    "Replace it with the busybox binary itself: wget the busybox-i686 file again."),
              Cause("cpu", "rootfs/bin/busybox is built for another CPU than this machine's.",
                    "Download the build for this machine (uname -m: x86_64 runs the workshop's busybox-i686; "
                    "aarch64 needs busybox-armv8l)."),
              Cause("dynamic", "rootfs/bin/busybox is dynamically linked, and the rootfs has no C library for it.",
                    "Use a static busybox: the workshop's busybox-i686 download, or Debian's busybox-static "
                    "(/bin/busybox), not the busybox package or a binary copied from /bin."),
          )),
)

# --- symlinks -----------------------------------------------------------------------------------

# Shared folders of VirtualBox, VMware, QEMU (9p, virtiofs) and network shares: no symlinks there.
SHARED_FOLDER_TYPES = "vboxsf 9p virtiofs vmhgfs fuse.vmhgfs-fuse prl_fs cifs smb3"

SYMLINKS_SCRIPT = """fs_type() { awk -v p="$1/" '{ m = $2 "/"; if (m == "//") m = "/"; if (index(p, m) == 1 && length(m) >= best) { best = length(m); t = $3 } } END { print t }' /proc/mounts; }
missing=""; copies=""
for applet in sh ls touch; do
  [ -L "$ROOTFS/bin/$applet" ] && continue
  missing="$missing bin/$applet"; [ -f "$ROOTFS/bin/$applet" ] && copies="$copies bin/$applet"
done
if [ -n "$missing" ]; then
  echo "no symlinks for:$missing"
  type=$(fs_type "$ROOTFS")
  for shared in """ + SHARED_FOLDER_TYPES + """; do
    [ "$type" = "$shared" ] && { echo "rootfs is on a $type file system"; echo "labkit-cause shared-folder"; exit 1; }
  done
  [ -z "$copies" ] || { echo "regular files (hard links or copies), not symlinks:$copies"; echo "labkit-cause hard-links"; }
  exit 1
fi
if ! out=$(chroot "$ROOTFS" /bin/ls / 2>&1); then
  printf '%s\\n' "$out" | tail -n 2
  for link in "$ROOTFS"/bin/* "$ROOTFS"/sbin/* "$ROOTFS"/usr/bin/* "$ROOTFS"/usr/sbin/*; do
    [ -L "$link" ] || continue
    to=$(readlink "$link")
    case "$to" in /*) [ -e "$ROOTFS$to" ] || { echo "${link#"$WORKDIR"/} -> $to: no such file inside the rootfs"; echo "labkit-cause outside"; exit 1; };; esac
  done
  echo "rootfs/bin/ls does not run in the chroot"; exit 1
fi
echo "applet symlinks installed"
"""

SYMLINKS_CHECK = Check(
    "symlinks.installed", SYMLINKS_SCRIPT,
    "The busybox applet symlinks are not installed in the rootfs.",
    "Install them: chroot rootfs /bin/busybox --install -s",
    causes=(
        Cause("outside", "The applet symlinks point to a path outside the rootfs, which does not exist in the chroot.",
              "Remove them (find rootfs -type l -exec rm {} +) and install them from inside: chroot rootfs /bin/busybox --install -s"),
        Cause("hard-links", "The applets are hard links or copies, not symlinks (busybox --install without -s).",
              "Remove them and install symlinks: chroot rootfs /bin/busybox --install -s"),
        Cause("shared-folder", "The rootfs is inside a shared folder (VirtualBox vboxsf, 9p, virtiofs, a network share), "
                               "where symlinks cannot be made.",
              "Make the rootfs on the VM's own disk, e.g. in your home directory (cd ~ && mkdir rootfs), not under /vagrant or a mount of the host."),
    ),
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
    Check("chroot-shell.runs", """out=$(chroot "$ROOTFS" /bin/busybox sh <<'EOF'
echo labkit-chroot-ok
exit
EOF
)
nl='
'
case "$nl$out$nl" in *"${nl}labkit-chroot-ok$nl"*) echo labkit-chroot-ok;; *) echo "no shell answered in the chroot"; exit 1;; esac
""",
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
    # One pass of `read` over the file; `od` looks for a byte order mark only when there is no #!.
    Check("container-script.interpreter", r"""cr=$(printf '\r')
crlf=0; line=""; lines=0
while IFS= read -r text || [ -n "$text" ]; do
  lines=$((lines + 1)); [ "$lines" -gt 1 ] || line=$text
  case "$text" in *"$cr"*) crlf=$((crlf + 1));; esac
done < "$SCRIPT"
[ "$crlf" -eq 0 ] || { echo "$crlf lines end with CR LF (Windows line endings)"; echo "labkit-cause crlf"; exit 1; }
case "$line" in
  "#!"*) ;;
  *) case "$(od -An -tx1 -N3 "$SCRIPT" | tr -d ' ')" in efbbbf) echo "the file starts with a byte order mark (EF BB BF) before #!"; echo "labkit-cause bom"; exit 1;; esac
     echo "first line: $line"; echo "labkit-cause no-shebang"; exit 1;;
esac
interpreter=${line#??}
interpreter=${interpreter#"${interpreter%%[! ]*}"}
interpreter=${interpreter%% *}
if [ ! -x "$interpreter" ]; then
  echo "interpreter $interpreter does not exist here"
  [ "$interpreter" != /bin/ash ] || echo "labkit-cause ash"
  [ "$interpreter" != /bin/bash ] || echo "labkit-cause bash"
  exit 1
fi
echo "#!$interpreter"
""",
          "The interpreter on container.sh's first line does not exist on this machine.",
          "Start the script with #!/bin/sh (or the path of a shell that exists here: ls -l /bin/sh).",
          causes=(
              Cause("crlf", "container.sh has Windows line endings (CR LF): the kernel looks for an interpreter "
                            "named 'sh\\r' and every command gets a stray CR.",
                    "Convert it: dos2unix container.sh, or sed -i 's/\\r$//' container.sh (set your editor to LF line endings)."),
              Cause("bom", "container.sh starts with a byte order mark (saved as 'UTF-8 with BOM'), so its first line is not #!.",
                    "Save it as UTF-8 without BOM, or remove the mark: sed -i '1s/^\\xEF\\xBB\\xBF//' container.sh"),
              Cause("no-shebang", "container.sh does not start with a #! line naming its interpreter.",
                    "Make #!/bin/sh the very first line (no blank line or comment before it)."),
              Cause("ash", "container.sh starts with #!/bin/ash, which only Alpine (and busybox installs) have; this machine has none.",
                    "Use #!/bin/sh here: the workshop's #!/bin/ash is for Alpine."),
              Cause("bash", "container.sh starts with #!/bin/bash, but this machine has no bash (Alpine, like the "
                            "workshop's con0, has only BusyBox ash).",
                    "Use the workshop's #!/bin/ash, or #!/bin/sh, and keep the script to sh syntax (no [[ ]])."),
          )),
)

# --- overlay ------------------------------------------------------------------------------------

# Feeds a container commands on stdin: `container N [COMMAND...]` leaves its own probe file
# /labkit-probe-N, runs the COMMANDs, and lists / last (the container's exit status is that of ls).
CONTAINER_PROBE = """container() {
  lk_n=$1; shift
  printf '%s\\n' 'echo "labkit-prompt:$PS1"' "[ -e /labkit-probe-1 ] && echo labkit-sees-probe-1" \\
    "touch /labkit-probe-$lk_n" "$@" 'ls /' exit | "$SCRIPT" "$ROOTFS" 2>&1
}
upper_of() { find /tmp -xdev -name "labkit-probe-$1" 2>/dev/null | head -n 1; }
"""

# Why a container of container.sh failed: its own output says it, the kernel's log often says more
# (overlayfs explains a refused mount there), and the script's text shows the common slips.
OVERLAY_DIAGNOSIS = r"""lk_kernel=$(dmesg 2>/dev/null | grep -c 'overlayfs:')
diagnose() {
  printf '%s\n' "$1" | grep -v '^ *$' | tail -n 5
  kernel=$(dmesg 2>/dev/null | grep 'overlayfs:' | tail -n +$((lk_kernel + 1)) | tail -n 1)
  [ -z "$kernel" ] || echo "kernel: ${kernel#*] }"
  code=$(grep -v '^[[:space:]]*#' "$SCRIPT")
  case "$1 $kernel" in
    *"type 'overlayfs'"*) echo "labkit-cause type";;
    *"missing 'workdir'"*) echo "labkit-cause workdir";;
    *"same mount"*) echo "labkit-cause same-fs";;
    *"not supported as upperdir"*|*"upper fs"*) echo "labkit-cause upper-fs";;
    *) if printf '%s\n' "$code" | grep -q -e '-t[[:space:]]*overlayfs'; then echo "labkit-cause type"
       elif printf '%s\n' "$code" | grep -q 'upperdir=' && ! printf '%s\n' "$code" | grep -q 'workdir='; then echo "labkit-cause workdir"
       fi;;
  esac
  echo "container.sh failed"; exit 1
}
"""

# What a container does to see proc: mount it, count the processes it shows, look for pid 1,
# unmount, and mark the end of what proc.visible judges.
PROC_COMMANDS = ("mkdir -p /proc", "mount -t proc none /proc",
                 'n=0; for p in /proc/[0-9]*; do [ -d "$p" ] && n=$((n + 1)); done; echo "labkit-processes: $n"',
                 "[ -d /proc/1 ] && echo labkit-sees-pid-1", "umount /proc", "echo labkit-proc-done")

# The containers the overlay and proc steps' checks judge, started once per check run: two
# containers of container.sh in one private namespace (the rootfs read-only, so it is unchanged
# afterwards by construction: a container.sh that writes into it fails instead of leaving its probe
# in an upper dir), the second one also mounting proc. It prints, in this order, where each
# container's probe file landed under /tmp ("labkit-upper-N PATH", outside the overlays: -xdev),
# "labkit-second-sees-probe-1" if the second container saw the first one's file, then each
# container's output after a line "labkit-container-N"; a failing container instead stops it with
# the diagnosis (exit status 1). What the checks read on their passing path comes first or is found
# by `case`: ash's ${var#*word} takes time quadratic in how far it scans, so a long output must not
# be cut up that way.
CONTAINERS = Probe("containers", in_private_namespace(
    CONTAINER_PROBE + OVERLAY_DIAGNOSIS + """first=$(container 1) || diagnose "$first"
second=$(container 2 """ + " ".join(shlex.quote(command) for command in PROC_COMMANDS) + """) || diagnose "$second"
lk_nl='
'
lk_found="$lk_nl$(find /tmp -xdev -name 'labkit-probe-[12]' 2>/dev/null)$lk_nl"
for lk_n in 1 2; do
  lk_path=""
  case "$lk_found" in *"/labkit-probe-$lk_n$lk_nl"*) lk_path=${lk_found%%"/labkit-probe-$lk_n$lk_nl"*}; lk_path=${lk_path##*"$lk_nl"}/labkit-probe-$lk_n;; esac
  echo "labkit-upper-$lk_n $lk_path"
done
case "$second" in *labkit-sees-probe-1*) echo labkit-second-sees-probe-1;; esac
printf '%s\\n' labkit-container-1 "$first" labkit-container-2 "$second"
"""))

# Reads the probe CONTAINERS: fails with its output when it failed; `part N` prints container N's output.
CONTAINERS_READ = """[ "$PROBE_STATUS" -eq 0 ] || { printf '%s\\n' "$PROBE"; exit 1; }
nl='
'
part() { printf '%s\\n' "$PROBE" | sed -n "/^labkit-container-$1\\$/,/^labkit-container-/{/^labkit-container-/!p;}"; }
"""

OVERLAY_CHECK = Check(
    "overlay.isolated",
    CONTAINERS_READ + """one=${PROBE#*labkit-upper-1 }; one=${one%%"$nl"*}
two=${PROBE#*labkit-upper-2 }; two=${two%%"$nl"*}
if [ -z "$one" ] || [ -z "$two" ]; then
  part 1 | tail -n 3; echo "files made in the containers are not in an upper directory under /tmp"; exit 1
fi
[ "${one%/*}" != "${two%/*}" ] || { echo "both containers share one upper directory"; exit 1; }
case "$PROBE" in *labkit-second-sees-probe-1*) echo "the second container sees the first one's file"; exit 1;; esac
echo "two containers, own upper dirs ${one%/*} and ${two%/*}, rootfs unchanged"
""",
    "container.sh does not give each container its own overlay snapshot of the rootfs.",
    "Mount an overlay with lowerdir=$ROOTFS and an upperdir/workdir under /tmp/$nonce, then chroot into the overlay.",
    causes=(
        Cause("type", "container.sh mounts a file system type that does not exist: the overlay type is called 'overlay'.",
              "Write mount -t overlay (not overlayfs) in container.sh."),
        Cause("workdir", "container.sh mounts the overlay without workdir=, which an overlay with an upperdir requires.",
              "Add workdir=$TMP_BASE/$nonce/workdir to the -o options (an empty directory beside upper)."),
        Cause("same-fs", "The overlay's upperdir and workdir are on different file systems; the kernel requires one.",
              "Put upper and workdir side by side in one directory (/tmp/$nonce/upper and /tmp/$nonce/workdir)."),
        Cause("upper-fs", "The overlay's upper directory is on a file system that cannot be an upperdir (a shared folder, say).",
              "Keep upper and workdir under /tmp on the VM's own disk, not in a shared folder."),
    ),
    probe=CONTAINERS,
)

# Containers of the workshop's container.sh stay mounted after their shell exits: harmless for the
# lab, but they add up. A warning, not a failure. (`read` over /proc/mounts: no process to start.)
OVERLAY_LEFTOVERS = Check(
    "overlay.unmounted",
    """n=0
while read -r _ dir type _; do
  case "$type $dir" in "overlay /tmp/"*) n=$((n + 1)); [ "$n" -gt 5 ] || echo "$dir";; esac
done < /proc/mounts
if [ "$n" -gt 0 ]; then echo "$n overlays of earlier containers are mounted"; echo "labkit-cause leftovers"
else echo "no container overlays left mounted"; fi
""",
    "Overlays of earlier containers are still mounted under /tmp.",
    "Unmount them when done: umount /tmp/<nonce>/overlay (or inv lab.reset chroot to start over).",
)
OVERLAY_LEFTOVERS = replace(OVERLAY_LEFTOVERS, causes=(Cause("leftovers", OVERLAY_LEFTOVERS.message, OVERLAY_LEFTOVERS.hint),))


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
          CONTAINERS_READ + """case "$PROBE" in *labkit-sees-pid-1*) ;; *) part 2 | sed '/^labkit-proc-done$/,$d' | tail -n 3; exit 1;; esac
case "$PROBE" in *"${nl}labkit-processes:"*) ;; *) exit 1;; esac
processes=${PROBE##*"${nl}labkit-processes:"}
echo "labkit-processes:${processes%%"$nl"*}"
""",
          "Mounting proc inside a container does not work.",
          "Inside a container: mkdir -p /proc && mount -t proc none /proc (busybox's mount applet is needed).",
          probe=CONTAINERS),
    Check("proc.unmounted",
          """found=""; nl='
'
while read -r _ dir type _; do
  [ "$type" = proc ] || continue
  case "$dir" in /tmp/*/overlay/proc|"$ROOTFS/proc") found="$found${found:+$nl}$dir";; esac
done < /proc/mounts
[ -z "$found" ] || { echo "still mounted: $found"; case "$found" in *"$ROOTFS/proc"*) echo "labkit-cause rootfs";; esac; exit 1; }
echo "no proc mounted in a container"
""",
          "A proc filesystem is still mounted inside a container: it exposes every process of the VM.",
          "Unmount it: umount /tmp/<nonce>/overlay/proc",
          causes=(Cause("rootfs", "proc is mounted inside the rootfs itself (mounted in a plain chroot): every process "
                                  "of the VM shows in the rootfs, and the next overlay sees it too.",
                        "Unmount it: umount rootfs/proc (and mount proc only inside containers of container.sh)."),)),
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

# The lab's configuration section (`chroot.*`); invoke.yaml, INVOKE_CHROOT_* and flags override it.
DEFAULTS = {
    "vm": "con0",
    "workdir": "",
    "rootfs": "rootfs",
    "script": "container.sh",
    "points": {},
    "hidden": [],
    "busybox": {
        "source": "auto",
        "url": "https://www.busybox.net/downloads/binaries/1.31.0-defconfig-multiarch-musl/busybox-i686",
        "urls": {"aarch64": ARMV8_URL},
        "sha256": "",
    },
    "container_sh": {
        "shebang": "auto",
        "tmp_base": "/tmp",
        "prompt_suffix": "-# ",
        "nonce_length": 10,
    },
}

LAB = Lab(
    name="chroot",
    title="Creating a simple container with chroot",
    variables=variables,
    defaults=DEFAULTS,
    options=(Option("busybox", "busybox.source", "Where busybox comes from: auto (default: the workshop's download, "
                    "else the target's own static busybox, said in the output and the report), url (the download "
                    "only), target (the target's own busybox) or a PATH to a static busybox on this machine (uploaded).",
                    validate=_busybox_source),),
    cleanup=CLEANUP,
    reset=RESET,
    # The grading VM is the built-in image, which has a static busybox: no download needed.
    grading_settings={"busybox.source": "target"},
    handins=(Handin("container.sh", '"$SCRIPT"', "container-script", 0o755),),
    # Students write the workshop's #!/bin/ash (Alpine); Debian's busybox-static provides no ash link.
    grading_setup='[ -e /bin/ash ] || ln -s "$(command -v busybox)" /bin/ash',
    steps=(
        Step("rootfs", "Prepare the rootfs directories",
             "A container needs a root filesystem: start with the directories busybox installs into.",
             make_rootfs, (ROOTFS_CHECK,)),
        Step("busybox", "Put busybox into the rootfs",
             "Busybox is one static binary that acts as `sh`, `ls` and hundreds of other tools.",
             install_busybox, BUSYBOX_CHECKS, needs=("rootfs",)),
        Step("symlinks", "Install the busybox symlinks",
             "`busybox --install -s` creates a symlink for every applet, so `/bin/ls` runs busybox as `ls`.",
             lambda ctx: ctx.sh('chroot "$ROOTFS" /bin/busybox --install -s',
                                show="chroot rootfs /bin/busybox --install -s"),
             (SYMLINKS_CHECK,), needs=("busybox",)),
        Step("chroot-shell", "Play with the container",
             "`chroot` runs a shell whose `/` is the rootfs. Files it creates land in the rootfs itself: "
             "our container's filesystem is mutable, so we can delete and mess up things.",
             chroot_shell, CHROOT_SHELL_CHECKS, interactive=True, demonstration=True, shell=CHROOT_SHELL,
             needs=("symlinks",)),
        Step("container-script", "Create container.sh",
             "container.sh creates a new snapshot of the filesystem every time it launches a container.",
             write_container_script, CONTAINER_SCRIPT_CHECKS, points=2),
        Step("overlay", "Run containers on an overlay filesystem",
             "The overlay keeps the rootfs read-only (the lower dir); each container's changes go to its "
             "own upper dir, and the merged view is the container's root.",
             overlay_demo, (OVERLAY_CHECK, OVERLAY_LEFTOVERS), interactive=True, demonstration=True, shell=OVERLAY_SHELL,
             needs=("symlinks", "container-script"), points=3),
        Step("proc", "Mount proc in a container, and see why not to",
             "With proc mounted, the container sees every process of the machine and could kill them: "
             "nothing isolates it yet (no pid namespace).",
             proc_demo, PROC_CHECKS, demonstration=True, needs=("overlay",)),
    ),
)
