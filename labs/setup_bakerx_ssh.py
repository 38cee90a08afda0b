"""The setup items of the bakerx and ssh providers (see labs.setup, which runs them): apart from the
built-in provider's items because they need the SSH stack (paramiko), which the qemu guard must not."""

from __future__ import annotations

import re
import shutil
import socket
import tempfile
from dataclasses import replace
from pathlib import Path

from .errors import LabError
from .model import FAIL, PASS, SKIP
from .providers import bakerx, qemu, ssh
from .providers.hostkeys import HostKeyChanged, entry_name, fetch_host_key, forget_command, pin_host_key
from .setup import Area, Facts, Item, Outcome, SetupScope, chosen_vms, guard, version_tuple

NODE_OLDEST = (12, 14, 0)


# -- facts ----------------------------------------------------------------------------------------------

def _bakerx_settings(facts: Facts) -> dict:
    return {**bakerx.DEFAULTS, **facts.scope.bakerx_settings}


def bakerx_version(facts: Facts) -> tuple[int, int, int] | LabError:
    """The installed bakerx's version, or why there is none to use."""
    bakerx_settings = _bakerx_settings(facts)

    def detect():
        try:
            return bakerx.detect_version(bakerx_settings["command"])
        except LabError as error:
            return error
    return facts.fact("bakerx_version", detect)


def bakerx_image_pulled(facts: Facts, image: str) -> bool:
    image_dir = Path.home() / ".bakerx" / ".persist" / "images" / image
    return facts.fact(f"bakerx_image:{image}", lambda: any((image_dir / name).exists() for name in bakerx.IMAGE_FILES))


def key_state(facts: Facts) -> str:
    """The --key file: plain, encrypted (needs a passphrase) or unreadable."""
    return facts.fact("key_state", lambda: ssh.key_state(Path(facts.scope.key).expanduser()))


def key_in_agent(facts: Facts) -> bool | None:
    """Whether ssh-agent holds the --key; None when no agent runs."""
    return facts.fact("key_in_agent", lambda: ssh.key_in_agent(Path(facts.scope.key).expanduser()))


def tcp(facts: Facts) -> str:
    """"" when --host's HOST:PORT accepts a TCP connection, else why not."""
    def connect():
        _, host, port = ssh.parse_host(facts.scope.host)
        try:
            socket.create_connection((host, port), timeout=facts.scope.connect_timeout).close()
        except (socket.timeout, TimeoutError):
            return f"no answer within {facts.scope.connect_timeout:g} s"
        except OSError as error:
            return (error.strerror or str(error)).lower()
        return ""
    return facts.fact("tcp", connect)


# -- bakerx path ---------------------------------------------------------------------------------------

BAKERX_INSTALL = "npm install -g ottomatica/bakerx"
NODE_HINT = "Install Node.js 12.14 or later (https://nodejs.org, or sudo apt-get install nodejs), then: " + BAKERX_INSTALL


def item_node(facts: Facts) -> Outcome:
    text = facts.node_version
    if text is None:
        return FAIL, "Node.js is not installed (no node on PATH): bakerx runs on it.", NODE_HINT
    version = version_tuple(text)
    if version is None or version < NODE_OLDEST:
        return FAIL, f"Node.js {text} is older than 12.14, which bakerx needs.", NODE_HINT
    return PASS, f"Node.js {'.'.join(map(str, version))}", ""


def item_bakerx(facts: Facts) -> Outcome:
    version = bakerx_version(facts)
    if isinstance(version, LabError):
        return FAIL, version.message, version.hint
    order = "pull <registry> <image>" if version < bakerx.PULL_IMAGE_FIRST else "pull <image> [registry]"
    return PASS, f"bakerx {bakerx.version_text(version)} (its argument order: bakerx {order})", ""


def _without_virtualbox(facts: Facts) -> Outcome | None:
    """The skip of a VirtualBox item when bakerx is set to another provider of its own (kvm)."""
    bakerx_settings = _bakerx_settings(facts)
    provider = str(bakerx_settings["provider"] or "vbox")
    return None if provider == "vbox" else (SKIP, f"bakerx.provider is {provider}: VirtualBox is not used.", "")


def item_vboxmanage(facts: Facts) -> Outcome:
    if _without_virtualbox(facts):
        return _without_virtualbox(facts)
    if not facts.vboxmanage:
        return (FAIL, "VirtualBox is not installed: VBoxManage is not on PATH.",
                "Install VirtualBox (https://www.virtualbox.org) and put VBoxManage on PATH, or use --provider qemu.")
    version = facts.vbox_version
    return PASS, f"VBoxManage at {facts.vboxmanage}" + (f" (VirtualBox {version})" if version else ""), ""


