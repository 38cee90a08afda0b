"""Private keys never leave their files: not in any output (also with `inv --debug`, which turns on
paramiko's logging), not in the VM's logs or labkit's state files, not in any report. Every file that
holds one is mode 600 in a directory only its owner can enter.

The tasks run against the session's con0 and a real sshd on loopback, over the qemu and ssh providers,
and include failures (a refused key, a class host that cannot be reached) whose messages name keys.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests import cli
from tests.sshd import free_port, keygen, start_sshd

pytestmark = pytest.mark.vm

VM = "con0"


def key_fragments(path: Path) -> list[str]:
    """Pieces of a private key that would give it away: its base64 lines, and 24-character runs of
    them (a line may be wrapped or cut when printed). An OpenSSH private key file embeds the public
    key, which may rightly be shown (known_hosts, ssh-config): pieces found in it do not count."""
    public = Path(f"{path}.pub").read_text() if Path(f"{path}.pub").exists() else ""
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and "PRIVATE KEY" not in line]
    body = "".join(lines)
    pieces = lines + [body[start:start + 24] for start in range(0, max(len(body) - 24, 1), 12)]
    return [piece for piece in pieces if piece not in public]


@pytest.fixture(scope="module")
def runs(con0, qemu_settings, tmp_path_factory):
    """Every task's output, and the files it left: (outputs, files to search, private key files)."""
    _, target = con0
    base = tmp_path_factory.mktemp("secrets")
    state = Path(qemu_settings["state_dir"])
    env = dict(os.environ, INVOKE_VM_STATE_DIR=str(state), INVOKE_VM_CACHE_DIR=qemu_settings["cache_dir"],
               COLUMNS="120")
    wrong_key = keygen(base / "wrong_key")
    server = start_sshd(base / "sshd", user="root")
    inventory = base / "class.yaml"
    inventory.write_text(
        f"hosts:\n  - {{name: ada, host: 127.0.0.1, port: {target.port}, user: root, key: '{target.key_path}'}}\n"
        f"  - {{name: bob, host: 127.0.0.1, port: {server.port}, user: root, key: '{wrong_key}'}}\n"
        f"  - {{name: cy, host: 127.0.0.1, port: {free_port()}, user: root, key: '{server.client_key}'}}\n")
    host = f"root@127.0.0.1:{target.port}"
    tasks = [
        ["vm.up", "con0"], ["vm.status"], ["vm.ssh-config"],
        ["lab.chroot", "--busybox", "/bin/busybox", "--report", str(base / "lab.json")],
        ["lab.chroot", "--demo", "--only", "overlay", "--force", "--report", str(base / "lab.xml")],
        ["--debug", "check.chroot", "--report", str(base / "check.json")],
        ["--debug", "check.chroot", "--provider", "ssh", "--host", host, "--key", str(target.key_path),
         "--report", str(base / "ssh.xml")],
        ["--debug", "check.chroot", "--provider", "ssh", "--host", host, "--key", str(wrong_key)],
        ["--debug", "check.chroot", "--provider", "ssh", "--host", f"root@127.0.0.1:{server.port}",
         "--key", str(target.key_path)],
        ["check.chroot", "--inventory", str(inventory), "--report", str(base / "class.csv")],
        ["--debug", "check.chroot", "--inventory", str(inventory), "--report", str(base / "class.json")],
    ]
    outputs = []
    try:
        for task in tasks:
            result = cli.labkit(env, *task, timeout=600)
            outputs.append((" ".join(task), result.returncode, result.stdout + result.stderr))
    finally:
        server.stop()
    files = [path for root in (state, base) for path in Path(root).rglob("*")
             if path.is_file() and path.suffix not in (".img", ".qcow2") and path.parent != server.directory]
    # The files that are private keys are where keys belong (the session's other VMs have theirs too);
    # every other file is searched.
    keys = [path for path in files if path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")]
    keys += [server.client_key, server.host_key]
    texts = [path for path in files if path not in keys]
    return outputs, texts, keys


def test_the_tasks_ran_their_course(runs):
    """The searched outputs are the real thing: successes, a refused key and an unreachable class host."""
    outputs, _, _ = runs
    codes = [code for _, code, _ in outputs]
    # With --debug a refused login ends in its traceback (exit 1) instead of the one-line error (exit 3).
    assert codes == [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1], outputs
    assert "paramiko.transport" in outputs[5][2]
    assert all("Traceback" in output and "answered and refused the login" in output for _, _, output in outputs[7:9])


def test_no_private_key_appears_in_any_output_log_or_report(runs):
    outputs, texts, keys = runs
    fragments = {fragment: key for key in keys for fragment in key_fragments(key)}
    assert all(sum(owner == key for owner in fragments.values()) >= 5 for key in keys), "too little to look for"
    assert len(texts) >= 8, texts
    searched = [(name, output) for name, _, output in outputs] + [(str(path), path.read_text(errors="replace")) for path in texts]
    for name, text in searched:
        assert "PRIVATE KEY" not in text, name
        leaked = [str(fragments[fragment]) for fragment in fragments if fragment in text]
        assert not leaked, f"{name} shows part of {leaked[0]}"


def test_files_holding_private_keys_are_for_their_owner_only(runs, qemu_settings):
    _, _, keys = runs
    state = Path(qemu_settings["state_dir"])
    made = [key for key in keys if state in key.parents]
    assert {key.name for key in made} >= {"id_ed25519", "ssh_host_ed25519_key"}
    for path in made + list(state.glob("vms/*/seed.img")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.stat().st_uid == os.getuid()
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, path.parent
