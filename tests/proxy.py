"""A TCP forwarder on loopback whose connections a test can cut, as a broken network would."""

from __future__ import annotations

import socket
import threading

from tests.sshd import free_port


class CuttableProxy:
    """Forwards 127.0.0.1:`port` to `target_port`. `cut()` resets every open connection (new ones are
    still forwarded); `close()` also stops listening, so nothing answers any more."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """End every open connection at once, at both ends, mid-stream."""
        with self._lock:
            for end in self._open:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                    end.close()
                except OSError:
                    pass
            self._open.clear()

    def close(self) -> None:
        # A bare close() would leave the port listening while the accept thread still holds it.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed already
            pass
        self._listener.close()
        self.cut()
