"""Handing the terminal over: bytes both ways, raw keys, and the terminal restored afterwards.

The "remote program" is the far end of a socket pair; the terminal is a real pseudo-terminal.
"""

import os
import socket
import termios
import threading

import pytest

from labs import terminal


class SocketChannel:
    """The channel methods `attach` uses, over one end of a socket pair."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sizes = []

    def fileno(self):
        return self.sock.fileno()

    def recv(self, size):
        return self.sock.recv(size)

    def sendall(self, data):
        self.sock.sendall(data)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def resize_pty(self, width, height):
        self.sizes.append((width, height))


@pytest.fixture
def tty():
    """(master, slave) of a fresh pseudo-terminal; the slave is the program's terminal."""
    master, slave = os.openpty()
    yield master, slave
    os.close(master)
    os.close(slave)


def remote_program(sock: socket.socket, received: list, master: int) -> threading.Thread:
    """Shows a prompt, which a person reads on the terminal and answers by typing a line; the
    program reads that line (up to a carriage return), answers, and exits."""
    def run():
        sock.settimeout(5)
        try:
            sock.sendall(b"prompt> ")
            screen = b""
            while not screen.endswith(b"prompt> "):
                screen += os.read(master, 100)
            os.write(master, b"ls\r")
            data = b""
            while not data.endswith(b"\r"):
                data += sock.recv(100)
            received.append(data)
            sock.sendall(b"you typed " + data.strip() + b"\r\n")
        finally:
            sock.close()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 65536)
    finally:
        os.set_blocking(fd, True)


def test_keys_go_raw_to_the_remote_and_its_output_to_the_terminal(tty):
    master, slave = tty
    before = termios.tcgetattr(slave)
    local, far = socket.socketpair()
    received = []
    program = remote_program(far, received, master)
    terminal.attach(SocketChannel(local), slave, slave)
    program.join(5)
    # Raw mode: Enter arrives as the \r typed, not echoed or turned into \n by the local terminal.
    assert received == [b"ls\r"]
    assert read_all(master) == b"you typed ls\r\n"
    assert termios.tcgetattr(slave) == before
    local.close()


def test_the_terminal_is_restored_when_the_connection_breaks(tty):
    _, slave = tty
    before = termios.tcgetattr(slave)

    class Broken(SocketChannel):
        def recv(self, size):
            raise OSError("Socket is closed")

    local, far = socket.socketpair()
    far.sendall(b"x")
    with pytest.raises(OSError):
        terminal.attach(Broken(local), slave, slave)
    assert termios.tcgetattr(slave) == before
    local.close()
    far.close()


def test_end_of_input_closes_the_channels_input_and_output_still_arrives(tmp_path):
    empty = os.open(os.devnull, os.O_RDONLY)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    local, far = socket.socketpair()

    def echo_until_eof():
        data = b""
        while chunk := far.recv(100):
            data += chunk
        far.sendall(b"eof after %d bytes" % len(data))
        far.close()

    program = threading.Thread(target=echo_until_eof)
    program.start()
    terminal.attach(SocketChannel(local), empty, out)
    program.join(5)
    assert (tmp_path / "out").read_bytes() == b"eof after 0 bytes"
    for fd in (empty, out):
        os.close(fd)
    local.close()


def test_size_of_a_terminal_and_of_something_else(tty, tmp_path):
    _, slave = tty
    termios.tcsetwinsize(slave, (33, 111))
    assert terminal.size(slave) == (111, 33)
    with open(tmp_path / "file", "w") as handle:
        assert terminal.size(handle.fileno()) == (80, 24)
