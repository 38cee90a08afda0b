"""Every cause a check can name is listed, with its hint, in the students' page and in Troubleshooting;
the catalogue page lists every tested state of tests/integration/test_catalogue.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from labs import chroot, docker

DOCS = Path(__file__).resolve().parents[2] / "docs"
TESTS = Path(__file__).resolve().parents[1] / "integration" / "test_catalogue.py"


def cell(text: str) -> str:
    """Text as a markdown table cell: no HTML tags from <nonce>, no column breaks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|")


def causes_table() -> str:
    """The table of every cause, generated from the labs (paste it into the pages when causes change)."""
    rows = ["| check | what is wrong | what to do |", "|---|---|---|"]
    for lab in (chroot.LAB, docker.LAB):
        for step in lab.steps:
            for check in step.checks:
                for cause in check.causes:
                    rows.append(f"| `{check.id}` | {cell(cause.message)} | {cell(cause.hint)} |")
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("page", ["getting-started.md", "errors.md"])
def test_every_cause_is_listed_with_its_hint(page):
    expected = causes_table()
    assert expected in (DOCS / page).read_text(), f"docs/{page} needs this table (generated):\n{expected}"


def states_under_test() -> list[str]:
    tree = ast.parse(TESTS.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("CHROOT", "DOCKER"):
            names += [key.value for key in node.value.keys]
    return names


def test_the_catalogue_page_lists_every_tested_state():
    text = (DOCS / "catalogue.md").read_text()
    states = states_under_test()
    assert len(states) >= 30
    missing = [name for name in states if f"`{name}`" not in text]
    assert not missing, f"docs/catalogue.md lacks the states {missing}"
