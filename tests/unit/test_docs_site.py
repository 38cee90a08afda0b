"""The documentation site builds without a warning, and its pages say what the code does: the tasks and
flags they show exist, the lab pages describe every step and check, the troubleshooting page lists
every error message of labs/, and the report examples are what labs/reports.py writes."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labs import chroot, docker
from labs.cli import ns
from labs.model import CheckResult, LabReport, StepResult
from labs.reports import HostFailure, write_report

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(path for path in DOCS.rglob("*.md") if path.parent == DOCS)


def code_spans(text: str) -> list[str]:
    """Inline code (`...`, or ``...`` around code holding a backtick), whitespace normalized."""
    return [" ".join(match.group(2).split()) for match in re.finditer(r"(`+)(.+?)(?<!`)\1(?!`)", text)]


# --- the site ------------------------------------------------------------------------------------


def test_site_builds_strictly_without_warnings(tmp_path):
    """mkdocs.yml turns broken links and anchors, and pages left out of the nav, into warnings;
    --strict makes any warning fail the build."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_links_into_the_docs():
    """The README's relative links work on GitHub: they name files of the repository."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    relative = [link for link in links if not re.match(r"^[a-z]+:", link)]
    assert any(link.startswith("docs/") for link in relative)
    missing = [link for link in relative if not (ROOT / link).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


# --- tasks and flags -----------------------------------------------------------------------------

COMMAND = re.compile(r"(?<![\w-])(?:inv|labkit) ([a-z][a-z-]*\.[a-z][a-z-]*)((?: +[^\s`|;&#]+)*)")


def documented_commands():
    for path in [*PAGES, ROOT / "README.md"]:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for match in COMMAND.finditer(line):
                yield f"{path.relative_to(ROOT)}:{number}", match.group(1), re.findall(r"(?<!\S)--([a-z][a-z-]*)", match.group(2))


def test_documented_tasks_and_flags_exist():
    problems, seen = [], 0
    for where, name, flags in documented_commands():
        seen += 1
        if name not in ns.task_names:
            problems.append(f"{where}: no task {name}")
            continue
        known = {argument_name.replace("_", "-") for argument in ns[name].get_arguments() for argument_name in argument.names}
        problems += [f"{where}: {name} has no flag --{flag}" for flag in flags if flag not in known]
    assert seen > 50, "the pattern no longer finds the commands on the pages"
    assert not problems, "\n".join(problems)


# --- the labs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("lab", [chroot.LAB, docker.LAB], ids=lambda lab: lab.name)
def test_lab_page_describes_every_step_and_check(lab):
    text = (DOCS / f"{lab.name}-lab.md").read_text()
    headings = re.findall(r"^### (\S+)$", text, flags=re.M)
    assert [heading for heading in headings if heading in lab.step_ids] == lab.step_ids, \
        f"docs/{lab.name}-lab.md needs a '### STEP' section per step, in order: {lab.step_ids}"
    spans = set(code_spans(text))
    missing = [check.id for step in lab.steps for check in step.checks if check.id not in spans]
    assert not missing, f"checks not described in docs/{lab.name}-lab.md: {missing}"


# --- error messages ------------------------------------------------------------------------------


def _pattern(node: ast.expr | None) -> str | None:
    """A regular expression for the text a str constant or f-string makes; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        parts = re.split(r"(\{[^{}]*\})", node.value)  # str.format fields, in bakerx's table of errors
        return "".join(".+" if part.startswith("{") else re.escape(part) for part in parts)
    if isinstance(node, ast.JoinedStr):
        return "".join(re.escape(value.value) if isinstance(value, ast.Constant) else ".+" for value in node.values)
    return None


def _error_classes(trees) -> dict[str, int | None]:
    """LabError and every class derived from it, with the position of `message` among its arguments."""
    classes: dict[str, int | None] = {"LabError": 0}
    grown = True
    while grown:
        grown = False
        for tree in trees:
            for node in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name not in classes):
                bases = [getattr(base, "id", getattr(base, "attr", "")) for base in node.bases]
                parent = next((base for base in bases if base in classes), None)
                if parent is None:
                    continue
                position = classes[parent]
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                        arguments = [argument.arg for argument in item.args.args[1:]]
                        position = arguments.index("message") if "message" in arguments else None
                classes[node.name] = position
                grown = True
    return classes


def error_messages() -> dict[str, str]:
    """{pattern: where} for every message a user can be shown: the message of a LabError (or a class
    derived from it), a step's `failure=(message, hint)`, the runner's own check results, the CLI's
    Exit texts, and bakerx's table of known errors."""
    trees = {path: ast.parse(path.read_text()) for path in sorted((ROOT / "labs").rglob("*.py"))}
    classes = _error_classes(trees.values())
    messages: dict[str, str] = {}
    for path, tree in trees.items():
        for node in ast.walk(tree):
            found: list[ast.expr] = []
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                position = classes.get(name)
                if position is not None and len(node.args) > position:
                    found.append(node.args[position])
                if name == "Exit" and node.args:
                    found.append(node.args[0])
                if name == "CheckResult" and len(node.args) > 3:
                    found.append(node.args[3])
                found += [keyword.value.elts[0] for keyword in node.keywords
                          if keyword.arg == "failure" and isinstance(keyword.value, ast.Tuple)]
            elif (isinstance(node, ast.BoolOp) and isinstance(node.values[0], ast.Name) and node.values[0].id == "failure"
                  and isinstance(node.values[-1], ast.Tuple)):
                found.append(node.values[-1].elts[0])  # the runner's default failure
            elif isinstance(node, ast.Assign) and any(getattr(target, "id", "") == "ERRORS" for target in node.targets):
                found += [entry.elts[2] for entry in node.value.elts]  # bakerx: (kind, pattern, message, hint)
            for message in found:
                pattern = _pattern(message)
                if pattern is None:
                    continue
                pattern = pattern.removeprefix(re.escape("Error: "))
                if len(re.sub(r"\.\+|\\", "", pattern)) < 8:
                    continue  # "Error: {error}": the wrapper that prints the others
                messages.setdefault(pattern, f"{path.relative_to(ROOT)}:{message.lineno}")
    return messages


