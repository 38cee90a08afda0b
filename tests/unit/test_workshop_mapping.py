"""Every line of every code block of the workshop is mapped, in docs/workshop.md, to a lab step that
exists, or says why labkit does something else; and every step of the labs comes from the workshop.

The workshop is read from the repository's copy (docs/workshop/containers-workshop.md), so that the
test runs on a fresh clone; when the course's own file is next to the checkout, the copy must equal it.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from labs import chroot, docker

ROOT = Path(__file__).resolve().parents[2]
WORKSHOP = ROOT / "docs" / "workshop" / "containers-workshop.md"
MAPPING = ROOT / "docs" / "workshop.md"

# The workshop's two parts and the lab that automates each.
LABS = {"Creating a simple container with chroot": chroot.LAB, "Introducing Docker containers": docker.LAB}
# Blocks that are a file's content (container.sh, the Dockerfile), not commands: mapped as a whole.
FILE_STARTS = ("#!", "FROM ")
# Why a line is not run by a step.
REASONS = ("replaced", "not automated", "output")
PROMPT = re.compile(r"^(?:C-)?\$ ")
STEP_LINK = re.compile(r"\[`([^`]+)`\]\(([^)#]+)#([^)]+)\)")


def heading(text: str) -> str:
    """A heading's text as both files write it: the workshop ends some with a full stop."""
    return text.strip().rstrip(".").strip()


def normal(line: str) -> str:
    return " ".join(line.split())


@dataclass
class Block:
    part: str
    section: str
    lines: list[str]
    line_number: int

    @property
    def is_file(self) -> bool:
        return self.ends()[0].startswith(FILE_STARTS)

    def commands(self) -> tuple[list[str], list[str]]:
        """(lines typed, lines that may be output) of a block of commands, prompts removed.

        A block that shows `$ ` prompts is a terminal transcript: `$ ` lines are typed on the
        machine, `# ` lines into a container's root shell, and the other lines are the terminal's
        output (unless the mapping names them as typed). Otherwise every line is typed; `C-$ ` is
        the prompt of the workshop's chroot shell.
        """
        transcript = any(line.startswith("$ ") for line in self.lines)
        typed, other = [], []
        for line in (line.strip() for line in self.lines):
            if not line:
                continue
            if PROMPT.match(line):
                typed.append(normal(PROMPT.sub("", line)))
            elif transcript and line.startswith("# "):
                typed.append(normal(line[2:]))
            elif transcript:
                other.append(normal(line))
            elif not line.startswith("#"):
                typed.append(normal(line))
        return typed, other

    def ends(self) -> tuple[str, str]:
        content = [normal(line) for line in self.lines if line.strip()]
        return content[0], content[-1]


def workshop_blocks(text: str) -> list[Block]:
    """The fenced code blocks of the workshop, each with its part (##) and nearest section heading."""
    blocks, part, section, fence, start = [], "", "", None, 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith("```"):
                blocks.append(Block(part, section, fence, start))
                fence = None
            else:
                fence.append(line)
            continue
        if stripped.startswith("```"):
            fence, start = [], number
        elif match := re.match(r"^(#{2,6}) (.*)$", line):
            level, title = len(match.group(1)), heading(match.group(2))
            if level == 2:
                part, section = title, ""
            else:
                section = title
    assert fence is None, f"unclosed code block from line {start}"
    return blocks


@dataclass
class Row:
    commands: list[str]
    step_cell: str
    line_number: int


@dataclass
class Section:
    rows: list[Row] = field(default_factory=list)

    def rows_for(self, line: str) -> list[Row]:
        return [row for row in self.rows if line in row.commands]


def split_cells(row: str) -> list[str]:
    """A Markdown table row's cells; a `|` inside a code span does not split."""
    cells, current, in_code = [], "", False
    for char in row.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(current.strip())
            current = ""
        else:
            current += char
    return cells + [current.strip()]


def code_spans(cell: str) -> list[str]:
    """The code in a cell: `...` spans, and <code> elements (used where the code holds a `|`)."""
    spans = [match.group(2).strip() for match in re.finditer(r"(`+)(.+?)(?<!`)\1(?!`)", cell)]
    spans += [html.unescape(match) for match in re.findall(r"<code>(.*?)</code>", cell)]
    return [normal(span) for span in spans]


def mapping_sections(text: str) -> dict[tuple[str, str], Section]:
    """The mapping page's tables by (part, section) heading; first column: the workshop's lines."""
    sections: dict[tuple[str, str], Section] = {}
    part = title = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if match := re.match(r"^(#{2,6}) (.*)$", line):
            if len(match.group(1)) == 2:
                part, title = heading(match.group(2)), ""
            else:
                title = heading(match.group(2))
        elif line.startswith("|") and part in LABS and title:
            cells = split_cells(line)
            if cells[0] in ("workshop", "") or set(cells[0]) <= set("-: "):
                continue
            sections.setdefault((part, title), Section()).rows.append(Row(code_spans(cells[0]), cells[1], number))
    return sections


