"""docs/configuration.md lists every configuration key: every key the code has a default for, and
every key the code reads, and nothing else.

The keys the code reads are found in its syntax tree: subscripts, attributes and `.get("...")` of the
variables that hold (part of) the configuration, such as `ctx.settings["busybox"]["url"]` in
labs/chroot.py or `config.target.connect_timeout` in labs/cli.py, and the variables of the templates.
Which part of the configuration a variable holds is said in HOLDERS, per module (and function);
a configuration-like variable the table does not know fails the test, so that no read goes unseen.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jinja2.meta
import pytest

from labs.cli import DEFAULTS
from labs.templates import _environment

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
CODE = ROOT / "labs"
TEMPLATES = ROOT / "templates"
# Nested recipe tables are documented as a whole.
WHOLE = {"vm.images", "vm.vms", "chroot.points", "docker.points", "namespaces.variables"}

# (module, function or "*" for all of the module, variable) -> the configuration prefixes it holds
# ("" the whole configuration; two prefixes when it holds either lab's section; [] when it is not configuration).
HOLDERS: dict[tuple[str, str, str], list[str]] = {
    ("cli.py", "*", "config"): [""],
    ("cli.py", "*", "settings"): ["chroot", "docker", "namespaces"],
    ("cli.py", "render_container_sh", "settings"): ["chroot"],
    ("cli.py", "render_dockerfile", "settings"): ["docker"],
    ("chroot.py", "*", "settings"): ["chroot"],
    ("docker.py", "*", "settings"): ["docker"],
    ("model.py", "*", "settings"): ["chroot", "docker"],
    ("grading.py", "*", "vm_settings"): ["vm"],
    ("folder.py", "*", "settings"): ["namespaces"],
    ("providers/__init__.py", "*", "vm_settings"): ["vm"],
    ("providers/__init__.py", "*", "bakerx_settings"): ["bakerx"],
    ("providers/qemu.py", "*", "settings"): ["vm"],
    ("providers/vmimage.py", "*", "settings"): ["vm"],
    ("providers/cloudimage.py", "*", "settings"): ["vm"],
    ("providers/imagecache.py", "*", "settings"): ["vm"],
    ("cli.py", "cache_table", "vm_settings"): ["vm"],
    ("providers/bakerx.py", "*", "settings"): ["bakerx"],
    ("providers/bakerx.py", "*", "spec"): ["bakerx.vms.*"],
    ("setup.py", "*", "vm_settings"): ["vm"],
    ("setup_bakerx_ssh.py", "*", "bakerx_settings"): ["bakerx"],
}
# Variables that look like configuration holders wherever they appear; `x.settings` and `x.config` too.
HOLDER_NAME = re.compile(r"^(config|settings|\w+_settings)$")
# Templates and the section their variables come from.
TEMPLATE_SECTIONS = {"container.sh.j2": "chroot.container_sh", "Dockerfile.j2": "docker.dockerfile",
                     # Per-VM values (labs.providers.cloudimage.seed_values), no configuration.
                     "cloud-init-user-data.j2": None, "cloud-init-meta-data.j2": None}
# Templates filled from a run's results (a class check, scripts/bench), not from settings.
REPORT_TEMPLATES = {"class-page.html.j2", "benchmarks.md.j2"}
# Values the code reads from a settings dict that are not configuration keys, and where they come from.
NOT_CONFIGURATION = {
    "chroot.state_dir": "added by labs.cli._lab_settings from vm.state_dir",
    "docker.state_dir": "added by labs.cli._lab_settings from vm.state_dir",
    "namespaces.state_dir": "added by labs.cli._lab_settings from vm.state_dir",
    "docker.dockerfile.base_image": "filled in by labs.docker.dockerfile_values from docker.images.base",
}
DICT_METHODS = {"get", "items", "keys", "values", "copy", "update", "setdefault", "pop"}


def keys(tree, prefix=""):
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in WHOLE:
            yield from keys(value, name + ".")
        else:
            yield name


def documented() -> set[str]:
    return set(re.findall(r"^\| `([a-z0-9_.]+)` \|", DOC.read_text(), flags=re.M))


# --- the keys the code reads -------------------------------------------------------------------------


def _holder(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and node.attr in ("settings", "config"):
        return node.attr
    return None


def _chain(node: ast.expr, parents: dict, names: set[str]) -> tuple[str, list[str]] | None:
    """(holder variable, keys) when `node` reads into a configuration holder (a variable matching
    HOLDER_NAME or in `names`), else None; a key that is not a constant is `*`."""
    if isinstance(node, ast.Subscript):
        inner = _chain(node.value, parents, names)
        if inner is None:
            return None
        key = node.slice.value if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str) else "*"
        return inner[0], inner[1] + [key]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
        inner = _chain(node.func.value, parents, names)
        if inner is None:
            return None
        argument = node.args[0]
        key = argument.value if isinstance(argument, ast.Constant) and isinstance(argument.value, str) else "*"
        return inner[0], inner[1] + [key]
    if isinstance(node, ast.Attribute):
        holder = _holder(node)
        if holder and isinstance(node.value, (ast.Name, ast.Attribute)) and not _chain(node.value, parents, names):
            return holder, []
        inner = _chain(node.value, parents, names)
        called = isinstance(parents.get(node), ast.Call) and parents[node].func is node
        if inner is None or called or node.attr in DICT_METHODS:
            return None
        return inner[0], inner[1] + [node.attr]
    if isinstance(node, ast.Name) and (HOLDER_NAME.match(node.id) or node.id in names):
        return node.id, []
    return None


def reads_in_source(source: str, module: str, holders=None) -> tuple[dict[str, list[str]], list[str]]:
    """The configuration keys `source` reads ({key: [module:line, ...]}) and the reads through a
    holder variable that `holders` does not place."""
    holders = HOLDERS if holders is None else holders
    tree = ast.parse(source)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    functions = {}
    for function in (node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))):
        for node in ast.walk(function):
            functions.setdefault(node, function.name)  # the outermost function wins; nested ones rarely matter
    names = {variable for (place, _, variable) in holders if place == module}
    reads: dict[str, list[str]] = {}
    unknown = []
    for node in ast.walk(tree):
        if not isinstance(getattr(node, "ctx", ast.Load()), ast.Load):
            continue  # a store (settings["x"] = ...) is not a read
        found = _chain(node, parents, names)
        if not found or not found[1]:
            continue
        holder, path = found
        function = functions.get(node, "*")
        prefixes = holders.get((module, function, holder), holders.get((module, "*", holder), False))
        if prefixes is False:
            unknown.append(f"{module}:{node.lineno}: {holder}[{']['.join(path)}] in {function}")
            continue
        for prefix in prefixes or []:
            key = ".".join(part for part in [prefix, *path] if part)
            reads.setdefault(key, []).append(f"{module}:{node.lineno}")
    return reads, unknown


def template_reads() -> dict[str, list[str]]:
    environment = _environment()  # the labs' own, with their filters
    reads: dict[str, list[str]] = {}
    for template in sorted(TEMPLATES.glob("*.j2")):
        if template.name in REPORT_TEMPLATES:
            continue
        assert template.name in TEMPLATE_SECTIONS, f"{template.name}: add its configuration section to TEMPLATE_SECTIONS"
        if TEMPLATE_SECTIONS[template.name] is None:
            continue
        for name in jinja2.meta.find_undeclared_variables(environment.parse(template.read_text())):
            reads.setdefault(f"{TEMPLATE_SECTIONS[template.name]}.{name}", []).append(f"templates/{template.name}")
    return reads


def code_reads() -> tuple[dict[str, list[str]], list[str]]:
    reads: dict[str, list[str]] = template_reads()
    unknown: list[str] = []
    for path in sorted(CODE.rglob("*.py")):
        found, strangers = reads_in_source(path.read_text(), str(path.relative_to(CODE)))
        for key, places in found.items():
            reads.setdefault(key, []).extend(places)
        unknown += strangers
    return reads, unknown


def _matches(pattern: str, key: str, *, prefix: bool = False) -> bool:
    """Whether the read `pattern` (`*` for any one part) is `key`, or with `prefix`, begins it."""
    wanted, parts = pattern.split("."), key.split(".")
    if len(wanted) > len(parts) or (not prefix and len(wanted) != len(parts)):
        return False
    return all(want in ("*", part) for want, part in zip(wanted, parts))


@pytest.fixture(scope="module")
def reads():
    found, unknown = code_reads()
    assert not unknown, "configuration read through a variable HOLDERS does not place:\n" + "\n".join(unknown)
    return found


# --- tests -------------------------------------------------------------------------------------------


def test_configuration_reference_lists_every_key():
    assert documented() == set(keys(DEFAULTS))


def test_variables_are_the_invoke_names_of_the_keys():
    for key, variable in re.findall(r"^\| `([a-z0-9_.]+)` \|[^|]*\| `(INVOKE_[A-Z_0-9]+)` \|", DOC.read_text(), flags=re.M):
        assert variable == "INVOKE_" + key.replace(".", "_").upper()


def test_every_key_the_code_reads_is_documented(reads):
    """A read is documented when it names a documented key, a section holding documented keys
    (e.g. `dict(settings["container_sh"])`), or lies inside a table documented as a whole."""
    keys_ = documented()
    undocumented = {}
    for read, places in sorted(reads.items()):
        if read in NOT_CONFIGURATION:
            continue
        if any(_matches(read, key, prefix=True) for key in keys_):
            continue
        if any(_matches(whole, read, prefix=True) for whole in WHOLE & keys_):
            continue
        undocumented[read] = places
    assert not undocumented, f"read by the code but not in docs/configuration.md: {undocumented}"


def test_every_documented_key_is_read_by_the_code(reads):
    unread = sorted(key for key in documented() if not any(_matches(read, key) for read in reads))
    assert not unread, f"documented in docs/configuration.md but read nowhere in labs/ or templates/: {unread}"


def test_the_scanner_sees_every_kind_of_read():
    """The scanner itself: subscripts, attributes, .get(), a dynamic key, templates; no method calls."""
    source = '''
def f(ctx, c, config, vm):
    a = ctx.settings["busybox"]["url"].strip()
    b = c.config.target.connect_timeout
    d = self.settings.get("state_dir") or config.vm.cache_dir
    e = dict(settings["container_sh"])
    g = self.settings["vms"][vm]
    settings["state_dir"] = "written, not read"
    other["x"] = 1
'''
    holders = {("m.py", "*", "settings"): ["chroot"], ("m.py", "*", "config"): [""]}
    found, unknown = reads_in_source(source, "m.py", holders)
    assert set(found) == {"chroot.busybox", "chroot.busybox.url", "target", "target.connect_timeout",
                          "chroot.state_dir", "vm", "vm.cache_dir", "chroot.container_sh", "chroot.vms",
                          "chroot.vms.*"}
    assert not unknown
    _, unknown = reads_in_source("x = bakerx_settings['command']\n", "m.py", {})
    assert unknown == ["m.py:1: bakerx_settings[command] in *"]
    assert template_reads()["chroot.container_sh.nonce_length"] == ["templates/container.sh.j2"]
    assert _matches("bakerx.vms.*.image", "bakerx.vms.con0.image") and not _matches("bakerx.vms.*", "bakerx.vms.con0.image")
