"""The upstream HTTP client's interface: its errors, its response, and request headers.

Both implementations (`lean`, home-made on httptools; `aio`, aiohttp's client) raise
these errors and return responses of this shape, so an adapter never sees which one
it talks through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

# What `getaddrinfo` gives: (family, type, proto, canonname, sockaddr).
AddrInfo = tuple[Any, ...]
# Sees the addresses a new connection's host resolves to; returns those that may be
# dialled, or raises AddressRefused. The policy is the caller's (see connections).
AddressCheck = Callable[[list[AddrInfo]], list[AddrInfo]]


class TransportError(Exception):
    """The request could not be sent or its answer not read (network, protocol).
    `cause` names a connection failure's class (`dns`, `tls: unknown CA`, ...; see
    `trust.cause`), empty where none is known."""

    cause: str = ""


class ConnectError(TransportError):
    pass


class TimeoutException(TransportError):
    pass


class AddressRefused(ConnectError):
    """The provider's host resolved to an address the address check refuses: nothing sent.
    Its text is the check's reason (no host, no address)."""


class RemoteProtocolError(TransportError):
    pass


class ClosedBeforeAnswer(RemoteProtocolError):
    """A kept-alive connection closed after the request was written, before any byte of
    answer. The provider may have read the request: sending it again is a new attempt."""


class Headers(dict[str, str]):
    """Response headers: lower-cased names, repeated headers joined with ", "."""

    __slots__ = ()


@runtime_checkable
class Response(Protocol):
    """One response. `content` is set for whole responses; streams use `aiter_bytes`, and
    the caller must `aclose()` a streamed response on every exit path."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> bytes: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Client(Protocol):
    """Pooled keep-alive connections per origin, for one event loop."""

    @property
    def is_closed(self) -> bool: ...

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes = b"",
        headers: bytes = b"",
        stream: bool = False,
    ) -> Response:
        """Send a request; `headers` holds header lines made by `encode_headers`."""
        ...

    async def aclose(self) -> None: ...


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """`name: value\\r\\n` lines; refuses a CR or LF in a name or value (header injection)."""
    lines = []
    for name, value in headers.items():
        check_header_text(name)
        check_header_text(value)
        lines.append(f"{name}: {value}\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise ConnectError("a header holds a character HTTP headers cannot carry") from None


def decode_headers(lines: bytes) -> dict[str, str]:
    """The header lines `encode_headers` made, as a dict again."""
    found = {}
    for line in lines.decode("latin-1").split("\r\n"):
        if line:
            name, _, value = line.partition(": ")
            found[name] = value
    return found


def check_header_text(text: str) -> None:
    if "\r" in text or "\n" in text or "\x00" in text:
        raise ConnectError("a header holds a line break")