VT_HINT = "Enable virtualisation (Intel VT-x / AMD-V, SVM) in the BIOS/UEFI settings, or use --provider qemu."


def item_virtualisation(facts: Facts) -> Outcome:
    """Hardware virtualisation for VirtualBox: offered by the CPU and not held by another hypervisor."""
    if _without_virtualbox(facts):
        return _without_virtualbox(facts)
    if not facts.vboxmanage:
        return SKIP, "Needs VBoxManage (see vboxmanage).", ""
    match = re.search(r"supports HW virtuali[sz]ation:\s*(\w+)", facts.vbox_hostinfo or "")
    if match and match.group(1).lower() != "yes":
        return FAIL, "VirtualBox reports no hardware virtualisation (VT-x/AMD-V) on this processor.", VT_HINT
    if facts.system == "Windows" and facts.hypervisor_running:
        return (FAIL, "Hyper-V is on and holds VT-x: VirtualBox VMs fail to start or crawl.",
                "As Administrator run bcdedit /set hypervisorlaunchtype off, turn off the Windows features Hyper-V, "
                "Virtual Machine Platform and Memory integrity, and restart; or use --provider qemu.")
    if facts.system == "Linux":
        if not qemu.cpu_has_virt(facts.cpuinfo):
            return FAIL, "The CPU shows no vmx/svm flag: hardware virtualisation is off or hidden (a VM without nesting).", VT_HINT
        held = {module: users for module, users in facts.kvm_users.items() if users or facts.kvm_virt_at_load}
        if held:
            module, users = next(iter(held.items()))
            why = f"{users} KVM VM{'s are' if users != 1 else ' is'} running" if users else "KVM takes it when it loads (Linux 6.12+)"
            return (FAIL, f"KVM holds VT-x/AMD-V ({module}: {why}): VirtualBox cannot start a VM meanwhile.",
                    f"Stop the KVM VMs, then unload KVM: sudo modprobe -r {module} kvm; or use --provider qemu.")
    return PASS, "Hardware virtualisation is available to VirtualBox" + (" (VT-x/AMD-V: yes)" if match else ""), ""


def item_bakerx_images(facts: Facts) -> Outcome:
    version = bakerx_version(facts)
    bakerx_settings = _bakerx_settings(facts)
    vms = bakerx_settings["vms"]
    found, later = [], []
    for vm in chosen_vms(facts, vms):
        spec = vms.get(vm) or {}
        image, registry = str(spec.get("image", "")), str(spec.get("registry") or "")
        if bakerx_image_pulled(facts, image):
            found.append(image)
        elif not registry and (isinstance(version, LabError) or version < bakerx.PULL_IMAGE_FIRST):
            return (FAIL, f"Image {image} of {vm} is not pulled, and no registry to pull it from is set.",
                    f"Set bakerx.vms.{vm}.registry (the workshop's: ottomatica/slim#images for alpine, cloud-images.ubuntu.com for bionic).")
        else:
            later.append(f"{image} from {registry or 'Vagrant Cloud'} at the first inv vm.up {vm} (needs the internet)")
    parts = ([f"pulled: {', '.join(found)}"] if found else []) + ([f"to be pulled: {'; '.join(later)}"] if later else [])
    text = "; ".join(parts)
    return PASS, text[:1].upper() + text[1:] if text else "No VMs configured (bakerx.vms).", ""


# -- ssh path ------------------------------------------------------------------------------------------

def _key(facts: Facts) -> Path | None:
    return Path(facts.scope.key).expanduser() if facts.scope.key else None


def item_key_file(facts: Facts) -> Outcome:
    key = _key(facts)
    if key is None:
        return SKIP, "No --key: ssh's default keys and ssh-agent are tried.", ""
    try:
        ssh.check_key_file(key)
    except LabError as error:
        return FAIL, error.message, error.hint
    return PASS, f"{key} exists, readable only by you (mode {oct(key.stat().st_mode & 0o777)[2:]})", ""


def item_key_passphrase(facts: Facts) -> Outcome:
    key = _key(facts)
    if key is None or not key.is_file():
        return SKIP, "Needs a key file (see key-file).", ""
    state = key_state(facts)
    in_agent = {True: "it is in ssh-agent", False: "it is not in ssh-agent", None: "no ssh-agent is running"}[key_in_agent(facts)]
    if state == "unreadable":
        return FAIL, f"{key} is not a private key labkit can read.", "Pass the private key (not the .pub file) with --key."
    if state == "encrypted":
        return (FAIL, f"{key} is protected by a passphrase, which labkit cannot type ({in_agent}; labkit reads the key file itself).",
                "Use a key without a passphrase for the lab machine: ssh-keygen -t ed25519 -N '' -f ~/.ssh/labkit_ed25519, "
                "and add its .pub to the machine's ~/.ssh/authorized_keys.")
    return PASS, f"No passphrase; {in_agent}", ""


