import pytest

from labs.chroot import LAB
from labs.errors import UsageError
from labs.model import CheckResult, LabReport, StepResult

DESIGN_IDS = ["rootfs", "busybox", "symlinks", "chroot-shell", "container-script", "overlay", "proc"]


def test_chroot_lab_has_the_contract_step_ids_in_workshop_order():
    assert LAB.step_ids == DESIGN_IDS


def test_every_step_has_checks_with_message_and_hint_and_unique_ids():
    ids = [check.id for step in LAB.steps for check in step.checks]
    assert len(ids) == len(set(ids))
    for step in LAB.steps:
        assert step.checks and step.explanation and step.title
        for check in step.checks:
            assert check.id.startswith(step.id + ".")
            assert check.message and check.hint


def test_select_from_and_only():
    assert [s.id for s in LAB.select(start="overlay")] == ["overlay", "proc"]
    assert [s.id for s in LAB.select(only="busybox")] == ["busybox"]
    assert [s.id for s in LAB.select(start="busybox", only="symlinks")] == ["symlinks"]
    assert [s.id for s in LAB.select()] == DESIGN_IDS


@pytest.mark.parametrize("kwargs, words", [
    ({"start": "nope"}, "Unknown step 'nope' for --from"),
    ({"only": "nope"}, "Unknown step 'nope' for --only"),
    ({"start": "overlay", "only": "busybox"}, "--only busybox comes before --from overlay"),
])
def test_select_rejects_bad_steps(kwargs, words):
    with pytest.raises(UsageError) as raised:
        LAB.select(**kwargs)
    assert words in raised.value.message
    assert raised.value.code == 2 and raised.value.hint


def test_report_summary_and_ok():
    report = LabReport("chroot", "h", "qemu", "2026-01-01T00:00:00+00:00")
    report.steps = [StepResult("rootfs", "pass"), StepResult("busybox", "fail")]
    report.checks = [CheckResult("rootfs.dirs", "rootfs", "pass"), CheckResult("busybox.present", "busybox", "fail"),
                     CheckResult("busybox.runs", "busybox", "skip"), CheckResult("x", "busybox", "error")]
    assert report.summary == {"passed": 1, "failed": 1, "skipped": 1, "errors": 1, "points": 0, "max_points": 0}
    assert not report.ok
