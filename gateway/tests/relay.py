"""A TCP relay the outage tests put between a gateway and PostgreSQL or Redis.

Not a test itself. `kill()` cuts every connection through it and refuses new ones (a
server that went away), `freeze()` stops passing bytes either way while keeping the
connections open (a network that stopped answering), `resume()` brings it back. The
shared servers behind it are never touched.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class Relay:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._dead = False
        self._frozen = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    # --- what tests use -----------------------------------------------------------------

    def kill(self) -> None:
        """Cut every connection and refuse new ones until `resume()`."""
        with self._lock:
            self._dead = True
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            _close(*pair)

    def freeze(self) -> None:
        """Pass nothing either way (connections stay open) until `resume()`."""
        self._frozen.set()

    def resume(self) -> None:
        with self._lock:
            self._dead = False
        self._frozen.clear()

    def close(self) -> None:
        self._closed = True
        self.kill()
        with contextlib.suppress(OSError):
            self._listener.close()

    # --- the relay ----------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                dead = self._dead
            if dead:
                _close(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(
                target=self._pump, args=(client, server), name="relay-pump", daemon=True
            ).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: server, server: client}
        try:
            while True:
                if self._frozen.is_set():
                    self._frozen_wait()
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.05)
                for sock in readable:
                    if self._frozen.is_set():
                        break
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            _close(client, server)
            with self._lock:
                if (client, server) in self._pairs:
                    self._pairs.remove((client, server))

    def _frozen_wait(self) -> None:
        threading.Event().wait(0.05)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
