"""Server-sent events out of an ASGI app: our own encoder, heartbeats, and a disconnect that cancels."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import trio
from starlette.responses import Response

from ._broadcast import Dropped
from ._codec import dumps

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

NextMessage = Callable[[], Awaitable["tuple[str, dict[str, Any]] | Dropped | None"]]
"""Gives the next ``(type, data)`` to send, a :class:`Dropped` gap, or ``None`` at the end."""

_PING: Final = b": ping\n\n"


def encode(kind: str, data: dict[str, Any], message_id: int) -> bytes:
    """One SSE message: ``event``, ``id`` and one ``data`` line of compact JSON (which has no newline)."""
    return f"event: {kind}\nid: {message_id}\ndata: {dumps(data)}\n\n".encode()


class EventStreamResponse(Response):
    """Streams the messages ``next_message`` gives, with a ``: ping`` comment after each quiet ``heartbeat``.

    The source is read in the request's task, inside a nursery whose other
    task watches for ``http.disconnect``: a client that goes away cancels
    the source (an attached run's ``async with session.run()`` with it).
    ``on_close`` runs (shielded) however the stream ended.
    """

    def __init__(
        self, next_message: NextMessage, *, heartbeat: float, on_close: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        # Not Response.__init__, which would declare a Content-Length.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
        ]
        self._next = next_message
        self._heartbeat = heartbeat
        self._on_close = on_close
        self.disconnected = False
        """Whether the client went away before the stream ended."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, receive, nursery.cancel_scope)
                await self._pump(send)
                nursery.cancel_scope.cancel()
            if not self.disconnected:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if self._on_close is not None:
                with trio.CancelScope(shield=True):
                    await self._on_close()

    async def _watch(self, receive: Receive, scope: trio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True
        scope.cancel()

    async def _pump(self, send: Send) -> None:
        sent = 0
        while True:
            with trio.move_on_after(self._heartbeat) as quiet:
                message = await self._next()
            if quiet.cancelled_caught:
                await send({"type": "http.response.body", "body": _PING, "more_body": True})
                continue
            if message is None:
                return
            sent += 1
            if isinstance(message, Dropped):
                body = encode("EventsDropped", {"type": "EventsDropped", "count": message.count}, sent)
            else:
                body = encode(message[0], message[1], sent)
            await send({"type": "http.response.body", "body": body, "more_body": True})
