"""Lab folders that ship inside labkit; each is registered as an entry point of `labkit.labs`."""

from ..folder import builtin
from ..model import Lab


def namespaces() -> Lab:
    """The namespaces and cgroups lab (labs/folders/namespaces)."""
    return builtin("namespaces")
