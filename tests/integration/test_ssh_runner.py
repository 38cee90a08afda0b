"""The SSH transport and the runner against real sshd processes on loopback (no VM needed).

The toy lab here only touches files in a pytest temporary directory that the sshd's user owns.
"""

import socket
import threading

import pytest

from labs.errors import TargetError, UsageError
from labs.model import Check, Lab, Probe, Step
from labs.providers.ssh import Remote, parse_host, ssh_target
from labs.reporting import SilentReporter
from labs.runner import Runner
from tests.proxy import CuttableProxy
from tests.sshd import keygen, start_sshd


def target_for(sshd, tmp_path, workdir="", key=None):
    return ssh_target(f"{sshd.user}@127.0.0.1:{sshd.port}", str(key or sshd.client_key), tmp_path / "state", workdir=workdir)


def test_run_streams_lines_and_feeds_stdin(sshd, tmp_path):
    remote = Remote(target_for(sshd, tmp_path))
    seen = []
    result = remote.run("while read line; do echo got:$line; done; echo err >&2; exit 3", stdin="a\nb\n", on_line=seen.append)
    assert result.exit_code == 3
    assert result.stdout == "got:a\ngot:b\n"
    # stdout and stderr are separate channels: each keeps its order, not their interleaving.
    assert [line for line in seen if line.startswith("got")] == ["got:a", "got:b"]
    assert sorted(seen) == ["err", "got:a", "got:b"]
    remote.close()


def test_first_host_key_is_pinned_and_a_changed_one_refused(sshd, tmp_path):
    target = target_for(sshd, tmp_path)
    Remote(target).run("true")
    assert target.known_hosts.read_text().split()[1:] == sshd.known_hosts_line.split()[1:]
    assert oct(target.known_hosts.stat().st_mode & 0o777) == "0o600"
    other = keygen(tmp_path / "other_host_key")
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    target.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    with pytest.raises(TargetError) as raised:
        Remote(target).run("true")
    assert "not the one pinned" in raised.value.message
    assert "ssh-keygen -R" in raised.value.hint


def test_strict_target_refuses_an_unpinned_host(sshd, tmp_path):
    from dataclasses import replace
    target = replace(target_for(sshd, tmp_path), strict_host_key=True)
    with pytest.raises(TargetError) as raised:
        Remote(target).run("true")
    assert "never pinned" in raised.value.message


def test_wrong_key_is_a_clear_error(sshd, tmp_path):
    wrong = keygen(tmp_path / "wrong")
    with pytest.raises(TargetError) as raised:
        Remote(target_for(sshd, tmp_path, key=wrong)).run("true")
    assert "answered and refused the login" in raised.value.message
    assert raised.value.code == 3


def test_refused_port_is_named_as_refused(tmp_path, sshd):
    sshd.stop()
    with pytest.raises(TargetError) as raised:
        Remote(target_for(sshd, tmp_path)).run("true")
    assert "Cannot connect" in raised.value.message and "Connection refused" in raised.value.message
    assert raised.value.code == 3


def test_silent_port_is_given_up_after_one_connection(tmp_path, sshd):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    held = []
    threading.Thread(target=lambda: held.append(listener.accept()), daemon=True).start()
    target = ssh_target(f"root@127.0.0.1:{port}", str(sshd.client_key), tmp_path / "state")
    with pytest.raises(TargetError) as raised:
        Remote(target, connect_timeout=2).run("true")
    assert "No SSH server answered" in raised.value.message or "timed out after 2s" in raised.value.message
    assert len(held) == 1  # one connection, given up on: no retry
    listener.close()


def test_world_readable_key_is_refused_before_connecting(tmp_path, sshd):
    sshd.client_key.chmod(0o644)
    with pytest.raises(UsageError) as raised:
        target_for(sshd, tmp_path)
    assert "chmod 600" in raised.value.hint


@pytest.mark.parametrize("spec, expected", [
    ("root@10.0.0.1", ("root", "10.0.0.1", 22)),
    ("vagrant@host.example:2222", ("vagrant", "host.example", 2222)),
    ("lab-vm", ("root", "lab-vm", 22)),
    ("me@[::1]:2200", ("me", "::1", 2200)),
])
def test_parse_host(spec, expected):
    assert parse_host(spec) == expected


@pytest.mark.parametrize("spec", ["root@", "a@b@c", "root@host:99999", "root@host:port", "root host"])
def test_parse_host_rejects_malformed(spec):
    with pytest.raises(UsageError):
        parse_host(spec)


# --- the runner, on a toy lab whose state is files in the workdir ---------------------------------

def toy_lab(log: list) -> Lab:
    def make(name):
        def action(ctx):
            log.append(name)
            ctx.sh(f"touch {name}")
        return action

    return Lab("toy", "Toy lab", cleanup="echo cleaned >> cleanup.log", steps=(
        Step("one", "First", "why one", make("one"), (Check("one.file", "[ -f one ] || { echo no one; exit 1; }", "one missing", "touch one"),)),
        Step("two", "Second", "why two", make("two"), (
            Check("two.file", "[ -f two ]", "two missing", "touch two"),
            Check("two.again", "echo looked; [ -f two ]", "two still missing", "touch two"),
        ), needs=("one",)),
        Step("show", "Demo", "why show", lambda ctx: (log.append("show"), ctx.sh("echo shown")),
             (Check("show.ok", "true", "never", "never"),), demonstration=True, needs=("two",)),
    ))


@pytest.fixture
def workdir(tmp_path):
    path = tmp_path / "student home"
    path.mkdir()
    return path


