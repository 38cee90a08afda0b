import subprocess

import pytest

from labs.chroot import container_sh_values
from labs.cli import DEFAULTS
from labs.errors import UsageError
from labs.templates import render

WORKSHOP_COMMANDS = [
    "ROOTFS=$1",
    'mkdir -p "$TMP_BASE/$nonce/upper" "$TMP_BASE/$nonce/workdir" "$TMP_BASE/$nonce/overlay"',
    'mount -t overlay -o "lowerdir=$ROOTFS,upperdir=$TMP_BASE/$nonce/upper,workdir=$TMP_BASE/$nonce/workdir" none "$TMP_BASE/$nonce/overlay"',
    'chroot "$TMP_BASE/$nonce/overlay/" /bin/busybox --install -s',
    'PS1="$nonce$PROMPT_SUFFIX" chroot "$TMP_BASE/$nonce/overlay" /bin/busybox sh',
]


def rendered(**overrides):
    settings = {"container_sh": {**DEFAULTS["chroot"]["container_sh"], **overrides}}
    return render("container.sh.j2", container_sh_values(settings, overrides.pop("shebang", "/bin/ash")), "chroot.container_sh")


def test_default_rendering_is_the_workshops_container_sh():
    text = rendered()
    lines = text.splitlines()
    assert lines[0] == "#!/bin/ash"
    assert "TMP_BASE=/tmp" in lines and "PROMPT_SUFFIX='-# '" in lines
    assert "nonce=$(</dev/urandom tr -dc 'A-Za-z0-9_-' | head -c 10)" in lines
    commands = [line for line in lines if line and not line.startswith("#") and not line.startswith(("TMP_BASE", "PROMPT", "nonce"))]
    assert commands == WORKSHOP_COMMANDS


def test_rendering_is_valid_sh():
    subprocess.run(["sh", "-n"], input=rendered(), text=True, check=True)


def test_hostile_values_stay_data(tmp_path):
    marker = tmp_path / "pwned"
    text = rendered(tmp_base=f"/tmp/x $(touch {marker})'\"\n`touch {marker}`", prompt_suffix=f"$(touch {marker}) ")
    # Run only the assignments: if quoting failed, the command substitution would create the marker.
    assignments = "\n".join(line for line in text.splitlines() if line.startswith(("TMP_BASE=", "PROMPT_SUFFIX=")) or line.startswith(("'", "`")))
    script = text.split("# Create a random unique string")[0] + 'printf "%s" "$TMP_BASE"'
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert not marker.exists()
    assert result.stdout == f"/tmp/x $(touch {marker})'\"\n`touch {marker}`"
    assert assignments


@pytest.mark.parametrize("shebang", ["/bin/sh -e; rm -rf /", "bin/sh", "/bin/a b"])
def test_unsafe_shebang_is_refused(shebang):
    with pytest.raises(UsageError) as raised:
        rendered(shebang=shebang)
    assert "interpreter" in raised.value.message


def test_missing_value_names_the_key():
    with pytest.raises(UsageError) as raised:
        render("container.sh.j2", {"shebang": "/bin/sh", "tmp_base": "/tmp", "nonce_length": 10}, "chroot.container_sh")
    assert "prompt_suffix" in raised.value.message
    assert "chroot.container_sh.prompt_suffix" in raised.value.hint


def test_nonce_length_must_be_a_number():
    with pytest.raises(UsageError):
        rendered(nonce_length="10; touch /tmp/x")
