"""Labs written as folders: `lab.yaml` (validated against labs/lab.schema.json, JSON Schema 2020-12),
their shell as `.sh` files and their generated files as jinja2 templates, compiled into the same
Lab/Step/Check model as the Python labs, so that the runner, reporters and providers treat both alike.

Every problem of a folder is one line `FILE: FIELD: what is wrong` (FIELD as `steps[2].checks[0].hint`);
loading raises UsageError (exit 2) with all of them.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

from .errors import UsageError
from .model import Check, Lab, Probe, Step
from .resources import resource
from .runner import StepContext
from .templates import _environment, render

LAB_FILE = "lab.yaml"
_SCRIPT_FILE = re.compile(r"^[A-Za-z0-9._/-]+\.sh$")


@lru_cache(maxsize=1)
def schema() -> dict:
    """The JSON Schema of lab.yaml (labs/lab.schema.json)."""
    return json.loads((Path(__file__).parent / "lab.schema.json").read_text())


def _field(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _problem(error: jsonschema.ValidationError) -> tuple[str, str]:
    """(field, what is wrong) of a schema error, naming the missing or unknown field itself."""
    path = list(error.absolute_path)
    if error.validator == "required":
        path.append(re.search(r"'([^']+)'", error.message).group(1))
        return _field(path), "required"
    if error.validator == "additionalProperties":
        unknown = re.findall(r"'([^']+)'", error.message.split("(")[-1])
        return _field(path + unknown[:1]), "unknown field (not in the lab format)"
    if error.validator == "pattern":
        return _field(path), f"{error.instance!r} does not match {error.validator_value}"
    return _field(path) or "(top)", error.message


def _script(folder: Path, value: str, where: str, problems: list[str]) -> str:
    """The shell of a `script` value: the text of FILE.sh in the folder, or the value itself."""
    if not _SCRIPT_FILE.match(value):
        return value
    path = (folder / value).resolve()
    if folder.resolve() not in path.parents or not path.is_file():
        problems.append(f"{folder / LAB_FILE}: {where}: no file {value} in {folder}")
        return ""
    return path.read_text()


def read(folder: Path) -> dict:
    """lab.yaml of `folder`, validated; raises UsageError listing every problem, one per line."""
    source = folder / LAB_FILE
    try:
        data = yaml.safe_load(source.read_text())
    except OSError as error:
        raise UsageError(f"{source}: cannot be read ({error.strerror}).", "Give a folder that holds a lab.yaml.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(top)"
        raise UsageError(f"{source}: {where}: not YAML ({getattr(error, 'problem', error)})",
                         "Fix the YAML syntax.") from None
    validator = jsonschema.Draft202012Validator(schema())
    problems = [f"{source}: {field}: {message}" for field, message in
                sorted({_problem(error) for error in validator.iter_errors(data)})]
    if not problems:
        problems = _cross_check(source, data)
    if problems:
        raise UsageError("\n".join(problems), f"Fix {source}; its format: docs/lab-format.md.")
    return data


def _cross_check(source: Path, data: dict) -> list[str]:
    """What a schema cannot say: unique ids, and `needs` naming earlier steps."""
    problems, steps, checks = [], [], set()
    for number, step in enumerate(data["steps"]):
        if step["id"] in steps:
            problems.append(f"{source}: steps[{number}].id: duplicate step id {step['id']!r}")
        for need in step.get("needs", []):
            if need not in steps:
                problems.append(f"{source}: steps[{number}].needs: {need!r} is not an earlier step")
        steps.append(step["id"])
        for index, check in enumerate(step["checks"]):
            if check["id"] in checks:
                problems.append(f"{source}: steps[{number}].checks[{index}].id: duplicate check id {check['id']!r}")
            checks.add(check["id"])
    return problems


def load(folder: Path | str) -> Lab:
    """The Lab of a lab folder; UsageError (exit 2) when lab.yaml or a file it names is wrong."""
    folder = Path(folder)
    data = read(folder)
    problems: list[str] = []
    library = _script(folder, data["library"], "library", problems) + "\n" if "library" in data else ""

    def script(value: str, where: str) -> str:
        return library + _script(folder, value, where, problems)

    steps = []
    for number, spec in enumerate(data["steps"]):
        where = f"steps[{number}]"
        for index, item in enumerate(spec.get("install", [])):
            if not (folder / item["template"]).is_file():
                problems.append(f"{folder / LAB_FILE}: {where}.install[{index}].template: no file {item['template']} in {folder}")
        checks = tuple(Check(check["id"], script(check["script"], f"{where}.checks[{index}].script"),
                             check["message"].strip(), check["hint"].strip(),
                             probe=Probe(check["probe"], script(check["probe"], f"{where}.checks[{index}].probe"))
                             if "probe" in check else None)
                       for index, check in enumerate(spec["checks"]))
        steps.append(Step(spec["id"], spec["title"], spec["explanation"].strip(),
                          _action(folder, data["name"], spec.get("install", []), library,
                                  _script(folder, spec["solve"], f"{where}.solve", problems)),
                          checks, interactive=spec.get("interactive", False), destructive=spec.get("destructive", False),
                          demonstration=spec.get("demonstration", False),
                          shell=script(spec["shell"], f"{where}.shell") if "shell" in spec else "",
                          points=spec.get("points", 0), needs=tuple(spec.get("needs", []))))
    cleanup = script(data["cleanup"], "cleanup") if "cleanup" in data else ""
    reset = script(data["reset"], "reset") if "reset" in data else ""
    if problems:
        raise UsageError("\n".join(problems), f"Fix {folder / LAB_FILE}; its format: docs/lab-format.md.")
    templates = dict(data.get("variables", {}))
    return Lab(name=data["name"], title=data["title"], steps=tuple(steps), cleanup=cleanup, reset=reset,
               variables=lambda settings, workdir: _variables(settings, workdir),
               defaults={"vm": data.get("vm", "con0"), "workdir": data.get("workdir", ""), "variables": templates})


def _variables(settings: dict, workdir: str) -> dict[str, str]:
    """The lab's variables: each setting `<lab>.variables.NAME` rendered with the work directory."""
    return {name: render_variable(str(value), {"workdir": workdir}) for name, value in settings["variables"].items()}


