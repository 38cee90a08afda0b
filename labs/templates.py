"""Rendering the files a lab writes on the target (container.sh, Dockerfile) with jinja2.

Templates use StrictUndefined, so a missing value is an error rather than an empty string, and the
`sh` filter quotes every value that lands in shell code.
"""

import re
import shlex

import jinja2

from .errors import UsageError
from .resources import resource

_INTERPRETER = re.compile(r"^/[A-Za-z0-9._/-]+$")


def _interpreter(path: str) -> str:
    """A shebang line cannot be quoted, so only a plain absolute path is accepted."""
    if not _INTERPRETER.match(str(path)):
        raise UsageError(f"'{path}' cannot be used as a script interpreter.",
                         "Give an absolute path made of letters, digits, '.', '_', '-' and '/', e.g. /bin/sh.")
    return str(path)


def _integer(value) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise UsageError(f"'{value}' is not a whole number.", "Set a number in the configuration.") from None


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["sh"] = lambda value: shlex.quote(str(value))
    environment.filters["int"] = _integer
    return environment


def render(name: str, values: dict, config_section: str) -> str:
    """Render templates/`name`; a value it needs but did not get is a configuration error."""
    values = dict(values)
    if "shebang" in values:
        values["shebang"] = _interpreter(values["shebang"])
    try:
        return _environment().get_template(name).render(**values)
    except jinja2.UndefinedError as error:
        missing = re.search(r"'([^']+)' is undefined", str(error))
        key = missing.group(1) if missing else str(error)
        raise UsageError(f"The template {name} needs a value for '{key}'.",
                         f"Set {config_section}.{key} in invoke.yaml (or the matching INVOKE_ variable).") from None
