"""Running a test's own set-up and inspection commands on a lab VM."""

from labs.providers.ssh import Remote


def sh(remote: Remote, script: str) -> str:
    """Run `script` as root on the target; the test fails if it does."""
    result = remote.run(script)
    assert result.ok, result.stdout + result.stderr
    return result.stdout