def item_host_reachable(facts: Facts) -> Outcome:
    _, host, port = ssh.parse_host(facts.scope.host)
    reason = tcp(facts)
    if reason:
        return (FAIL, f"Nothing answers at {host}:{port}: {reason}.",
                "Check the host and port (for a bakerx VM: bakerx ssh-info NAME), and that the machine is up.")
    return PASS, f"{host}:{port} accepts connections", ""


def _pin_copy(facts: Facts) -> Path:
    """A throwaway copy of the ssh provider's known_hosts: items pin there, never in the real one."""
    def copy():
        directory = Path(tempfile.mkdtemp(prefix="labkit-setup-"))
        real = facts.scope.state_dir / "known_hosts"
        if real.exists():
            shutil.copyfile(real, directory / "known_hosts")
        return directory / "known_hosts"
    return facts.fact("pin_copy", copy)


def item_host_key(facts: Facts) -> Outcome:
    if tcp(facts):
        return SKIP, "Needs the machine to answer (see host-reachable).", ""
    _, host, port = ssh.parse_host(facts.scope.host)
    real = facts.scope.state_dir / "known_hosts"
    try:
        key = fetch_host_key(host, port, _pin_copy(facts), timeout=facts.scope.connect_timeout)
        outcome = pin_host_key(_pin_copy(facts), host, port, key)
    except HostKeyChanged:
        return (FAIL, f"{entry_name(host, port)} presents a host key that differs from the one pinned in {real}.",
                f"If the machine was recreated on purpose, forget the old key: {forget_command(real, host, port)}")
    except LabError as error:
        return FAIL, error.message, error.hint
    described = f"{key.get_name()} {key.fingerprint}"
    if outcome == "same":
        return PASS, f"Host key {described} is the one pinned in {real}", ""
    return PASS, f"Host key {described} is not pinned yet: the first lab run pins it in {real}", ""


def item_login(facts: Facts) -> Outcome:
    if tcp(facts):
        return SKIP, "Needs the machine to answer (see host-reachable).", ""
    try:
        target = ssh.ssh_target(facts.scope.host, facts.scope.key or None, facts.scope.state_dir)
        remote = ssh.Remote(replace(target, known_hosts=_pin_copy(facts)), connect_timeout=facts.scope.connect_timeout,
                            command_timeout=facts.scope.connect_timeout, reconnect_attempts=0)
        try:
            remote.run("true", root=False)
            sudo = None if target.user == "root" else remote.run("sudo -n true", root=False)
        finally:
            remote.close()
    except LabError as error:
        return FAIL, error.message, error.hint
    if sudo is not None and not sudo.ok:
        return (FAIL, f"{target.user} logs in, but cannot run sudo without a password: the labs run their commands as root through sudo -n.",
                f"Give {target.user} passwordless sudo on the machine, or log in as root.")
    return PASS, f"Logged in as {target.user}" + ("" if sudo is None else ", with passwordless sudo"), ""


AREAS: dict[str, tuple[Area, ...]] = {
    "bakerx": (
        Area("node", "Node.js 12.14 or later", "bakerx is a Node.js program.", (Item("node", item_node),)),
        Area("bakerx", "bakerx 0.6.3 or later", "bakerx makes the workshop's VMs.", (Item("bakerx", item_bakerx),)),
        Area("virtualbox", "VirtualBox, able to start a VM", "bakerx's VMs run in VirtualBox, which needs VT-x/AMD-V.",
             (Item("vboxmanage", item_vboxmanage), Item("virtualisation", item_virtualisation))),
        Area("images", "The workshop's images, pulled or pullable", "bakerx pull fetches them once.",
             (Item("bakerx-images", item_bakerx_images),)),
    ),
    "ssh": (
        Area("key", "The private key", "labkit logs in with this key, without prompting.",
             (Item("key-file", item_key_file), Item("key-passphrase", item_key_passphrase))),
        Area("host", "The machine, reachable", "Its SSH server answers, and its host key is known or will be pinned.",
             (Item("host-reachable", item_host_reachable), Item("host-key", item_host_key))),
        Area("login", "Logging in", "The labs run their commands over this login.", (Item("login", item_login),)),
    ),
}


def guard_bakerx(bakerx_settings: dict) -> tuple[int, int, int]:
    """Before the bakerx provider calls bakerx: that it is there and new enough; its version."""
    return bakerx_version(guard("bakerx", ("bakerx",), SetupScope("bakerx", bakerx_settings=bakerx_settings)))
