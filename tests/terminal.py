"""A program on a real pseudo-terminal, driven and read as a person would: for the tests of demo
mode and of the terminal hand-over."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import termios
import time

COLUMNS, ROWS = 120, 40
# CSI and OSC sequences, other two-byte escapes, and carriage returns: what a person does not see.
_INVISIBLE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|\r")


class Terminal:
    """A program on a pseudo-terminal of its own, read as a person sees it (escapes removed)."""

    def __init__(self, argv: list[str], env: dict, stdin_devnull: bool = False):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: size its terminal, then become the program
            try:
                fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
                if stdin_devnull:
                    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.raw = b""
        self.position = 0
        self.status: int | None = None

    @property
    def screen(self) -> str:
        return _INVISIBLE.sub("", self.raw.decode(errors="replace"))

    def _read(self, timeout: float) -> bool:
        """Read what the program wrote; False once it closed the terminal."""
        if not select.select([self.fd], [], [], timeout)[0]:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: every process on the terminal has ended
            data = b""
        self.raw += data
        return bool(data)

    def expect(self, text: str, timeout: float = 180) -> str:
        """Wait until `text` appears after the previous match; returns the screen from there to it."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen
            found = screen.find(text, self.position)
            if found >= 0:
                seen, self.position = screen[self.position:found + len(text)], found + len(text)
                return seen
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(min(remaining, 1.0)):
                raise AssertionError(f"{text!r} did not appear; the screen ends with:\n{screen[-4000:]}")

    def resize(self, rows: int, columns: int) -> None:
        """Resize the window, as a person dragging its corner (the program gets SIGWINCH)."""
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float = 180) -> int:
        """Read to the end of the program's output and return its exit status."""
        deadline = time.monotonic() + timeout
        while self._read(1.0):
            if time.monotonic() > deadline:
                os.kill(self.pid, 9)
                raise AssertionError(f"the program did not end; the screen ends with:\n{self.screen[-4000:]}")
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
            except ProcessLookupError:
                pass
            os.close(self.fd)
