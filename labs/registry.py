"""Which labs exist: those installed packages register in the entry-point group `labkit.labs`
(labkit's own chroot, docker and namespaces labs among them) and the lab folders under the
directories of the setting `labs.paths`.

An entry point names either a Lab or a callable that returns one (how a packaged lab folder is
published: `labs.folder.load` of its directory). Two labs of one name are a UsageError (exit 2).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

from . import folder
from .errors import UsageError
from .model import Lab

GROUP = "labkit.labs"


def installed() -> list[tuple[Lab, str]]:
    """(lab, where it comes from) for every entry point of the group, in name order."""
    found = []
    for point in sorted(entry_points(group=GROUP), key=lambda point: point.name):
        value = point.load()
        lab = value if isinstance(value, Lab) else value()
        if lab.name != point.name:
            raise UsageError(f"The entry point {point.name} = {point.value} gives a lab named {lab.name}.",
                             "Register each lab under its own name.")
        found.append((lab, f"entry point {point.value}"))
    return found


def discover(paths: list[str], base: Path | None = None) -> dict[str, Lab]:
    """Every lab by name: the installed ones, then the folders of `paths` (relative to `base`, the cwd)."""
    labs: dict[str, Lab] = {}
    origins: dict[str, str] = {}
    candidates = installed() + [(folder.load(path), str(path)) for path in folder.folder_labs(paths, base)]
    for lab, origin in candidates:
        if lab.name in labs:
            raise UsageError(f"Two labs are named {lab.name}: {origins[lab.name]} and {origin}.",
                             "Rename one of them (the name field of its lab.yaml).")
        labs[lab.name], origins[lab.name] = lab, origin
    return labs
