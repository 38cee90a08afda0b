"""The setup items as pure functions of injected facts: the platform-specific ones (the accelerator on
Linux, macOS and Windows, VT-x held by Hyper-V or KVM) cannot be met on this machine, so their facts
are handed in; what this machine itself can show is in tests/integration/test_setup.py."""

import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest

from labs import setup, setup_bakerx_ssh as hosts
from labs.providers import qemu
from labs.errors import TargetError
from labs.model import FAIL, PASS, SKIP
from labs.reporters import PlainReporter

VMX = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\n"
NO_VMX = "processor\t: 0\nflags\t\t: fpu vme de pse sse2\n"
HOSTINFO = "Host Information:\n\nProcessor supports HW virtualization: {}\nProcessor supports nested HW virtualization: no\n"


def facts(provider="qemu", vm=None, bakerx=None, vms=None, **known) -> setup.Facts:
    return setup.Facts(setup.SetupScope(provider, vm_settings=vm or {}, bakerx_settings=bakerx or {}, vms=vms), **known)


# -- the accelerator, per platform -------------------------------------------------------------------

ACCEL = {
    # case: (system, machine, vm.accel, vm.arch, more facts, status, words in the message)
    "linux-kvm": ("Linux", "x86_64", "auto", "auto", {"cpuinfo": VMX, "kvm_device": True}, PASS, "KVM: /dev/kvm opens and the CPU has vmx/svm"),
    "linux-no-flag": ("Linux", "x86_64", "auto", "auto", {"cpuinfo": NO_VMX, "kvm_device": True}, PASS, "TCG (software emulation, slow"),
    "linux-no-device": ("Linux", "x86_64", "auto", "auto", {"cpuinfo": VMX, "kvm_device": False}, PASS, "/dev/kvm is missing or this user cannot open it"),
    "linux-tcg-set": ("Linux", "x86_64", "tcg", "auto", {"cpuinfo": VMX, "kvm_device": True}, PASS, "TCG (software emulation), as vm.accel says"),
    "linux-kvm-forced-unusable": ("Linux", "x86_64", "kvm", "auto", {"cpuinfo": NO_VMX, "kvm_device": True}, FAIL, "vm.accel is kvm, but KVM cannot run here: the CPU shows no vmx/svm"),
    "linux-kvm-forced": ("Linux", "x86_64", "kvm", "auto", {"cpuinfo": VMX, "kvm_device": True}, PASS, "KVM"),
    "linux-arm-kvm": ("Linux", "aarch64", "auto", "auto", {"cpuinfo": "", "kvm_device": True}, PASS, "KVM: /dev/kvm opens."),
    "linux-aarch64-guest-emulated": ("Linux", "x86_64", "auto", "aarch64", {"cpuinfo": VMX, "kvm_device": True}, PASS, "because an aarch64 guest on this x86_64 CPU is emulated"),
    "macos-apple-silicon": ("Darwin", "arm64", "auto", "auto", {"hv_support": True}, PASS, "HVF: macOS Hypervisor.framework"),
    "macos-intel": ("Darwin", "x86_64", "auto", "auto", {"hv_support": True}, PASS, "HVF"),
    "macos-x86-guest-on-apple-silicon": ("Darwin", "arm64", "auto", "x86_64", {"hv_support": True}, PASS, "TCG (software emulation, slow"),
    "macos-no-hv": ("Darwin", "arm64", "auto", "auto", {"hv_support": False}, PASS, "kern.hv_support is not 1"),
    "macos-hvf-forced-unusable": ("Darwin", "arm64", "hvf", "auto", {"hv_support": False}, FAIL, "vm.accel is hvf, but Hypervisor.framework cannot run here"),
    "macos-kvm": ("Darwin", "arm64", "kvm", "auto", {"hv_support": True}, FAIL, "KVM exists only on Linux"),
    "windows-whpx": ("Windows", "AMD64", "auto", "auto", {"whpx": True}, PASS, "WHPX: QEMU offers the Windows Hypervisor Platform"),
    "windows-no-whpx": ("Windows", "AMD64", "auto", "auto", {"whpx": False}, PASS, "Windows Hypervisor Platform"),
    "windows-hvf": ("Windows", "AMD64", "hvf", "auto", {"whpx": True}, FAIL, "Hypervisor.framework exists only on Darwin"),
}


