"""What the servers (the served runtime, the webhook and WebSocket channels) check before reading a request.

A browser is a client too, and any page the user visits can make it send
requests to a server on loopback: a "simple" cross-origin POST
(``text/plain``) is sent without asking, a WebSocket handshake carries no
same-origin rule at all, and DNS rebinding makes a foreign name resolve to
127.0.0.1. So every request and handshake is checked for its ``Origin``
(an allow-list; none by default: same-origin and non-browser clients only)
and its ``Host`` (the names the server answers to), bodies must be JSON,
and a server that would be reachable from other machines without a token
refuses to start unless told to.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
from typing import TYPE_CHECKING, Final

import trio

from ._error_shape import error_json
from ._exceptions import UnsafeBindError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from starlette.requests import HTTPConnection, Request
    from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
"""The host names a server bound to loopback answers to by default."""


class RequestRejected(Exception):
    """A request refused before its body was read; each server answers it in its own error shape."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status to answer with."""
        self.kind = kind
        """A short machine-readable reason (``bad_request``, ``too_large``, ``client_closed``, ``timeout``,
        ``unsupported_media_type``, ``forbidden_origin``, ``forbidden_host``)."""


def bearer_token_matches(connection: HTTPConnection, token: bytes | None) -> bool:
    """Whether ``connection`` carries ``Authorization: Bearer <token>`` (always, if ``token`` is ``None``).

    The scheme is case-insensitive (RFC 7235: ``bearer TOKEN`` is fine); the
    token is compared in constant time, as the bytes the client sent (Starlette
    reads a header as Latin-1: its bytes back are what a client sending a
    non-ASCII token as UTF-8, as curl and httpx do, sent).
    """
    if token is None:
        return True
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode("latin-1"), token)


def _is_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").partition(";")[0]
    return media_type.strip().lower() == "application/json"


async def read_body(request: Request, *, limit: int, timeout: float = math.inf) -> bytes:
    """The whole JSON body of ``request``, refused as soon as it is known to be too large, too slow or not JSON.

    A declared Content-Length over the limit is refused before anything is
    read; the bytes that really arrive are counted too (a chunked body, or a
    peer that lies). The whole body must arrive within ``timeout`` seconds
    (a client dribbling a byte at a time is cut off, however steadily it
    sends). A non-empty body must be declared ``application/json``: that is
    what a browser cannot send cross-origin without asking first (an empty
    POST, with no type, is fine). It reads the raw ASGI ``receive``, not
    Starlette's async generator, so nothing is left to close.

    Raises:
        RequestRejected: 400 (a Content-Length that is not a number), 408 (not
            all there within ``timeout``), 413 (over ``limit``), 415 (a body that
            is not ``application/json``), 499 (the client went away first).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        # RFC 9110: 1*DIGIT. int() would also take " 12", "+12", "1_2" and non-ASCII digits.
        if not (declared.isascii() and declared.isdigit()):
            raise RequestRejected(400, "bad_request", f"the Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise RequestRejected(413, "too_large", f"the body is over {limit} bytes")
    json_body = _is_json(request)
    if not json_body and (int(declared or 0) > 0 or "transfer-encoding" in request.headers):
        raise _not_json()
    body = bytearray()
    with trio.move_on_after(timeout):
        while True:
            event = await request.receive()
            if event["type"] == "http.disconnect":
                raise RequestRejected(499, "client_closed", "the client closed the request")
            body += event.get("body", b"")
            if len(body) > limit:
                raise RequestRejected(413, "too_large", f"the body is over {limit} bytes")
            if not event.get("more_body", False):
                if body and not json_body:
                    raise _not_json()
                return bytes(body)
    raise RequestRejected(408, "timeout", f"the body did not arrive within {timeout} s")


def _not_json() -> RequestRejected:
    return RequestRejected(415, "unsupported_media_type", "the body must be sent as Content-Type: application/json")


# -- who may talk to a server ------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on loopback only (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_bind(host: str, *, authenticated: bool, allow_unauthenticated_remote: bool, what: str) -> None:
    """Refuse to serve on a non-loopback ``host`` without a token, unless explicitly allowed.

    Raises:
        UnsafeBindError: ``host`` is not loopback, ``authenticated`` is false and
            ``allow_unauthenticated_remote`` too.
    """
    if authenticated or allow_unauthenticated_remote or is_loopback(host):
        return
    raise UnsafeBindError(
        f"refusing to serve on {host!r} without {what}: anyone who can reach that address could drive the "
        f"agent and its tools. Set {what}, bind a loopback address (127.0.0.1), or pass "
        "allow_unauthenticated_remote=True (--allow-unauthenticated-remote) if that is really what you want."
    )


def check_token(token: str | None, what: str) -> None:
    """Refuse a token no client could send: empty (a variable set to nothing would otherwise let in every
    request that says ``Bearer`` and nothing else), or holding spaces or control characters.

    Raises:
        ValueError: it is.
    """
    if token is None:
        return
    if not token.strip():
        raise ValueError(f"{what} is empty: give a secret, or none at all")
    if any(not char.isprintable() or char.isspace() for char in token):
        raise ValueError(f"{what} holds spaces or control characters: no Authorization header could carry it")


def check_positive(**values: float) -> None:
    """Raise ``ValueError`` naming the first of ``values`` (timeouts, a backlog) that is not above zero."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be above zero, not {value!r}")


