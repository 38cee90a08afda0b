"""Rendering the files a lab writes on the target (container.sh, Dockerfile) with jinja2.

Templates use StrictUndefined, so a missing value is an error rather than an empty string, and the
`sh` filter quotes every value that lands in shell code.
"""

import json
import re
import shlex

import jinja2

from .errors import UsageError
from .resources import resource

_INTERPRETER = re.compile(r"^/[A-Za-z0-9._/-]+$")
# [registry[:port]/]name[:tag][@digest], as docker accepts it.
_IMAGE_REF = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
                        r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$")
_DOCKER_WORD = re.compile(r"^[A-Za-z0-9_./:+-]+$")


def _interpreter(path: str) -> str:
    """A shebang line cannot be quoted, so only a plain absolute path is accepted."""
    if not _INTERPRETER.match(str(path)):
        raise UsageError(f"'{path}' cannot be used as a script interpreter.",
                         "Give an absolute path made of letters, digits, '.', '_', '-' and '/', e.g. /bin/sh.")
    return str(path)


def _image_ref(value) -> str:
    if not _IMAGE_REF.match(str(value)):
        raise UsageError(f"'{value}' is not a Docker image name.", "Write it as NAME[:TAG], e.g. ubuntu:18.04 or registry:5000/team/app:1.")
    return str(value)


def _docker_word(value) -> str:
    """A Dockerfile value: plain when it is a plain word, else double-quoted with $, " and \\ escaped."""
    text = str(value)
    if "\n" in text or "\r" in text:
        raise UsageError(f"The Dockerfile value {text!r} spans several lines.", "Give it on one line.")
    if _DOCKER_WORD.match(text):
        return text
    return '"' + re.sub(r'([\\"$])', r"\\\1", text) + '"'


def _instruction(value) -> str:
    """An extra Dockerfile instruction is the instructor's own line, but only ever one line."""
    text = str(value)
    if "\n" in text or "\r" in text or not text.strip():
        raise UsageError(f"The extra Dockerfile instruction {text!r} is not one line.",
                         "Give each instruction as its own list item, on one line.")
    return text


def _integer(value) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise UsageError(f"'{value}' is not a whole number.", "Set a number in the configuration.") from None


def _environment(autoescape: bool = False, directory: str = "") -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory or str(resource("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=autoescape,
    )
    environment.filters["sh"] = lambda value: shlex.quote(str(value))
    environment.filters["int"] = _integer
    environment.filters["image_ref"] = _image_ref
    environment.filters["docker_word"] = _docker_word
    environment.filters["instruction"] = _instruction
    # A JSON string or list is valid YAML (1.2 is a superset of JSON): quoting for cloud-init's files.
    environment.filters["yaml"] = json.dumps
    return environment


def render_html(name: str, values: dict) -> str:
    """Render the HTML page templates/`name` with every value HTML-escaped (autoescape), since
    values such as a student's program output are untrusted; StrictUndefined as for the others."""
    return _environment(autoescape=True).get_template(name).render(**values)


def render(name: str, values: dict, config_section: str, directory: str = "") -> str:
    """Render templates/`name` (or `directory`/`name`, a lab folder's template); a value it needs
    but did not get is a configuration error."""
    values = dict(values)
    if "shebang" in values:
        values["shebang"] = _interpreter(values["shebang"])
    try:
        return _environment(directory=directory).get_template(name).render(**values)
    except jinja2.UndefinedError as error:
        missing = re.search(r"'([^']+)' is undefined", str(error))
        key = missing.group(1) if missing else str(error)
        raise UsageError(f"The template {name} needs a value for '{key}'.",
                         f"Set {config_section}.{key} in invoke.yaml (or the matching INVOKE_ variable).") from None
