"""labkit's tasks run as a user runs them: `inv` in a process of its own, from this checkout."""

from __future__ import annotations

import signal
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


def default_sigint() -> None:
    """preexec_fn for a child the test will interrupt: Ctrl-C as a terminal would deliver it.

    A test run started in the background by a non-interactive shell (`.ci/run &`) has SIGINT
    ignored, and a Python child that starts with it ignored never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
