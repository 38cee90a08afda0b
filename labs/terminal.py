"""Handing this terminal to a program on the target: demo mode's shells at interactive steps.

Transport-free: `attach` pumps bytes between the local terminal and any channel with paramiko's
channel methods (`recv`, `sendall`, `shutdown_write`, `resize_pty`, `fileno` for select); the SSH
provider opens the channel. The terminal is put in raw mode, so every key (Ctrl-C, arrows, tab)
goes to the remote program, and it is restored however the session ends.
"""

from __future__ import annotations

import os
import select
import signal
import termios
import threading
import tty
from typing import Protocol

CHUNK = 32768


class Channel(Protocol):
    def fileno(self) -> int: ...

    def recv(self, size: int) -> bytes: ...

    def sendall(self, data: bytes) -> None: ...

    def shutdown_write(self) -> None: ...

    def resize_pty(self, width: int, height: int) -> None: ...


def size(fd: int) -> tuple[int, int]:
    """(columns, rows) of the terminal on `fd`; 80x24 when it is not a terminal."""
    try:
        columns, rows = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return columns or 80, rows or 24


def attach(channel: Channel, stdin_fd: int, stdout_fd: int) -> None:
    """Wire the terminal to `channel` until the remote side closes it.

    Keys go to the channel, its output comes to the terminal, and a resized window resizes the
    remote pty. When stdin ends (not a terminal), the channel's input is closed and its output
    still flows until it ends.
    """
    raw = os.isatty(stdin_fd)
    saved = termios.tcgetattr(stdin_fd) if raw else None
    resized = threading.Event()
    # Signal handlers can only be set from the main thread; elsewhere the size stays as it was.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGWINCH, lambda *_: resized.set()) if in_main else None
    try:
        if raw:
            tty.setraw(stdin_fd)
        inputs: list = [channel, stdin_fd]
        while True:
            readable, _, _ = select.select(inputs, [], [], 0.2)
            # After select, which a resize interrupts: the new size goes out before the keys that follow it.
            if resized.is_set():
                resized.clear()
                channel.resize_pty(*size(stdout_fd))
            if channel in readable:
                data = channel.recv(CHUNK)
                if not data:
                    return
                _write_all(stdout_fd, data)
            if stdin_fd in readable:
                data = os.read(stdin_fd, CHUNK)
                if data:
                    channel.sendall(data)
                else:
                    channel.shutdown_write()
                    inputs.remove(stdin_fd)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        if in_main:
            signal.signal(signal.SIGWINCH, previous)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
