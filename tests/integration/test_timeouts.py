"""A command over its timeout is a timeout, however the machine's load orders invoke's threads."""

import time

import fabric.runners
import pytest

from labs.errors import TargetError
from labs.providers.ssh import Remote, ssh_target


def test_a_timeout_is_reported_even_when_invokes_timer_is_slow_to_end(sshd, tmp_path, monkeypatch):
    # invoke closes the channel from its timer thread and calls it a timeout only once that thread
    # has ended; a loaded machine can run the waiting thread first, as this slow timer forces.
    close_channel = fabric.runners.Remote.kill

    def slow_kill(runner):
        close_channel(runner)
        time.sleep(1)

    monkeypatch.setattr(fabric.runners.Remote, "kill", slow_kill)
    remote = Remote(ssh_target(f"{sshd.user}@127.0.0.1:{sshd.port}", str(sshd.client_key), tmp_path / "state"),
                    command_timeout=1)
    with pytest.raises(TargetError) as raised:
        remote.run("sleep 30")
    assert raised.value.message == f"A command on {remote.target.name} did not finish within 1s."
    remote.close()


def test_a_command_over_its_timeout_is_ended_on_the_target(sshd, tmp_path):
    """A timed-out command does not go on unseen: its processes on the target are stopped."""
    finished = tmp_path / "finished"
    remote = Remote(ssh_target(f"{sshd.user}@127.0.0.1:{sshd.port}", str(sshd.client_key), tmp_path / "state"),
                    command_timeout=1)
    with pytest.raises(TargetError):
        remote.run(f"sleep 3; touch {finished}")
    remote.close()
    time.sleep(4)
    assert not finished.exists()
