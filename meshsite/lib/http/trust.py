"""TLS trust for upstream connections, made once per client, and failures named by cause.

`tls_context(...)`: the system's trust store (OpenSSL's default paths, which honour
`SSL_CERT_FILE` and `SSL_CERT_DIR`), certifi's bundle only where the system has none, plus
extra CA bundles (files, e.g. `MESHGATE_CA_BUNDLE`) and an extra CA in PEM, and a client
certificate and key for mutual TLS. `verify=False` is the caller's explicit, visible
choice. `cause(exc)` names what went wrong when connecting, in a few words an admin can
act on, never with a host, address or secret in them.
"""

from __future__ import annotations

import functools
import os
import socket
import ssl
import tempfile

from .base import AddressRefused, ConnectError, TimeoutException, TransportError


def _system_has_roots() -> bool:
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile):
        return True
    return bool(paths.capath and os.path.isdir(paths.capath) and os.listdir(paths.capath))


@functools.lru_cache(maxsize=8)
def _base_context(extra_bundles: tuple[str, ...]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not _system_has_roots():
        try:
            import certifi

            context.load_verify_locations(cafile=certifi.where())
        except ImportError:  # pragma: no cover - certifi comes with the openai SDK
            pass
    for bundle in extra_bundles:
        context.load_verify_locations(cafile=bundle)
    return context


def tls_context(
    *,
    ca_bundles: tuple[str, ...] = (),
    ca_pem: str = "",
    client_cert_pem: str = "",
    client_key_pem: str = "",
    verify: bool = True,
) -> ssl.SSLContext:
    """A client TLS context. Without per-connection extras, one shared context per set of
    bundles (the system's trust store is read once per process)."""
    if verify and not ca_pem and not client_cert_pem:
        return _base_context(tuple(ca_bundles))
    context = ssl.create_default_context()
    if verify:
        if not _system_has_roots():
            try:
                import certifi

                context.load_verify_locations(cafile=certifi.where())
            except ImportError:  # pragma: no cover
                pass
        for bundle in ca_bundles:
            context.load_verify_locations(cafile=bundle)
        if ca_pem:
            context.load_verify_locations(cadata=ca_pem)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert_pem:
        _load_client_certificate(context, client_cert_pem, client_key_pem)
    return context


def _load_client_certificate(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """`ssl` loads a certificate chain from files only: a private directory, gone at once."""
    with tempfile.TemporaryDirectory(prefix="meshgate-tls-") as folder:
        os.chmod(folder, 0o700)
        path = os.path.join(folder, "client.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(cert_pem.strip() + "\n")
            if key_pem:
                handle.write(key_pem.strip() + "\n")
        try:
            context.load_cert_chain(path)
        except (ssl.SSLError, ValueError):
            raise ValueError("the client certificate and key could not be loaded") from None


# OpenSSL's X509_V_ERR codes an admin meets.
_VERIFY_CAUSES = {
    2: "tls: unknown CA",
    18: "tls: unknown CA",  # self-signed certificate
    19: "tls: unknown CA",  # self-signed certificate in chain
    20: "tls: unknown CA",  # unable to get local issuer certificate
    21: "tls: unknown CA",
    9: "tls: certificate not yet valid",
    10: "tls: certificate expired",
    62: "tls: hostname mismatch",
    64: "tls: hostname mismatch",  # IP address mismatch
}


def cause(exc: BaseException) -> str:
    """A short cause class for a connection failure: `dns`, `connect refused`, `timeout`,
    `tls: unknown CA`, `tls: hostname mismatch`, `proxy refused (407)`, ..."""
    if isinstance(exc, TransportError) and exc.cause:
        return exc.cause
    if isinstance(exc, AddressRefused):
        return "address refused"
    if isinstance(exc, TimeoutException | TimeoutError):
        return "timeout"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_CAUSES.get(exc.verify_code, "tls: certificate refused")
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if "CERTIFICATE_REQUIRED" in reason or "BAD_CERTIFICATE" in reason:
            return "tls: client certificate refused"
        if "UNKNOWN_CA" in reason:
            return "tls: client certificate refused"
        if "WRONG_VERSION" in reason or "RECORD_LAYER" in reason:
            return "tls: not a TLS server"
        return "tls: handshake failed"
    if isinstance(exc, ConnectionRefusedError):
        return "connect refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "connection reset"
    if isinstance(exc, OSError) and exc.errno is not None:
        return "network unreachable" if exc.errno in (101, 113) else "connect failed"
    return "connect failed"


def connect_error(exc: BaseException, *, via_proxy: bool = False) -> TransportError:
    """The interface's error for a failure while connecting, its cause class attached."""
    if isinstance(exc, TransportError) and exc.cause:
        return exc
    name = cause(exc)
    if via_proxy and name in ("dns", "connect refused", "timeout", "connection reset"):
        name = f"proxy: {name}"
    error: TransportError
    if isinstance(exc, AddressRefused):
        error = AddressRefused(str(exc))
    elif name.endswith("timeout"):
        error = TimeoutException("connecting to the provider timed out")
    else:
        error = ConnectError(name)
    error.cause = name
    return error
