"""What certificate an upstream presents, for an admin's diagnosis of a TLS failure.

`peer_certificate(url, ...)` opens one TLS connection without verifying it (directly or
through the same proxy calls use, the same address check applied), reads the server's
certificate, sends nothing, and closes. Its subject and issuer tell an admin which CA to
trust (a TLS-inspecting proxy's, a private one) or which name the certificate is for.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from .base import AddressCheck, ConnectError
from .proxy import Proxies, read_connect_answer


@dataclass(frozen=True)
class PeerCertificate:
    subject: str
    issuer: str
    names: tuple[str, ...] = ()

    def describe(self) -> str:
        text = f"the server's certificate is for {self.subject}, issued by {self.issuer}"
        if self.names:
            text += f" (names: {', '.join(self.names[:5])})"
        return text


def _parse(der: bytes) -> PeerCertificate:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    names: tuple[str, ...] = ()
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(name.value) for name in alt)
    except x509.ExtensionNotFound:
        pass
    return PeerCertificate(cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), names)


async def peer_certificate(
    url: str,
    *,
    proxies: Proxies | None = None,
    address_check: AddressCheck | None = None,
    timeout: float = 10.0,
) -> PeerCertificate | None:
    """The certificate an https URL's server presents, unverified; None if it shows none."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or 443
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    proxy = (proxies or Proxies.none()).for_origin("https", host, port)

    async def open_() -> asyncio.StreamWriter:
        if proxy is None:
            target = host
            if address_check is not None:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                target = address_check(list(infos))[0][4][0]
            _, writer = await asyncio.open_connection(
                target, port, ssl=context, server_hostname=host
            )
            return writer
        infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
            request = f"CONNECT {host}:{port} HTTP/1.1\r\nhost: {host}:{port}\r\n"
            await loop.sock_sendall(sock, request.encode("latin-1") + proxy.authorization + b"\r\n")
            status, _ = await read_connect_answer(lambda: loop.sock_recv(sock, 4096))
            if status != 200:
                raise ConnectError(f"proxy refused ({status})")
            _, writer = await asyncio.open_connection(sock=sock, ssl=context, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        return writer

    writer = await asyncio.wait_for(open_(), timeout)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
    return _parse(der) if der else None