@pytest.mark.parametrize("case", list(ACCEL))
def test_accelerator_says_which_and_why(case):
    system, machine, setting, arch, more, status, words = ACCEL[case]
    outcome = setup.item_accelerator(facts(vm={"accel": setting, "arch": arch}, system=system, machine=machine, **more))
    assert outcome[0] == status and words in outcome[1], outcome
    slow = "tcg" in case or "no-" in case or "emulated" in case or "x86-guest" in case
    assert outcome[1].startswith("TCG") == (slow and status == PASS), outcome
    if case == "windows-no-whpx":
        assert "Windows Hypervisor Platform" in outcome[2]


def test_the_item_and_the_provider_make_one_choice():
    """setup's accelerator item explains qemu.choose_accel's answer: no second copy of the decision."""
    found = facts(vm={"accel": "auto", "arch": "auto"}, system="Darwin", machine="arm64", hv_support=True)
    chosen = qemu.choose_accel("auto", found.host_facts())
    assert chosen == qemu.Accel("hvf", "macOS Hypervisor.framework is available (kern.hv_support=1)")
    assert setup.item_accelerator(found)[1] == f"HVF: {chosen.reason}."


def test_macos_is_pointed_to_cloud_images_instead_of_a_build():
    found = facts(vms=["con0"], system="Darwin", machine="arm64", **{"image:chroot": False})
    status, message, hint = setup.item_image(found)
    assert status == FAIL and "mmdebstrap, which runs on Linux only (Darwin here)" in message
    assert "con0: alpine" in hint


def test_a_bad_accel_setting_fails_the_item_with_its_usage_message():
    result = setup.run_item(setup.Item("accelerator", setup.item_accelerator), setup.QEMU_AREAS[1],
                            facts(vm={"accel": "turbo"}, system="Linux", machine="x86_64", cpuinfo=VMX, kvm_device=True))
    assert result.status == FAIL and result.message == "Bad accel setting 'turbo'." and "auto, kvm, hvf, whpx or tcg" in result.hint


def test_the_qemu_binary_follows_the_guest_arch():
    found = facts(vm={"arch": "aarch64"}, system="Linux", machine="x86_64", **{"tool:qemu-system-aarch64": None})
    status, message, hint = setup.item_qemu_binary(found)
    assert status == FAIL and message.startswith("qemu-system-aarch64 not found") and "aarch64 guests" in message
    assert "qemu-system-arm" in hint


# -- VT-x for VirtualBox, per platform ----------------------------------------------------------------

VT = {
    # case: (system, hostinfo answer, extra facts, status, words)
    "linux-ok": ("Linux", "yes", {"cpuinfo": VMX, "kvm_users": {}, "kvm_virt_at_load": False}, PASS, "available to VirtualBox"),
    "vbox-says-no": ("Linux", "no", {"cpuinfo": VMX}, FAIL, "VirtualBox reports no hardware virtualisation"),
    "linux-no-flag": ("Linux", "yes", {"cpuinfo": NO_VMX}, FAIL, "no vmx/svm flag"),
    "linux-kvm-vms-running": ("Linux", "yes", {"cpuinfo": VMX, "kvm_users": {"kvm_intel": 2}, "kvm_virt_at_load": False},
                              FAIL, "KVM holds VT-x/AMD-V (kvm_intel: 2 KVM VMs are running)"),
    "linux-kvm-idle": ("Linux", "yes", {"cpuinfo": VMX, "kvm_users": {"kvm_amd": 0}, "kvm_virt_at_load": False}, PASS, "available"),
    "linux-kvm-virt-at-load": ("Linux", "yes", {"cpuinfo": VMX, "kvm_users": {"kvm_amd": 0}, "kvm_virt_at_load": True},
                               FAIL, "KVM takes it when it loads"),
    "windows-hyper-v": ("Windows", "yes", {"hypervisor_running": True}, FAIL, "Hyper-V is on and holds VT-x"),
    "windows-ok": ("Windows", "yes", {"hypervisor_running": False}, PASS, "available"),
    "macos-ok": ("Darwin", "yes", {}, PASS, "available"),
}


