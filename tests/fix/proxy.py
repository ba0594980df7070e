"""A loopback TCP relay the tests put between the FIX initiator and the acceptor.

``freeze()`` swallows traffic both ways without closing anything (a silent peer);
``cut()`` closes every relayed connection at once (a dropped line); ``blocked``
refuses new connections (the broker unreachable) until cleared.
"""
from __future__ import annotations

import socket
import threading


class TcpRelay:
    """Relay 127.0.0.1:``port`` to 127.0.0.1:``upstream_port``."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.frozen = threading.Event()
        self.blocked = threading.Event()
        self.connections: list[socket.socket] = []
        self.accepted = 0
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.blocked.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.accepted += 1
                self.connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not self.frozen.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        if not self.frozen.is_set():
            for sock in (src, dst):
                _close(sock)

    def freeze(self) -> None:
        """Stop relaying (silently drop bytes both ways)."""
        self.frozen.set()

    def thaw(self) -> None:
        """Relay again; connections cut meanwhile stay cut."""
        self.frozen.clear()

    def inject(self, data: bytes) -> None:
        """Send ``data`` to the client side of every relayed connection, as if the broker
        had written it (garbage on the line)."""
        with self._lock:
            clients = self.connections[0::2]
        for sock in clients:
            try:
                sock.sendall(data)
            except OSError:
                pass

    def cut(self) -> None:
        """Close every relayed connection now."""
        with self._lock:
            conns, self.connections = self.connections, []
        for sock in conns:
            _close(sock)

    def close(self) -> None:
        """Stop listening and cut everything."""
        self._closed = True
        _close(self.server)
        self.cut()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
