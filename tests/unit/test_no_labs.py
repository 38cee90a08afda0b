"""An install whose entry points are missing (made before labs were packages, or code copied without
pip) finds no lab: labkit then says how to register them instead of listing nothing."""

import pytest
from invoke import Context, Exit

from labs import cli


@pytest.fixture
def no_labs(monkeypatch):
    monkeypatch.setattr(cli, "LABS", {})


def test_lab_list_without_labs_says_to_run_setup(no_labs, capsys):
    cli.lab_list(Context())
    out = " ".join(capsys.readouterr().out.split())  # rich wraps it to the terminal
    assert out.startswith("No labs found.") and "run scripts/setup again" in out


def test_an_unknown_lab_without_labs_says_to_run_setup(no_labs):
    with pytest.raises(Exit) as raised:
        cli.lab_reset(Context(), "chroot")
    assert raised.value.code == 2
    assert "Unknown lab 'chroot'." in raised.value.message and "run scripts/setup again" in raised.value.message


def test_an_unknown_lab_names_the_labs_there_are():
    with pytest.raises(Exit) as raised:
        cli.lab_reset(Context(), "nosuch")
    assert "Choose one of: chroot, docker, namespaces." in raised.value.message