@pytest.mark.parametrize("case", list(VT))
def test_virtualisation_for_virtualbox(case):
    system, answer, extra, status, words = VT[case]
    outcome = hosts.item_virtualisation(facts("bakerx", system=system, vboxmanage="/usr/bin/VBoxManage",
                                              vbox_hostinfo=HOSTINFO.format(answer), **extra))
    assert outcome[0] == status and words in outcome[1], outcome
    if status == FAIL:
        assert "--provider qemu" in outcome[2]


def test_hyper_v_hint_says_how_to_turn_it_off():
    outcome = hosts.item_virtualisation(facts("bakerx", system="Windows", vboxmanage="VBoxManage.exe",
                                              vbox_hostinfo=HOSTINFO.format("yes"), hypervisor_running=True))
    assert "bcdedit /set hypervisorlaunchtype off" in outcome[2]


def test_virtualbox_items_skip_without_vboxmanage_and_under_bakerx_kvm():
    assert hosts.item_virtualisation(facts("bakerx", system="Linux", vboxmanage=None))[0] == SKIP
    kvm = facts("bakerx", bakerx={"provider": "kvm"}, system="Linux")
    assert hosts.item_vboxmanage(kvm)[0] == SKIP and hosts.item_virtualisation(kvm)[0] == SKIP
    missing = hosts.item_vboxmanage(facts("bakerx", system="Linux", vboxmanage=None))
    assert missing[0] == FAIL and missing[1] == "VirtualBox is not installed: VBoxManage is not on PATH."


# -- Node.js, bakerx, images ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, status", [(None, FAIL), ("v10.24.1", FAIL), ("v12.13.9", FAIL), ("v12.14.0", PASS),
                                          ("v20.20.2", PASS)])
def test_node_version(text, status):
    outcome = hosts.item_node(facts("bakerx", node_version=text))
    assert outcome[0] == status, outcome
    if status == FAIL:
        assert "npm install -g ottomatica/bakerx" in outcome[2]
        assert ("older than 12.14" if text else "Node.js is not installed") in outcome[1]


def test_bakerx_item_says_the_argument_order_of_its_version():
    assert "pull <registry> <image>" in hosts.item_bakerx(facts("bakerx", bakerx_version=(0, 6, 3)))[1]
    assert "pull <image> [registry]" in hosts.item_bakerx(facts("bakerx", bakerx_version=(0, 9, 0)))[1]
    failed = hosts.item_bakerx(facts("bakerx", bakerx_version=TargetError("bakerx is not installed.", "Install it.")))
    assert failed == (FAIL, "bakerx is not installed.", "Install it.")


def test_an_image_without_registry_is_not_pullable_before_bakerx_0_7():
    settings = {"vms": {"con0": {"image": "alpine3.9-simple", "registry": ""}}}
    old = facts("bakerx", bakerx=settings, bakerx_version=(0, 6, 3), **{"bakerx_image:alpine3.9-simple": False})
    assert hosts.item_bakerx_images(old)[0] == FAIL
    new = facts("bakerx", bakerx=settings, bakerx_version=(0, 9, 0), **{"bakerx_image:alpine3.9-simple": False})
    assert hosts.item_bakerx_images(new) == (PASS, "To be pulled: alpine3.9-simple from Vagrant Cloud at the first inv vm.up con0 (needs the internet)", "")


# -- memory and disk ---------------------------------------------------------------------------------

def test_memory():
    assert setup.item_memory(facts(mem_available=512 * setup.MIB))[0] == FAIL
    assert setup.item_memory(facts(mem_available=4 * setup.GIB))[0] == PASS
    assert setup.item_memory(facts(system="Darwin", mem_available=None))[0] == SKIP


