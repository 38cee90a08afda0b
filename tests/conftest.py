import os
import pwd
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sshd import start_sshd  # noqa: E402


@pytest.fixture
def sshd(tmp_path):
    """A real sshd on loopback accepting a fresh key for the current user."""
    server = start_sshd(tmp_path / "sshd", user=pwd.getpwuid(os.getuid()).pw_name)
    yield server
    server.stop()
