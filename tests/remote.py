"""Running a test's own set-up and inspection commands on a lab VM."""

import shlex

from labs.providers.ssh import Remote


def sh(remote: Remote, script: str) -> str:
    """Run `script` as root on the target; the test fails if it does."""
    result = remote.run(script)
    assert result.ok, result.stdout + result.stderr
    return result.stdout


class ShellRemote(Remote):
    """labkit's SSH transport with `shell` (a command line, e.g. `PATH=/usr/bin /bin/dash`) running each
    script where labkit runs `sh -c`: the scripts meet that shell exactly as they would meet `sh`."""

    def __init__(self, target, shell: str):
        super().__init__(target)
        self.shell = shell

    def _command(self, script: str, root: bool, token: str = "") -> str:
        run = f"LABKIT_RUN={token} " if token else ""
        command = f"env {run}{self.shell} -c {shlex.quote(script)}"
        return f"sudo -n {command}" if root and self.target.user != "root" else command
