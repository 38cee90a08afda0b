"""docs/benchmarks.md is written by scripts/bench from templates/benchmarks.md.j2: the template must
render from the figures the bench produces (every row of its table, and the run's conditions), with
each target said met or missed as the figures say. Rendered here from made-up figures, not timed."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    loader = importlib.machinery.SourceFileLoader("labkit_bench", str(ROOT / "scripts" / "bench"))
    spec = importlib.util.spec_from_loader("labkit_bench", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def result(bench, **figures) -> dict:
    values = {key: 2.0 for key, _, _ in bench.ROWS} | figures
    return {
        "machine": {"cores": 2, "cpu": "a CPU", "python": "3.11", "kernel": "6.1", "date": "2026-11-30T08:00:00+00:00",
                    "accel": "tcg"},
        "rounds": 5, "statistic": "median", "figures": values, "samples": {},
        "conditions": {
            "load_before": [0.1, 0.1, 0.1], "load_after": [0.2, 0.2, 0.2], "qemu_processes_before": 0, "seconds": 600,
            "other_vms_cpu_s": {}, "first_up_con0_s": 4.5, "first_up_docker0_s": 5.5,
            "check_phases": {"labkit": {"connect_s": 0.2, "remote_commands_s": 0.4, "longest_check_s": 0.3},
                             "testinfra": {"connect_s": 0.2}},
            "class": {"parallel": 32, "one_way_delay_ms": 25, "sshd_servers": 20, "student_work": {"seconds": 0.2},
                      "series": {"standin": {}, "real": {}}},
        },
    }


def test_the_page_shows_every_figure_and_says_which_targets_are_met(bench, tmp_path):
    figures = result(bench, check_chroot_s=0.71, class_ratio_50_1=3.4)
    page = tmp_path / "benchmarks.md"
    bench.write_page(figures, page, tmp_path / "img", tmp_path / "benchmarks.json")
    text = page.read_text()
    assert "{{" not in text and "{%" not in text
    for label, value, target, met in bench.table(figures):
        assert f"| {label.replace('  ', '&nbsp;&nbsp;')} | {value} |" in text, label
    assert "**check.chroot in process: 0.71 s against ≤ 1 s, met.**" in text
    assert "**Class check, 50 / 1 students with VMs of their own: 3.40x against ≤ 3, missed.**" in text
    assert "(img/check-vs-testinfra.png)" in text and "[benchmarks.json](benchmarks.json)" in text


def test_a_figure_the_template_needs_but_the_run_lacks_is_an_error(bench, tmp_path):
    figures = result(bench)
    del figures["figures"]["class_real_ratio_50_1"]
    with pytest.raises(KeyError):
        bench.write_page(figures, tmp_path / "benchmarks.md", tmp_path / "img", tmp_path / "benchmarks.json")