@pytest.fixture(scope="module")
def blocks() -> list[Block]:
    return workshop_blocks(WORKSHOP.read_text())


@pytest.fixture(scope="module")
def sections() -> dict[tuple[str, str], Section]:
    return mapping_sections(MAPPING.read_text())


def test_the_workshop_is_read_as_expected(blocks):
    """Guards the parser: both parts, the two file blocks, prompts and output told apart."""
    assert {block.part for block in blocks} == set(LABS)
    assert [block.ends()[0] for block in blocks if block.is_file] == ["#!/bin/ash", "FROM ubuntu:18.04"]
    typed = {line for block in blocks if not block.is_file for line in block.commands()[0]}
    assert {"touch HELLO.txt", "docker pull ubuntu:18.04", "rm -rf --no-preserve-root /",
            "mount -t proc none /tmp/$nonce/overlay/proc"} <= typed
    other = {line for block in blocks if not block.is_file for line in block.commands()[1]}
    assert "REPOSITORY TAG IMAGE ID CREATED SIZE" in other and "docker images" not in other


def check_step_cell(row: Row, lab, where: str) -> list[str]:
    """Problems with a row's step cell: links to steps of `lab`, or a reason."""
    links = STEP_LINK.findall(row.step_cell)
    if not links:
        if row.step_cell.lower().startswith(REASONS):
            return []
        return [f"{where}: the step cell {row.step_cell!r} names no step and gives no reason ({', '.join(REASONS)})"]
    problems = []
    for step_id, page, anchor in links:
        if step_id not in lab.step_ids:
            problems.append(f"{where}: {step_id!r} is not a step of the {lab.name} lab ({', '.join(lab.step_ids)})")
        if page != f"{lab.name}-lab.md" or anchor != step_id:
            problems.append(f"{where}: {step_id!r} should link to {lab.name}-lab.md#{step_id}, not {page}#{anchor}")
    return problems


def test_every_workshop_line_is_mapped_to_a_step_or_a_reason(blocks, sections):
    problems = []
    for block in blocks:
        section = sections.get((block.part, block.section))
        where = f"workshop line {block.line_number} ({block.part} / {block.section})"
        if section is None:
            problems.append(f"{where}: no table under the heading '{block.section}' in docs/workshop.md")
            continue
        lab = LABS[block.part]
        if block.is_file:
            first, last = block.ends()
            rows = [row for row in section.rows if first in row.commands and last in row.commands]
            if not rows:
                problems.append(f"{where}: no row names the file block by its first and last lines `{first}`, `{last}`")
            for row in rows:
                problems += check_step_cell(row, lab, f"docs/workshop.md:{row.line_number}")
            continue
        typed, other = block.commands()
        for line in typed:
            rows = section.rows_for(line)
            if not rows:
                problems.append(f"{where}: `{line}` is not in the table")
            elif not any(STEP_LINK.search(row.step_cell) or not row.step_cell.lower().startswith("output")
                         for row in rows):
                problems.append(f"{where}: `{line}` is typed, but mapped only as output")
            for row in rows:
                problems += check_step_cell(row, lab, f"docs/workshop.md:{row.line_number}")
        for line in other:
            rows = section.rows_for(line)
            if not rows:
                problems.append(f"{where}: `{line}` (output, or typed) is not in the table")
            for row in rows:
                problems += check_step_cell(row, lab, f"docs/workshop.md:{row.line_number}")
    assert not problems, "\n".join(problems)


def test_every_row_is_a_line_of_its_workshop_section(blocks, sections):
    """No stale rows: what the mapping quotes is in the workshop, under the same heading."""
    lines: dict[tuple[str, str], set[str]] = {}
    for block in blocks:
        known = lines.setdefault((block.part, block.section), set())
        known.update(block.ends() if block.is_file else [line for group in block.commands() for line in group])
    problems = []
    for key, section in sections.items():
        for row in section.rows:
            if not row.commands:
                problems.append(f"docs/workshop.md:{row.line_number}: the first column quotes no workshop line")
            for command in row.commands:
                if command not in lines.get(key, set()):
                    problems.append(f"docs/workshop.md:{row.line_number}: `{command}` is not a line of the workshop's "
                                    f"section {key[1]!r} ({key[0]})")
    assert not problems, "\n".join(problems)


def test_every_step_comes_from_the_workshop(sections):
    named = set()
    for (part, _), section in sections.items():
        for row in section.rows:
            named.update((LABS[part].name, link[0]) for link in STEP_LINK.findall(row.step_cell))
    missing = [f"{lab.name}: {step.id}" for lab in LABS.values() for step in lab.steps if (lab.name, step.id) not in named]
    assert not missing, f"steps that no workshop line maps to: {missing}"
