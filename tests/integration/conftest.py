"""Shared real targets for the integration tests: the QEMU micro VM `con0`, booted once per session."""

import os
import time

import pytest

from labs.providers import vmimage
from labs.providers.qemu import QemuProvider
from labs.providers.ssh import Remote


def progress(message: str) -> None:
    """Show provisioning phases in pytest's output (`-s`, or a failing test's captured log)."""
    print(f"[labkit] {message}", flush=True)


def recording_provider(settings: dict) -> tuple[QemuProvider, list[str]]:
    """A QemuProvider whose progress messages are shown and also kept, for tests that read them."""
    messages: list[str] = []

    def note(message: str) -> None:
        messages.append(message)
        progress(message)
    return QemuProvider(settings, note), messages


def booted(provider: QemuProvider, messages: list[str], vm: str):
    """Boot `vm`, show how long it took to answer SSH, yield (provider, target, messages), then destroy it."""
    started = time.monotonic()
    target = provider.up(vm)
    progress(f"{vm} boot to SSH: {time.monotonic() - started:.0f} s")
    yield provider, target, messages
    provider.destroy(vm)


@pytest.fixture(scope="session")
def qemu_settings(tmp_path_factory):
    """VM settings for the tests: throwaway state, but the user's real image cache so the image is
    built once per machine (LABKIT_TEST_CACHE_DIR points elsewhere)."""
    cache = os.environ.get("LABKIT_TEST_CACHE_DIR") or str(vmimage.default_dir("XDG_CACHE_HOME", ".cache"))
    settings = {"cache_dir": cache, "state_dir": str(tmp_path_factory.mktemp("labkit-state"))}
    if os.environ.get("LABKIT_TEST_BOOT_TIMEOUT"):  # a machine shared with other emulated VMs boots slower
        settings["boot_timeout"] = float(os.environ["LABKIT_TEST_BOOT_TIMEOUT"])
    return settings


def running(qemu_settings: dict, name: str):
    """(provider, SSHTarget) of the VM `name`, booted for the session and destroyed at its end."""
    provider = QemuProvider(qemu_settings, progress)
    yield provider, provider.up(name)
    provider.destroy(name)


@pytest.fixture(scope="session")
def con0(qemu_settings):
    """The chroot lab's VM: Debian, root login."""
    yield from running(qemu_settings, "con0")


@pytest.fixture(scope="session")
def docker0(qemu_settings):
    """The docker lab's VM: Debian with Docker, user vagrant with passwordless sudo."""
    yield from running(qemu_settings, "docker0")


@pytest.fixture(scope="module")
def remote(request):
    """One SSH connection per test module to the VM that the module names in `VM`."""
    _, target = request.getfixturevalue(request.module.VM)
    connection = Remote(target)
    yield connection
    connection.close()
