"""Exceptions raised by :mod:`streams`: one typed error per cause.

The tree::

    StreamError
    ├── RemoteError                 the server answered with an error status (``status``)
    ├── BrokenStreamError           the peer or the network broke it (``__cause__``: the foreign error)
    │   ├── StreamClosedError       the connection could not be made, dropped, or closed with an error code
    │   ├── PeerSilentError         the peer stopped answering: a dial, a read or a heartbeat timed out
    │   └── MalformedMessageError   the peer sent something that is not the protocol (also a ValueError)
    ├── ClosedRemoteSessionError    we closed it: the ``open_remote_session`` block ended
    ├── InvalidRequestError         a request could not be made as asked (a bad URL, an unsupported scheme)
    ├── ListenerBusyError           a between-run listener for that remote session is already running
    ├── WorkspaceError              a workspace command failed (``kind``: the answer's error type)
    ├── SessionExistsError          ``Server.open_session`` got an id it serves already (also a ValueError)
    ├── InvalidSessionIdError       ``Server.open_session`` got an id outside the safe set (also a ValueError)
    ├── TooManySessionsError        ``Server.open_session`` would pass the server's ``max_sessions``
    └── UnsafeBindError             a server was asked to listen beyond loopback with no token (also a ValueError)

Following trio: *Closed* means this side closed it (trio's
``ClosedResourceError``); *Broken* means the peer or the network did
(``BrokenResourceError``). Foreign errors are mapped where they enter, in
one place each: httpx's in ``streams._httpx.map_httpx_errors``;
trio-websocket's, h11's and wsproto's (a WebSocket handshake the peer
rejected or broke) in ``streams._client._open_websocket``.
"""

from __future__ import annotations


class StreamError(Exception):
    """Root of every exception :mod:`streams` raises."""


class RemoteError(StreamError):
    """The server answered with an error status (an HTTP error, or a rejected WebSocket handshake)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status code."""


class BrokenStreamError(StreamError):
    """The peer or the network broke the connection; ``__cause__`` holds the foreign error, if any."""


class StreamClosedError(BrokenStreamError):
    """The connection could not be made, or ended abnormally (reset, dropped, or closed with an error code).

    The name is the one this error had before :class:`BrokenStreamError` existed; it stays, as that
    class's most common case.
    """


class PeerSilentError(BrokenStreamError):
    """The peer stopped answering without closing: a dial, a read or a heartbeat timed out."""


class MalformedMessageError(BrokenStreamError, ValueError):
    """The peer sent something that is not the protocol: not JSON, or an event with invalid fields.

    Also a ``ValueError``, which is what :func:`~streams.event_from_json` raised before.
    """


class ClosedRemoteSessionError(StreamError):
    """The remote session was closed on this side: its ``open_remote_session`` block ended (during the call,
    or before it), or nothing serves its streams."""


class InvalidRequestError(StreamError):
    """A request could not be made as asked: a malformed URL, an unsupported scheme, a bad header."""


class ListenerBusyError(StreamError):
    """A between-run listener for this remote session is already running."""


class WorkspaceError(StreamError):
    """A workspace command failed (unknown file, bad command, workspace full)."""

    def __init__(self, message: str, *, kind: str = "bad_command") -> None:
        super().__init__(message)
        self.kind = kind
        """The error's ``type`` in the workspace protocol (PROTOCOL.md): ``no_such_file``, ``bad_path``,
        ``workspace_full``, ``too_large``, ``bad_command``, ``bad_json``."""


class SessionExistsError(StreamError, ValueError):
    """``Server.open_session`` was given the id of a session it serves already (HTTP 409).

    Also a ``ValueError``, which is what it was before it joined the :class:`StreamError` tree.
    """


class InvalidSessionIdError(StreamError, ValueError):
    """``Server.open_session`` was given an id outside the safe set (HTTP 422 ``bad_session_id``).

    An id is 1 to 128 characters of ``A-Z a-z 0-9 . _ -``, starting with a letter or a digit
    (:data:`~streams.SESSION_ID_PATTERN`): it goes into URLs and logs as it is.
    """


class TooManySessionsError(StreamError):
    """``Server.open_session`` would pass the server's ``max_sessions`` (HTTP 503 ``too_many_sessions``)."""


class UnsafeBindError(StreamError, ValueError):
    """A server was asked to listen on a non-loopback address without a token, and not told that is fine.

    Anyone who can reach that address could drive the agent and its tools.
    Raised before anything listens; pass a token, bind loopback, or
    ``allow_unauthenticated_remote=True``.
    """
