"""A check's verdict from its output: the cause it names, its evidence, and steps that wait for others."""

import pytest

from labs import chroot, docker
from labs.model import Cause, Check, Lab, Step
from labs.runner import EVIDENCE_LINES, judge

CHECK = Check("busybox.runs", "true", "generic message", "generic hint",
              causes=(Cause("empty", "the file is empty", "download it again"),))
STEP = Step("busybox", "Busybox", "", lambda ctx: None, (CHECK,))


def test_a_named_cause_replaces_the_generic_message_and_hint_and_its_line_is_not_evidence():
    result = judge(CHECK, STEP, False, ["rootfs/bin/busybox is empty (0 bytes)", "labkit-cause empty"], 0.1)
    assert (result.status, result.message, result.hint) == ("fail", "the file is empty", "download it again")
    assert result.detail == "rootfs/bin/busybox is empty (0 bytes)"


def test_without_a_known_cause_the_generic_message_stays_and_the_last_lines_are_the_evidence():
    output = [f"line {n}" for n in range(20)] + ["", "labkit-cause unknown-key"]
    result = judge(CHECK, STEP, False, output, 0.1)
    assert (result.message, result.hint) == ("generic message", "generic hint")
    assert result.detail.splitlines() == [f"line {n}" for n in range(20 - EVIDENCE_LINES, 20)]


def test_a_passing_check_that_names_a_cause_passes_with_a_warning():
    result = judge(CHECK, STEP, True, ["saw this", "labkit-cause empty"], 0.1)
    assert (result.status, result.message, result.hint, result.detail) == ("pass", "the file is empty",
                                                                           "download it again", "saw this")
    plain = judge(CHECK, STEP, True, ["first", "last"], 0.1)
    assert (plain.message, plain.hint, plain.detail) == ("", "", "last")


@pytest.mark.parametrize("lab", [chroot.LAB, docker.LAB], ids=lambda lab: lab.name)
def test_every_cause_a_check_script_prints_is_declared_with_a_message_and_hint(lab):
    for step in lab.steps:
        for check in step.checks:
            printed = check.script + (check.probe.script if check.probe else "")  # or the probe it judges
            for cause in check.causes:
                assert cause.message and cause.hint and f"labkit-cause {cause.key}" in printed, (check.id, cause.key)


def test_a_step_may_only_need_earlier_steps():
    later = Step("later", "Later", "", lambda ctx: None, (), needs=("first",))
    first = Step("first", "First", "", lambda ctx: None, ())
    Lab("ok", "OK", (first, later))
    with pytest.raises(ValueError, match="needs"):
        Lab("bad", "Bad", (later, first))


def test_container_script_does_not_wait_for_busybox():
    steps = {step.id: step for step in chroot.LAB.steps}
    assert steps["container-script"].needs == ()
    assert set(steps["overlay"].needs) == {"symlinks", "container-script"}