def test_solve_runs_then_reports_already_done(sshd, tmp_path, workdir):
    log = []
    runner = Runner(toy_lab(log), Remote(target_for(sshd, tmp_path, str(workdir))), SilentReporter(), {})
    first = runner.solve()
    assert log == ["one", "two", "show"]
    assert [(s.id, s.status, s.already_done) for s in first.steps] == [
        ("one", "pass", False), ("two", "pass", False), ("show", "pass", False)]
    second = runner.solve()
    assert log == ["one", "two", "show"]
    assert all(s.already_done for s in second.steps)
    forced = runner.solve(force=True)
    assert log[3:] == ["one", "two", "show"] and not any(s.already_done for s in forced.steps)
    assert (workdir / "cleanup.log").read_text() == "cleaned\n" * 3


def test_solve_stops_at_the_first_failed_check(sshd, tmp_path, workdir):
    lab = toy_lab([])
    broken = Step("two", "Second", "", lambda ctx: ctx.sh("true"), lab.steps[1].checks, needs=("one",))
    lab = Lab("toy", "Toy", (lab.steps[0], broken, lab.steps[2]), cleanup=lab.cleanup)
    report = Runner(lab, Remote(target_for(sshd, tmp_path, str(workdir))), SilentReporter(), {}).solve()
    assert [(s.id, s.status) for s in report.steps] == [("one", "pass"), ("two", "fail"), ("show", "skip")]
    failed = [c for c in report.checks if c.status == "fail"]
    assert {c.id for c in failed} == {"two.file", "two.again"}
    assert failed[1].detail == "looked" and failed[1].hint == "touch two"
    assert (workdir / "cleanup.log").exists()


def test_check_is_one_batch_with_skips_after_a_failed_step(sshd, tmp_path, workdir):
    (workdir / "two").touch()
    remote = Remote(target_for(sshd, tmp_path, str(workdir)))
    report = Runner(toy_lab([]), remote, SilentReporter(), {}).check()
    statuses = {c.id: c.status for c in report.checks}
    assert statuses == {"one.file": "fail", "two.file": "skip", "two.again": "skip", "show.ok": "skip"}
    assert {c.message for c in report.checks[1:]} == {"Waits for step one, which is not done.",
                                                      "Waits for step two, which is not done."}
    assert report.checks[0].detail == "no one"
    assert [s.status for s in report.steps] == ["fail", "skip", "skip"]
    assert sorted(p.name for p in workdir.iterdir()) == ["two"]


def test_a_probe_runs_once_and_every_check_naming_it_judges_its_output(sshd, tmp_path, workdir):
    """The probe counts its runs in a file of the workdir: one run serves checks of two steps, which
    see its lines and exit status; a check without the probe does not wait for it."""
    probe = Probe("count", 'echo run >> probe.log; echo "first line"; echo "seen: $(wc -l < probe.log)"; exit 3')
    lab = Lab("probed", "Probed", steps=(
        Step("a", "A", "", lambda ctx: None, (
            Check("a.seen", 'case "$PROBE" in *"seen: 1"*) echo "$PROBE";; *) exit 1;; esac', "not seen", "-", probe=probe),
            Check("a.plain", "echo plain", "never", "-"),
        )),
        Step("b", "B", "", lambda ctx: None, (
            Check("b.status", '[ "$PROBE_STATUS" -eq 3 ] && echo "status $PROBE_STATUS"', "no status", "-", probe=probe),
            Check("b.fails", 'echo "judged: ${PROBE%%\n*}"; exit 1', "failed as it should", "-", probe=probe),
        )),
    ))
    report = Runner(lab, Remote(target_for(sshd, tmp_path, str(workdir))), SilentReporter(), {}).check()
    verdicts = {c.id: (c.status, c.detail) for c in report.checks}
    assert verdicts == {"a.seen": ("pass", "seen: 1"), "a.plain": ("pass", "plain"),
                        "b.status": ("pass", "status 3"), "b.fails": ("fail", "judged: first line")}
    assert (workdir / "probe.log").read_text() == "run\n"


def test_check_of_a_missing_workdir_says_so(sshd, tmp_path):
    remote = Remote(target_for(sshd, tmp_path, str(tmp_path / "nowhere")))
    report = Runner(toy_lab([]), remote, SilentReporter(), {}).check()
    assert report.checks[0].status == "fail"
    assert "does not exist" in report.checks[0].message


def test_logging_in_again_retries_an_absent_machine_but_not_a_changed_host_key(sshd, tmp_path):
    """After a lost connection, `restore` waits and retries while nothing answers; a different
    machine behind the same address (a new host key) ends it at the first answer."""
    impostor = start_sshd(tmp_path / "impostor", client_key=sshd.client_key, user=sshd.user)
    proxy = CuttableProxy(sshd.port)
    remote = Remote(ssh_target(f"{sshd.user}@127.0.0.1:{proxy.port}", str(sshd.client_key), tmp_path / "state"),
                    reconnect_attempts=3, reconnect_backoff=0.1)
    waits = []
    try:
        assert remote.run("true").ok
        proxy.cut()
        remote.restore(lambda attempt, delay: waits.append(delay))
        assert remote.run("echo back").stdout == "back\n" and waits == [0.1]

        proxy.target_port = impostor.port
        proxy.cut()
        waits.clear()
        with pytest.raises(TargetError, match="is not the one pinned"):
            remote.restore(lambda attempt, delay: waits.append(delay))
        assert waits == [0.1]

        proxy.close()
        waits.clear()
        with pytest.raises(TargetError, match=r"3 attempts to log in again over 0\.7s failed; .*Connection refused"):
            remote.restore(lambda attempt, delay: waits.append(delay))
        assert waits == [0.1, 0.2, 0.4]
    finally:
        remote.close()
        proxy.close()
        impostor.stop()
