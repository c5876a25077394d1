"""Server-sent events out of an ASGI app: our own encoder, heartbeats, and a disconnect that cancels."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio
from starlette.responses import Response

from ._broadcast import Dropped
from ._codec import dumps, utf8

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send


class MessageSource(Protocol):
    """What an :class:`EventStreamResponse` streams: ``(type, data)`` messages and :class:`Dropped` gaps,
    then ``None`` at the end."""

    def next_nowait(self) -> tuple[str, dict[str, Any]] | Dropped | None:
        """The next message if one is ready, without waiting; ``None`` at the end.

        Raises:
            trio.WouldBlock: none is ready yet.
        """

    async def next(self) -> tuple[str, dict[str, Any]] | Dropped | None:
        """The next message, waiting for it; ``None`` at the end."""


OpenSource = Callable[[], AbstractAsyncContextManager[MessageSource]]
"""Opens what a stream sends, for the stream's whole life: ``async with open_source() as source:``."""

_PING: Final = b": ping\n\n"
CHUNK_SIZE: Final = 65536
"""Messages already waiting are sent together, as one body chunk of about this many bytes at most."""


def encode(kind: str, data: dict[str, Any], message_id: int) -> bytes:
    """One SSE message: ``event``, ``id`` and one ``data`` line of compact JSON (which has no newline), in UTF-8
    with a lone surrogate in a string sent as its escape (:func:`~streams._codec.utf8`)."""
    return utf8(f"event: {kind}\nid: {message_id}\ndata: {dumps(data)}\n\n")


def _encode(message: tuple[str, dict[str, Any]] | Dropped, message_id: int) -> bytes:
    if isinstance(message, Dropped):
        return encode("EventsDropped", {"type": "EventsDropped", "count": message.count}, message_id)
    return encode(message[0], message[1], message_id)


class Refusal(Exception):
    """Raised by a source while it opens, before anything was sent: the answer is :meth:`response` instead
    of a stream (a closed session's 404, ...)."""

    def response(self) -> Response:
        """The HTTP answer."""
        raise NotImplementedError


class EventStreamResponse(Response):
    """Streams the messages of a source, with a ``: ping`` comment after each quiet ``heartbeat``.

    Every message is sent as soon as the stream can send it, never held
    back to wait for more; the messages that are already waiting when it
    sends go together in one body chunk (one ASGI ``send`` costs far more
    than one message: a lock, a shielded cancel scope and a syscall in
    Hypercorn). The heartbeat's deadline is armed only while the stream has
    nothing to send.

    The source is opened, read and closed in the request's task, in one
    ``async with`` (an attached run's ``async with session.run()``, whose
    whole life is then this one frame), inside a nursery whose other task
    watches for ``http.disconnect``: a client that goes away cancels the
    source, even while it is still opening. The ``200`` is sent once the
    source is open; a :class:`Refusal` raised while it opens is answered
    with its own response instead. A ``HEAD`` gets the head alone: the
    source is never opened.
    """

    def __init__(self, open_source: OpenSource, *, heartbeat: float) -> None:
        # Not Response.__init__, which would declare a Content-Length.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
        ]
        self._open_source = open_source
        self._heartbeat = heartbeat
        self.disconnected = False
        """Whether the client went away before the stream ended."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "HEAD":
            # Starlette routes HEAD to a GET route, and Hypercorn drops the body but ends the response only at
            # its end: an event stream's never comes. The head alone, with nothing opened (no session in use).
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        refusal: Refusal | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch, receive, nursery.cancel_scope)
            started = False
            try:
                async with self._open_source() as source:
                    started = True
                    await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
                    await self._pump(send, source)
            except Refusal as exc:
                if started:
                    raise  # a source refuses while it opens, or not at all
                refusal = exc
            nursery.cancel_scope.cancel()
        if refusal is not None:
            await refusal.response()(scope, receive, send)
        elif not self.disconnected:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch(self, receive: Receive, scope: trio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True
        scope.cancel()

    async def _pump(self, send: Send, source: MessageSource) -> None:
        sent = 0
        chunk: list[bytes] = []
        size = 0
        while True:
            try:
                message = source.next_nowait()
            except trio.WouldBlock:
                if chunk:  # nothing more is ready: send what is (sending is a checkpoint)
                    await send({"type": "http.response.body", "body": b"".join(chunk), "more_body": True})
                    chunk.clear()
                    size = 0
                    continue
                with trio.move_on_after(self._heartbeat) as quiet:
                    message = await source.next()
                if quiet.cancelled_caught:
                    await send({"type": "http.response.body", "body": _PING, "more_body": True})
                    continue
            if message is None:
                if chunk:
                    await send({"type": "http.response.body", "body": b"".join(chunk), "more_body": True})
                return
            sent += 1
            body = _encode(message, sent)
            chunk.append(body)
            size += len(body)
            if size >= CHUNK_SIZE:
                await send({"type": "http.response.body", "body": b"".join(chunk), "more_body": True})
                chunk.clear()
                size = 0
