"""Handing this terminal to a program on the target: demo mode's shells at interactive steps.

Transport-free: `attach` pumps bytes between the local terminal and any channel with paramiko's
channel methods (`recv`, `sendall`, `shutdown_write`, `resize_pty`, `fileno` for select); the SSH
provider opens the channel. The terminal is put in raw mode, so every key (Ctrl-C, arrows, tab)
goes to the remote program, and it is restored however the session ends.

Windows has no termios, tty or SIGWINCH, and its select takes sockets only: there `attach` reads
keys with msvcrt in a thread (a pipe with os.read), turns the console's arrow and editing keys into
the ANSI sequences a remote shell expects, and polls the window size instead of a resize signal.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from typing import Protocol

try:
    import termios
    import tty
except ImportError:  # Windows
    termios = tty = None

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
    if termios is None:
        _attach_threaded(channel, stdin_fd, stdout_fd, _console_keys() if os.isatty(stdin_fd) else None)
        return
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


# The Windows console's second code after a 0xE0/0x00 prefix (msvcrt.getwch), as an ANSI terminal sends it.
CONSOLE_KEYS = {"H": "\x1b[A", "P": "\x1b[B", "M": "\x1b[C", "K": "\x1b[D", "G": "\x1b[H", "O": "\x1b[F",
                "S": "\x1b[3~", "R": "\x1b[2~", "I": "\x1b[5~", "Q": "\x1b[6~"}


def console_key(first: str, read_next) -> str:
    """The text a key sends: a prefixed console key (`first` 0xE0 or 0x00, `read_next` gives its code)
    becomes its ANSI sequence (nothing when unknown); any other character is itself."""
    if first in ("\xe0", "\x00"):
        return CONSOLE_KEYS.get(read_next(), "")
    return first


def _console_keys():
    """A reader of the Windows console's keys (msvcrt): the next key's text, or "" after a short wait."""
    import msvcrt

    def read() -> str:
        if not msvcrt.kbhit():
            time.sleep(0.02)
            return ""
        return console_key(msvcrt.getwch(), msvcrt.getwch)
    return read


def _attach_threaded(channel: Channel, stdin_fd: int, stdout_fd: int, read_key=None) -> None:
    """`attach` without termios or select on files (Windows): input in a thread, from `read_key` (a
    console) or os.read (a pipe); the window size polled between reads of the channel."""
    stop = threading.Event()

    def pump() -> None:
        try:
            while not stop.is_set():
                if read_key:
                    text = read_key()
                    if text:
                        channel.sendall(text.encode())
                    continue
                data = os.read(stdin_fd, CHUNK)
                if not data:
                    channel.shutdown_write()
                    return
                channel.sendall(data)
        except OSError:
            return

    threading.Thread(target=pump, daemon=True).start()
    last = size(stdout_fd)
    try:
        while True:
            readable, _, _ = select.select([channel], [], [], 0.2)
            now = size(stdout_fd)
            if now != last:
                last = now
                channel.resize_pty(*now)
            if readable:
                data = channel.recv(CHUNK)
                if not data:
                    return
                _write_all(stdout_fd, data)
    finally:
        stop.set()