def test_disk_adds_up_cache_and_state_on_one_filesystem(tmp_path):
    vm = {"cache_dir": str(tmp_path / "cache"), "state_dir": str(tmp_path / "state"), "vms": {"con0": "chroot"}}
    known = {"image:chroot": False, "vm:con0": False}
    enough_for_one = setup.IMAGE_ROOM + setup.VM_ROOM // 2
    same_disk = {f"room:{tmp_path / 'cache'}": setup.Room(tmp_path, 1, enough_for_one, True),
                 f"room:{tmp_path / 'state'}": setup.Room(tmp_path, 1, enough_for_one, True)}
    status, message, hint = setup.item_disk(facts(vm=vm, **known, **same_disk))
    assert status == FAIL and message.startswith(f"Only 2.0 GiB free in the state directory {tmp_path / 'state'}")
    assert "2.5 GiB needed for con0 plus the image builds on the same disk" in message and "vm.state_dir" in hint
    two_disks = {f"room:{tmp_path / 'cache'}": setup.Room(tmp_path, 1, enough_for_one, True),
                 f"room:{tmp_path / 'state'}": setup.Room(tmp_path, 2, enough_for_one, True)}
    assert setup.item_disk(facts(vm=vm, **known, **two_disks))[0] == PASS
    read_only = {**two_disks, f"room:{tmp_path / 'cache'}": setup.Room(tmp_path, 1, enough_for_one, False)}
    assert setup.item_disk(facts(vm=vm, **known, **read_only)) == (
        FAIL, f"The cache directory {tmp_path / 'cache'} is not writable ({tmp_path} is not writable for this user).",
        "Set vm.cache_dir to a writable directory.")


# -- the guard -----------------------------------------------------------------------------------------

def test_guard_names_the_failing_item_and_points_to_check_setup(tmp_path):
    settings = setup.SetupScope("qemu", vm_settings={"state_dir": str(tmp_path)}, vms=["con0"])
    with pytest.raises(TargetError) as raised:
        setup.guard("qemu", setup.QEMU_GUARDS, settings, setup.Facts(settings, **{"tool:qemu-system-x86_64": None}))
    assert raised.value.message.startswith("qemu-system-x86_64 not found")
    assert raised.value.message.endswith("(setup check qemu-binary).")
    assert "inv check.setup" in raised.value.hint and len(str(raised.value).splitlines()) == 2


def test_a_passing_item_says_what_it_found_in_plain_output():
    stream = StringIO()
    found = facts(vms=[], system="Darwin", machine="x86_64", hv_support=False, kvm_device=False, mem_available=None, loopback_port=2222,
        **{f"tool:{tool}": f"/bin/{tool}" for tool in ("qemu-system-x86_64", "qemu-img", "ssh-keygen", "mke2fs")},
        **{"output:qemu-system-x86_64 --version": "QEMU emulator version 9.0.0"})
    report = setup.check_setup(found.scope, PlainReporter(stream), found)
    text = stream.getvalue()
    assert "[accelerator] check accelerator: pass: TCG (software emulation, slow: VMs boot and run several times slower) because macOS says kern.hv_support is not 1" in text
    assert "check memory: skip: Cannot tell the free memory on Darwin" in text
    assert report.lab == "setup" and report.ok and [step.id for step in report.steps] == ["qemu", "accelerator", "image", "resources"]


def test_the_qemu_guard_needs_only_the_standard_library(tmp_path):
    """QemuProvider.up runs the guard where a normal user's system Python may lack paramiko and fabric
    (tests/integration/test_qemu_provider.py boots a VM so): importing it must not pull them in."""
    child = f"""
import sys, types
for blocked in ("paramiko", "fabric", "invoke", "rich"):
    sys.modules[blocked] = None  # an import of it now fails
sys.path.insert(0, {str(Path(setup.__file__).parents[1])!r})
package = types.ModuleType("labs.providers")
package.__path__ = [{str(Path(setup.__file__).parent / "providers")!r}]
sys.modules["labs.providers"] = package
from labs.setup import guard_qemu
try:
    guard_qemu({{"state_dir": {str(tmp_path)!r}, "accel": "turbo"}}, "con0")
except Exception as error:
    print(type(error).__name__, error)
"""
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("UsageError Bad accel setting 'turbo'."), done.stdout + done.stderr
