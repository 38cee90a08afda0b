"""labkit's tasks run as a user runs them: `inv` in a process of its own, from this checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def inv(*args: str) -> list[str]:
    """The command line of `inv ARGS` in this checkout, with the test run's Python."""
    return [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args]


def labkit(env: dict, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """`inv ARGS` run to its end with no stdin, its output captured as text."""
    return subprocess.run(inv(*args), capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
