"""What can go wrong talking to a remote runtime: one typed error per cause."""

from __future__ import annotations


class StreamError(Exception):
    """Base of every error ``streams`` raises about a remote stream."""


class RemoteError(StreamError):
    """The server answered with an error status (an HTTP error, or a rejected WebSocket handshake)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status code."""


class PeerSilentError(StreamError):
    """The peer stopped answering without closing: a dial, a read or a heartbeat timed out."""


class StreamClosedError(StreamError):
    """The connection ended abnormally (reset, dropped, or closed with an error code)."""


class ListenerBusyError(StreamError):
    """A between-run listener for this remote session is already running."""


class WorkspaceError(StreamError):
    """A workspace command failed (unknown file, bad command, workspace full)."""


class SessionExistsError(ValueError):
    """``Server.open_session`` was given the id of a session it serves already (HTTP 409)."""
