"""What both HTTP servers (the served runtime and the webhook channel) check before reading a request."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection, Request


class RequestRejected(Exception):
    """A request refused before its body was read; each server answers it in its own error shape."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status to answer with."""
        self.kind = kind
        """A short machine-readable reason (``bad_request``, ``too_large``, ``client_closed``)."""


def bearer_token_matches(connection: HTTPConnection, token: bytes | None) -> bool:
    """Whether ``connection`` carries ``Authorization: Bearer <token>`` (always, if ``token`` is ``None``).

    The scheme is case-insensitive (RFC 7235: ``bearer TOKEN`` is fine); the
    token is compared in constant time.
    """
    if token is None:
        return True
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token)


async def read_body(request: Request, *, limit: int) -> bytes:
    """The whole body of ``request``, refused as soon as it is known to be over ``limit`` bytes.

    A declared Content-Length over the limit is refused before anything is
    read; the bytes that really arrive are counted too (a chunked body, or a
    peer that lies). It reads the raw ASGI ``receive``, not Starlette's
    async generator, so nothing is left to close.

    Raises:
        RequestRejected: 400 (a Content-Length that is not a number), 413 (over
            ``limit``), 499 (the client went away first).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        # RFC 9110: 1*DIGIT. int() would also take " 12", "+12", "1_2" and non-ASCII digits.
        if not (declared.isascii() and declared.isdigit()):
            raise RequestRejected(400, "bad_request", f"the Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise RequestRejected(413, "too_large", f"the body is over {limit} bytes")
    body = bytearray()
    while True:
        event = await request.receive()
        if event["type"] == "http.disconnect":
            raise RequestRejected(499, "client_closed", "the client closed the request")
        body += event.get("body", b"")
        if len(body) > limit:
            raise RequestRejected(413, "too_large", f"the body is over {limit} bytes")
        if not event.get("more_body", False):
            return bytes(body)
