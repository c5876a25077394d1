"""httpx's exceptions become ``streams`` errors here, and nowhere else (httpx's ``map_httpcore_exceptions``)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

import httpx

from ._exceptions import (
    BrokenStreamError,
    InvalidRequestError,
    MalformedMessageError,
    PeerSilentError,
    RemoteError,
    StreamClosedError,
    StreamError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

_MAPPING: Final[dict[type[Exception], type[StreamError]]] = {
    # The peer or the network broke it.
    httpx.TimeoutException: PeerSilentError,
    httpx.NetworkError: StreamClosedError,
    httpx.RemoteProtocolError: StreamClosedError,
    httpx.ProxyError: StreamClosedError,
    httpx.DecodingError: MalformedMessageError,
    httpx.TooManyRedirects: BrokenStreamError,
    httpx.HTTPError: BrokenStreamError,  # whatever httpx adds under its root later
    # The request could not be made as asked.
    httpx.UnsupportedProtocol: InvalidRequestError,
    httpx.LocalProtocolError: InvalidRequestError,
    httpx.InvalidURL: InvalidRequestError,
    httpx.CookieConflict: InvalidRequestError,
    # A response used against httpx's rules (ResponseNotRead, StreamClosed, ...): a bug of ours, still typed.
    httpx.StreamError: InvalidRequestError,
}
"""Each httpx exception class to the ``streams`` error it becomes; the most specific entry of its MRO wins."""


def mapped_error(exc: Exception, what: str) -> StreamError | None:
    """The ``streams`` error that ``exc`` becomes (``None`` if it is not one of httpx's); ``what`` names the
    endpoint or the action, for the message."""
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return RemoteError(f"{what} answered {status} {exc.response.reason_phrase}", status=status)
    for cls in type(exc).__mro__:
        ours = _MAPPING.get(cls)
        if ours is not None:
            if ours is PeerSilentError:
                return PeerSilentError(f"{what} did not answer in time ({type(exc).__name__})")
            return ours(f"{what}: {type(exc).__name__}: {exc}")
    return None


@contextmanager
def map_httpx_errors(what: str) -> Iterator[None]:
    """Raise every httpx exception of the block as its ``streams`` error, the original as ``__cause__``.

    Args:
        what: The endpoint or the action, for the message (``http://host/sessions/s1/feed``).
    """
    try:
        yield
    except Exception as exc:
        ours = mapped_error(exc, what)
        if ours is None:
            raise
        raise ours from exc