def render_variable(text: str, values: dict) -> str:
    """A variable's value from lab.yaml, a jinja2 template (StrictUndefined) of `values`."""
    return _environment().from_string(text).render(**values)


def _action(folder: Path, lab: str, install: list[dict], library: str, solve: str):
    """A step's action: render and install its templates, then run its solve script."""

    def action(ctx: StepContext) -> None:
        for item in install:
            values = {**item.get("values", {}), "settings": ctx.settings, "variables": ctx.variables}
            text = render(item["template"], values, lab, directory=str(folder))
            ctx.reporter.command(ctx.step, f"cat > {item['dest']}    # rendered from {item['template']}")
            ctx.install_file(text.encode(), item["dest"], mode=int(item.get("mode", "644"), 8),
                             show=f"chmod {item.get('mode', '644')} {item['dest']}")
        ctx.sh(library + solve, show=solve)

    return action


def folder_labs(paths: list[str], base: Path | None = None) -> list[Path]:
    """Every lab folder (a directory holding lab.yaml) directly under each of `paths`; a relative
    path is taken from `base` (the current directory). A path that does not exist is an error."""
    base = base or Path.cwd()
    found = []
    for entry in paths:
        directory = (base / Path(entry).expanduser()).resolve()
        if not directory.is_dir():
            raise UsageError(f"labs.paths: {entry} is not a directory (from {base}).",
                             "Fix labs.paths in invoke.yaml: directories whose subdirectories hold lab.yaml.")
        if (directory / LAB_FILE).is_file():
            found.append(directory)
        found.extend(sorted(child for child in directory.iterdir() if (child / LAB_FILE).is_file()))
    return found


def builtin(name: str) -> Lab:
    """A lab folder shipped inside labkit (labs/folders/NAME)."""
    return load(resource("labs", "folders", name))


SCAFFOLD = "_new"


def scaffold(folder: Path, name: str) -> Lab:
    """Make the lab folder `folder` for a lab `name` from labs/folders/_new, and load it to prove it valid.
    UsageError for a bad name or a folder that exists."""
    if not re.match(schema()["properties"]["name"]["pattern"], name):
        raise UsageError(f"'{name}' cannot be a lab name.", "Use lower case letters, digits and _, starting with a letter.")
    if folder.exists():
        raise UsageError(f"{folder} exists already.", "Choose another name, or another place with --dir.")
    source = resource("labs", "folders", SCAFFOLD)
    folder.mkdir(parents=True)
    for item in sorted(source.iterdir()):
        if item.suffix == ".sh":
            (folder / item.name).write_text(item.read_text())
    values = {"name": name, "title": f"The {name} lab"}
    (folder / LAB_FILE).write_text(render("lab.yaml.j2", values, name, directory=str(source)))
    return load(folder)
