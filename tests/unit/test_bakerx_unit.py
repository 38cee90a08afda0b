"""The bakerx provider's reading of bakerx: versions, argument orders, ssh-info outputs, error messages
and colours, as the project's notes record them for bakerx 0.6.3 to 0.9.0; plus host-key pins and
the OpenSSH config, against a real sshd."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from labs.errors import TargetError, UsageError
from labs.providers import _config_path, _config_word, choose, ssh_config
from labs.providers.bakerx import (
    BakerxError,
    complete_ssh_info,
    parse_ssh_command,
    parse_ssh_json,
    parse_version,
    pull_args,
    recognise,
    run_bakerx,
    strip_ansi,
)
from labs.providers.hostkeys import HostKeyChanged, fetch_host_key, forget_command, pin_host_key

STANDIN = Path(__file__).resolve().parents[1] / "bakerx_standin" / "bakerx"
HOME = Path("/home/u/.bakerx")
RED, PINK, END = "\x1b[31m", "\x1b[38;2;255;105;180m", "\x1b[39m"
CMD = 'ssh -i "/home/u/.bakerx/baker_rsa" root@127.0.0.1 -p 2002 -o StrictHostKeyChecking=no'


# --- versions and arguments -----------------------------------------------------------------------

@pytest.mark.parametrize("output, version", [
    ("bakerx@0.6.3\nvirtcrud@UNKNOWN\n", (0, 6, 3)),
    ("bakerx@0.9.0\nvirtcrud@3f6c2a1\n", (0, 9, 0)),
    (f"{RED}warning{END}\nbakerx@0.7.10\n", (0, 7, 10)),
])
def test_version_is_read_from_bakerx_version(output, version):
    assert parse_version(output) == version


def test_output_without_a_version_is_a_target_error():
    with pytest.raises(TargetError, match="Cannot tell which bakerx is installed"):
        parse_version("Did you forget to specify a command?\n")


@pytest.mark.parametrize("version, expected", [
    ((0, 6, 3), ["pull", "ottomatica/slim#images", "alpine3.9-simple"]),
    ((0, 6, 12), ["pull", "ottomatica/slim#images", "alpine3.9-simple"]),
    ((0, 7, 0), ["pull", "alpine3.9-simple", "ottomatica/slim#images"]),
    ((0, 9, 0), ["pull", "alpine3.9-simple", "ottomatica/slim#images"]),
])
def test_pull_argument_order_changed_in_0_7(version, expected):
    assert pull_args(version, "alpine3.9-simple", "ottomatica/slim#images") == expected


def test_pull_without_registry_searches_vagrant_cloud_from_0_7():
    assert pull_args((0, 9, 0), "bionic", "") == ["pull", "bionic"]


# --- ssh details ----------------------------------------------------------------------------------

RUN_OUTPUT = ("Creating con0 using vbox...\n\nreceived from ssh server:  SSH-2.0-OpenSSH_7.9\n"
              f"{PINK}The VM is now ready. You can run this ssh command to connect to it.{END}\n{CMD}\n")


@pytest.mark.parametrize("output", [
    RUN_OUTPUT,
    RUN_OUTPUT + "You may also run 'bakerx ssh con0' to connect to the machine.\n",
    RUN_OUTPUT.replace("\n", "\r\n"),
])
def test_ssh_command_line_of_run(output):
    assert parse_ssh_command(output) == {"user": "root", "hostname": "127.0.0.1", "port": "2002",
                                         "private_key": "/home/u/.bakerx/baker_rsa"}


def test_ssh_command_line_with_undefined_user_and_key_falls_back():
    raw = parse_ssh_command('ssh -i "undefined" undefined@127.0.0.1 -p 2003 -o StrictHostKeyChecking=no\n')
    info = complete_ssh_info(raw, vagrant_box=False, bakerx_home=HOME)
    assert (info.user, info.key, info.port) == ("root", HOME / "baker_rsa", 2003)


def test_run_output_without_ssh_line_is_a_target_error():
    with pytest.raises(TargetError, match="printed no ssh command"):
        parse_ssh_command("Creating con0 using vbox...\n")


def json_output(**fields) -> str:
    return json.dumps(fields, indent=2) + "\n"


@pytest.mark.parametrize("case, output, vagrant, expected", [
    ("vbox: port is a number", json_output(user="root", port=2002, host="con0", hostname="127.0.0.1",
                                          private_key="/home/u/.bakerx/baker_rsa"),
     False, ("root", "127.0.0.1", 2002, HOME / "baker_rsa")),
    ("kvm: port is a string", json_output(user="root", port="2022", host="con0", hostname="127.0.0.1",
                                         private_key="/home/u/.bakerx/baker_rsa"),
     False, ("root", "127.0.0.1", 2022, HOME / "baker_rsa")),
    ("0.6.11: sshUser and privateKey win", json_output(user="root", port=2002, host="docker0", hostname="127.0.0.1",
                                                       private_key="/home/u/.bakerx/baker_rsa", sshUser="vagrant",
                                                       privateKey="/home/u/.bakerx/insecure_private_key"),
     False, ("vagrant", "127.0.0.1", 2002, HOME / "insecure_private_key")),
    ("no image.txt: alpine defaults", json_output(port=2002, host="con0", hostname="127.0.0.1"),
     False, ("root", "127.0.0.1", 2002, HOME / "baker_rsa")),
    ("no image.txt: vagrant box defaults", json_output(port=2004, host="docker0", hostname="127.0.0.1"),
     True, ("vagrant", "127.0.0.1", 2004, HOME / "insecure_private_key")),
    ("0.9.0 kvm: private_key null", json_output(user="root", port="2022", host="con0", hostname="127.0.0.1", private_key=None),
     False, ("root", "127.0.0.1", 2022, HOME / "baker_rsa")),
    ("coloured, after a warning line", f"{RED}note{END}\n" + json_output(user="root", port=2002, hostname="127.0.0.1"),
     False, ("root", "127.0.0.1", 2002, HOME / "baker_rsa")),
])
def test_ssh_info_json_of_each_version(case, output, vagrant, expected):
    info = complete_ssh_info(parse_ssh_json(output), vagrant_box=vagrant, bakerx_home=HOME)
    assert (info.user, info.hostname, info.port, info.key) == expected


@pytest.mark.parametrize("output", ["", "Host con0\n    HostName 127.0.0.1\n", "{not json"])
def test_ssh_info_without_json_is_a_target_error(output):
    with pytest.raises(TargetError, match="no JSON SSH details"):
        parse_ssh_json(output)


@pytest.mark.parametrize("port", [None, "", "abc", 0, 70000])
def test_unusable_port_is_a_target_error(port):
    with pytest.raises(TargetError, match="no usable SSH port"):
        complete_ssh_info({"port": port}, vagrant_box=False, bakerx_home=HOME)


# --- errors printed with exit status 0 ----------------------------------------------------------

@pytest.mark.parametrize("printed, kind, message", [
    ("Could not locate VM called 'con0'", "locate", "bakerx has no VM called 'con0'."),
    ("alpine3.9-simple image not found", "image", "bakerx has no image 'alpine3.9-simple'."),
    ("Could not find supported image in /home/u/.bakerx/.persist/images/bionic", "unsupported-image",
     "bakerx found no image file that its provider can boot in /home/u/.bakerx/.persist/images/bionic."),
    ("provider hyperv is unknown or not suppported.", "provider", "bakerx does not know the provider 'hyperv'."),
    ("Could not find required VBoxManage executable on your path.", "vboxmanage",
     "VirtualBox is not installed: bakerx cannot find VBoxManage."),
    ("VBoxManage: error: VT-x/AMD-V hardware acceleration is not enabled on this host", "virtualisation",
     "VirtualBox cannot start the VM: hardware virtualisation (VT-x/AMD-V) is not enabled."),
    ("Error: vm con0 does not exist", "missing", "bakerx has no VM called 'con0'."),
    ("Error: Running virtualization software inside Windows Subsystem for Linux is not supported.", "wsl",
     "bakerx refuses to run inside WSL (Windows Subsystem for Linux)."),
])
@pytest.mark.parametrize("colour", [False, True])
def test_each_bakerx_error_message_becomes_one_line_with_a_hint(printed, kind, message, colour):
    text = f"Creating con0 using vbox...\n{RED + printed + END if colour else printed}\nmore output\n"
    error = recognise(text, "con0")
    assert isinstance(error, BakerxError) and error.kind == kind
    assert error.message == message
    assert error.hint and "\n" not in error.message + error.hint and "\x1b" not in error.message + error.hint


def test_unsupported_image_hint_names_the_image_to_delete():
    error = recognise("Could not find supported image in /home/u/.bakerx/.persist/images/bionic\n")
    assert error.hint.endswith("bakerx delete image bionic")


@pytest.mark.parametrize("output", [
    RUN_OUTPUT,
    json_output(user="root", port=2002, host="con0", hostname="127.0.0.1", private_key="/k"),
    "vm named con0 deleted.\n",
    "Host con0\n    HostName 127.0.0.1\n    Port 2002\n    user root\n    StrictHostKeyChecking no\n    LogLevel QUIET\n\n",
    "Downloading image https://github.com/ottomatica/slim/releases/download/images/alpine3.9-simple-vbox.iso\n",
])
def test_ordinary_output_is_not_an_error(output):
    assert recognise(output) is None


@pytest.mark.parametrize("coloured, plain", [
    (f"{RED}Could not locate VM called 'con0'{END}", "Could not locate VM called 'con0'"),
    (f"{PINK}The VM is now ready.{END}", "The VM is now ready."),
    ("\x1b[?25l\x1b[2K\x1b[1G⠋ Waiting for VM network\x1b[?25h", "⠋ Waiting for VM network"),
    ("\x1b[1m\x1b[4mhttps://www.virtualbox.org\x1b[24m\x1b[22m\r", "https://www.virtualbox.org"),
    ("\x1b]8;;https://x\x07link\x1b]8;;\x07", "link"),
])
def test_ansi_sequences_are_stripped(coloured, plain):
    assert strip_ansi(coloured) == plain


# --- running bakerx ---------------------------------------------------------------------------------

def python_command(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_known_error_stops_bakerx_at_once(tmp_path):
    """bakerx keeps waiting for SSH after VirtualBox failed: the error line must end it."""
    pid_file = tmp_path / "pid"
    code = (f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
            "print('Creating con0 using vbox...', flush=True); "
            "print('VBoxManage: error: VT-x/AMD-V hardware acceleration is not enabled', flush=True); time.sleep(60)")
    with pytest.raises(BakerxError) as error:
        run_bakerx(python_command(code), timeout=50, vm="con0")
    # Waiting out the stand-in's sleep would end in the 50 s timeout's own error, not this one.
    assert error.value.kind == "virtualisation"
    assert not Path(f"/proc/{pid_file.read_text()}").exists()


def test_a_bakerx_that_hangs_is_stopped_at_the_timeout():
    with pytest.raises(TargetError, match=r"did not finish within 1 s"):
        run_bakerx(python_command("import time; time.sleep(30)"), timeout=1)


def test_exit_status_and_output_without_colours_come_back():
    status, output = run_bakerx(python_command(f"print({RED + 'ready' + END!r}); print('no newline', end=''); raise SystemExit(1)"), 30)
    assert (status, output) == (1, "ready\nno newline")


# --- choosing -----------------------------------------------------------------------------------

def test_auto_uses_bakerx_only_when_it_answers_and_says_why():
    said = []
    assert choose("auto", None, {"command": str(STANDIN)}, said.append) == "bakerx"
    assert choose("auto", None, {"command": "no-such-bakerx"}, said.append) == "qemu"
    assert said == ["--provider auto: using bakerx 0.9.0, which is installed and working",
                    "--provider auto: using the built-in qemu VM (bakerx is not installed (no 'no-such-bakerx' on PATH))"]
    assert choose("auto", "root@h", {"command": str(STANDIN)}, said.append) == "ssh"


def test_bakerx_with_host_is_a_usage_error():
    with pytest.raises(UsageError, match="--host cannot be combined with --provider bakerx"):
        choose("bakerx", "root@h")


# --- host keys ------------------------------------------------------------------------------------

def test_first_key_is_pinned_and_a_changed_one_refused_unless_replaced(tmp_path):
    known_hosts = tmp_path / "bakerx" / "con0" / "known_hosts"
    first, second = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    assert pin_host_key(known_hosts, "127.0.0.1", 2002, first) == "pinned"
    assert pin_host_key(known_hosts, "127.0.0.1", 2002, first) == "same"
    with pytest.raises(HostKeyChanged):
        pin_host_key(known_hosts, "127.0.0.1", 2002, second)
    assert pin_host_key(known_hosts, "127.0.0.1", 2003, second) == "pinned"  # per port
    assert pin_host_key(known_hosts, "127.0.0.1", 2002, second, replace=True) == "replaced"
    assert oct(known_hosts.stat().st_mode & 0o777) == "0o600"
    # OpenSSH reads the file, and the printed command forgets exactly one pin.
    assert subprocess.run(["ssh-keygen", "-F", "[127.0.0.1]:2002", "-f", str(known_hosts)], capture_output=True).returncode == 0
    subprocess.run(forget_command(known_hosts, "127.0.0.1", 2002), shell=True, check=True, capture_output=True)
    assert subprocess.run(["ssh-keygen", "-F", "[127.0.0.1]:2002", "-f", str(known_hosts)], capture_output=True).returncode == 1
    assert pin_host_key(known_hosts, "127.0.0.1", 2003, second) == "same"


def test_fetched_host_key_is_the_servers(sshd, tmp_path):
    key = fetch_host_key("127.0.0.1", sshd.port, tmp_path / "known_hosts")
    assert f"{key.get_name()} {key.get_base64()}" == " ".join(sshd.host_key.with_suffix(".pub").read_text().split()[:2])


def test_nothing_listening_is_a_target_error(tmp_path):
    with pytest.raises(TargetError, match="No SSH server answered at 127.0.0.1:1"):
        fetch_host_key("127.0.0.1", 1, tmp_path / "known_hosts", timeout=2)


# --- OpenSSH config -------------------------------------------------------------------------------

def test_ssh_config_of_a_running_and_a_stopped_vm_is_accepted_by_openssh(sshd, tmp_path):
    state = tmp_path / "state"
    for vm, port in (("con0", sshd.port), ("docker0", 1)):
        vm_dir = state / "bakerx" / vm
        vm_dir.mkdir(parents=True)
        (vm_dir / "vm.json").write_text(json.dumps({"name": vm, "image": "alpine3.9-simple", "hostname": "127.0.0.1",
                                                    "port": port, "user": sshd.user, "key": str(sshd.client_key)}))
    (state / "bakerx" / "con0" / "known_hosts").write_text(sshd.known_hosts_line)
    text = ssh_config("auto", {"state_dir": str(state)}, {"command": "no-such-bakerx"})
    assert "# docker0.bakerx: stopped; start it with: inv vm.up docker0 --provider bakerx" in text
    config = tmp_path / "ssh_config"
    config.write_text(text)
    parsed = subprocess.run(["ssh", "-G", "-F", str(config), "con0"], capture_output=True, text=True, check=True).stdout
    assert f"\nport {sshd.port}\n" in parsed and f"\nidentityfile {sshd.client_key}\n" in parsed
    login = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "con0.bakerx", "echo in"],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert (login.returncode, login.stdout) == (0, "in\n"), login.stderr


def test_config_paths_are_quoted_and_percent_escaped():
    assert _config_path(Path("/home/a b/100%/key")) == '"/home/a b/100%%/key"'
    with pytest.raises(UsageError):
        _config_path(Path('/home/"quoted"/key'))
    with pytest.raises(UsageError):
        _config_word("con0 extra")