def test_troubleshooting_lists_every_error_message():
    spans = [span.removeprefix("Error: ") for span in code_spans((DOCS / "errors.md").read_text())]
    messages = error_messages()
    assert len(messages) > 80, "the scan no longer finds the error messages of labs/"
    missing = {where: pattern for pattern, where in messages.items()
               if not any(re.fullmatch(pattern, span) for span in spans)}
    assert not missing, "messages without an example in docs/errors.md:\n" + "\n".join(
        f"{where}: {pattern}" for where, pattern in sorted(missing.items()))


# --- report examples -----------------------------------------------------------------------------

STARTED = "2026-01-12T09:30:00+00:00"
CHECKS = {check.id: check for step in chroot.LAB.steps for check in step.checks}


def _check(check_id: str, status: str, seconds: float = 0.0, detail: str = "") -> CheckResult:
    if status == "skip":
        return CheckResult(check_id, check_id.split(".")[0], status, "Waits for step symlinks, which is not done.")
    check = CHECKS[check_id]
    failed = status == "fail"
    return CheckResult(check_id, check_id.split(".")[0], status, check.message if failed else "",
                       check.hint if failed else "", seconds, detail)


def _ada() -> LabReport:
    """A student who has done the first three steps of the chroot lab."""
    return _awarded(LabReport("chroot", "ada", "ssh", STARTED, mode="check", duration_s=0.412,
                     steps=[StepResult("rootfs", "pass", 0.05), StepResult("busybox", "pass", 0.2),
                            StepResult("symlinks", "pass", 0.06)],
                     checks=[_check("rootfs.dirs", "pass", 0.05, "rootfs has bin, sbin, usr/bin and usr/sbin"),
                             _check("busybox.present", "pass", 0.04), _check("busybox.executable", "pass", 0.04),
                             _check("busybox.runs", "pass", 0.12, "BusyBox v1.31.0 (2019-06-10 17:13:39 CEST) multi-call binary."),
                             _check("symlinks.installed", "pass", 0.06, "applet symlinks installed")]))


def _bob(host: str = "bob") -> LabReport:
    """A student whose rootfs has no busybox yet."""
    return _awarded(LabReport("chroot", host, "ssh", STARTED, mode="check", duration_s=0.318,
                     steps=[StepResult("rootfs", "pass", 0.05), StepResult("busybox", "fail", 0.13),
                            StepResult("symlinks", "skip", 0.0)],
                     checks=[_check("rootfs.dirs", "pass", 0.05, "rootfs has bin, sbin, usr/bin and usr/sbin"),
                             _check("busybox.present", "fail", 0.04, "no file rootfs/bin/busybox"),
                             _check("busybox.executable", "fail", 0.04, "rootfs/bin/busybox is not executable"),
                             _check("busybox.runs", "fail", 0.05, "rootfs/bin/busybox does not run as busybox in the chroot"),
                             _check("symlinks.installed", "skip")]))


def _awarded(report: LabReport) -> LabReport:
    """The report with the chroot lab's default points, as the runner gives them."""
    report.award(chroot.LAB, {})
    return report


DAN = HostFailure("dan", "Cannot connect to root@10.0.0.8:22: No route to host.")


def report_examples(directory: Path) -> dict[str, str]:
    """The files `--report` writes for the examples of docs/reports.md."""
    runs = {"one-host.json": ([_bob("root@10.0.0.6:22")], False), "class.json": ([_ada(), DAN], True),
            "class.xml": ([_bob(), DAN], True), "class.csv": ([_ada(), _bob(), DAN], True),
            "gradescope.json": ([_bob("con0")], False), "classroom.json": ([_bob("con0")], False),
            "prairielearn.json": ([_bob("con0")], False)}
    examples = {}
    for name, (results, whole_class) in runs.items():
        fmt = name.split(".")[0] if name.split(".")[0] in ("gradescope", "classroom", "prairielearn") else None
        write_report(directory / name, "chroot", results, whole_class=whole_class, fmt=fmt)
        with open(directory / name, encoding="utf-8", newline="") as written:
            examples[name] = written.read()
    return examples


def test_report_examples_are_what_the_code_writes(tmp_path):
    text = (DOCS / "reports.md").read_text() + (DOCS / "grading.md").read_text()
    shown = dict(re.findall(r"<!-- example: (\S+) -->\n```\w*\n(.*?)\n```", text, flags=re.S))
    written = report_examples(tmp_path)
    assert set(shown) == set(written)
    for name, content in written.items():
        assert shown[name] == content.replace("\r\n", "\n").rstrip("\n"), f"the example {name} in docs/"
    assert json.loads(shown["one-host.json"])["checks"][1]["hint"] == CHECKS["busybox.present"].hint