def host_name(value: str) -> str:
    """The name in a ``Host`` header (or an entry of an allow-list): lowercase, without the port or a final dot."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6]:port
        return value[1 : value.find("]")] if "]" in value else value
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit() and (":" not in name or _unbracketed_v6(name, value)):
        value = name
    return value.rstrip(".")


def _unbracketed_v6(name: str, value: str) -> bool:
    """Whether ``value`` is an IPv6 address and a port without the brackets (``::1:43477``, as trio-websocket's
    client sends it): ``name`` is an address and ``value`` is not (``::1:8080`` is an address itself)."""
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return False
        return True
    return False


class Exposure:
    """Which ``Origin`` and ``Host`` a server accepts; :meth:`check` applies it to one request's headers.

    Args:
        bind_host: The address the server listens on; bound to loopback, it
            answers to :data:`LOOPBACK_NAMES` and that address unless ``allowed_hosts`` says otherwise.
        allowed_origins: Origins (``scheme://host[:port]``) whose pages may
            call the server, besides the same origin; ``"*"``: any.
        allowed_hosts: Host names the server answers to, any port (clients
            may come through a proxy); ``"*"``: any. ``None``: the loopback
            names and the bound address when bound to loopback, else any.
    """

    def __init__(self, bind_host: str, *, allowed_origins: Iterable[str], allowed_hosts: Iterable[str] | None) -> None:
        self.origins = frozenset(origin.strip().lower().rstrip("/") for origin in allowed_origins)
        if allowed_hosts is None:
            # The address it is bound to too (127.0.0.2 is loopback): the URL it prints must answer.
            hosts: frozenset[str] | None = LOOPBACK_NAMES | {host_name(bind_host)} if is_loopback(bind_host) else None
        else:
            hosts = frozenset(host_name(host) for host in allowed_hosts)
        self.hosts = None if hosts is not None and "*" in hosts else hosts

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Check one request's raw headers.

        Raises:
            RequestRejected: 403, the ``Host`` is not one the server answers to,
                or the ``Origin`` is neither allowed nor the server's own.
        """
        host: str | None = None
        origin: str | None = None
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"host":
                host = value.decode("latin-1")
            elif lowered == b"origin":
                origin = value.decode("latin-1")
        if host is not None and self.hosts is not None and host_name(host) not in self.hosts:
            raise RequestRejected(403, "forbidden_host", f"this server does not answer to the host {host!r}")
        if origin is None or "*" in self.origins:
            return  # no Origin: not a browser's cross-origin request
        origin = origin.strip().lower().rstrip("/")
        if origin in self.origins:
            return
        scheme, _, netloc = origin.partition("://")
        if host is not None and scheme in ("http", "https") and netloc == host.strip().lower():
            return  # same origin
        raise RequestRejected(403, "forbidden_origin", f"requests from the origin {origin!r} are not allowed")


class ExposureGuard:
    """ASGI middleware: every HTTP request and WebSocket handshake passes :meth:`Exposure.check` or gets a 403.

    The 403 is in the one error shape; ``on_reject`` (if given) is called for each.
    """

    def __init__(self, app: ASGIApp, exposure: Exposure, on_reject: Callable[[], object] | None = None) -> None:
        self._app = app
        self._exposure = exposure
        self._on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        try:
            self._exposure.check(scope["headers"])
        except RequestRejected as rejected:
            if self._on_reject is not None:
                self._on_reject()
            body = json.dumps(error_json(rejected.kind, str(rejected)), separators=(",", ":")).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": rejected.status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            else:  # the handshake's answer (the ASGI websocket.http.response extension)
                await receive()  # websocket.connect
                start = {"type": "websocket.http.response.start", "status": rejected.status, "headers": headers}
                await send(start)
                await send({"type": "websocket.http.response.body", "body": body})
            return
        await self._app(scope, receive, send)
