"""An enterprise network on loopback, for tests: a private CA made by `openssl` at test time,
TLS and mutual-TLS upstreams serving the provider simulator, and an HTTP CONNECT proxy that
counts what it carried (and may demand credentials).

Not a test module.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass
class PKI:
    """Files of a private CA and what it signed (all PEM)."""

    folder: Path

    def path(self, name: str) -> str:
        return str(self.folder / name)

    def text(self, name: str) -> str:
        return (self.folder / name).read_text()


def make_pki(folder: Path) -> PKI:
    """A CA (`ca.pem`), a server certificate for localhost/127.0.0.1 (`server.pem`,
    `server.key`), one for another name (`other.pem`, `other.key`), and a client CA
    (`client-ca.pem`) with a client certificate (`client.pem`, `client.key`)."""
    folder.mkdir(parents=True, exist_ok=True)

    def ca(name: str, subject: str) -> None:
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", subject,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=folder,
        )  # fmt: skip

    def leaf(name: str, subject: str, issuer: str, extensions: str) -> None:
        (folder / f"{name}.ext").write_text(extensions)
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", subject, cwd=folder,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey",
            f"{issuer}.key", "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
            "-extfile", f"{name}.ext", cwd=folder,
        )  # fmt: skip

    ca("ca", "/O=Meshgate Test/CN=Meshgate Test Private CA")
    ca("client-ca", "/O=Meshgate Test/CN=Meshgate Test Client CA")
    server = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    leaf("server", "/O=Meshgate Test/CN=localhost", "ca", server)
    other = "subjectAltName=DNS:other.invalid\nextendedKeyUsage=serverAuth\n"
    leaf("other", "/O=Meshgate Test/CN=other.invalid", "ca", other)
    leaf(
        "client",
        "/O=Meshgate Test/CN=meshgate-client",
        "client-ca",
        "extendedKeyUsage=clientAuth\n",
    )
    return PKI(folder)


class TLSUpstream:
    """The provider simulator served over TLS (optionally asking for a client certificate)."""

    def __init__(self, app, certfile: str, keyfile: str, client_ca: str | None = None) -> None:
        import ssl

        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        options = {}
        if client_ca:
            options = {"ssl_ca_certs": client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="critical",
            access_log=False,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            **options,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started, "the TLS upstream did not start"

    def url(self, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


@dataclass
class Proxy:
    """An HTTP proxy on loopback: CONNECT tunnels and absolute-form plain HTTP, counted.
    With `credentials` ("user:password"), anything else gets 407."""

    credentials: str = ""
    connects: list[str] = field(default_factory=list)  # CONNECT targets
    forwarded: list[str] = field(default_factory=list)  # absolute-form request targets
    refused: int = 0

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", 0)
            )
            self.port = self.server.sockets[0].getsockname()[1]
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        async def shut() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()

    def _authorized(self, head: bytes) -> bool:
        if not self.credentials:
            return True
        token = base64.b64encode(self.credentials.encode()).decode()
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "proxy-authorization":
                return value.strip() == f"Basic {token}"
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        if not self._authorized(head):
            self.refused += 1
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'proxy-authenticate: Basic realm="test"\r\ncontent-length: 0\r\n'
                b"connection: close\r\n\r\n"
            )
            await writer.drain()
            writer.close()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            self.connects.append(target)
            try:
                up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            except OSError:
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await self._pipe(reader, writer, up_reader, up_writer)
            return
        # Absolute form: http://host:port/path; forwarded on a connection of its own.
        self.forwarded.append(target)
        rest = target.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port or 80))
        lines = head.decode("latin-1").split("\r\n")
        kept = [line for line in lines[1:] if not line.lower().startswith("proxy-authorization")]
        up_writer.write((f"{method} /{path} HTTP/1.1\r\n" + "\r\n".join(kept)).encode("latin-1"))
        await self._pipe(reader, writer, up_reader, up_writer)

    async def _pipe(self, reader, writer, up_reader, up_writer) -> None:
        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
