"""Tasks for `inv` in a checkout; the installed `labkit` command runs the same collection."""

from labs.cli import ns  # noqa: F401  (invoke looks for `ns`)
