"""Every configuration key the code has a default for is documented, and nothing else is."""

import re
from pathlib import Path

from labs.cli import DEFAULTS

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
# Nested recipe tables are documented as a whole.
WHOLE = {"vm.images", "vm.vms"}


def keys(tree, prefix=""):
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in WHOLE:
            yield from keys(value, name + ".")
        else:
            yield name


def test_configuration_reference_lists_every_key():
    documented = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", DOC.read_text(), flags=re.M))
    assert documented == set(keys(DEFAULTS))


def test_variables_are_the_invoke_names_of_the_keys():
    for key, variable in re.findall(r"^\| `([a-z0-9_.]+)` \|[^|]*\| `(INVOKE_[A-Z_0-9]+)` \|", DOC.read_text(), flags=re.M):
        assert variable == "INVOKE_" + key.replace(".", "_").upper()
