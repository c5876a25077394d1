"""A WebSocket that breaks the protocol is closed with a close frame saying why, not a dropped TCP connection.

When wsproto cannot parse what a client sent (a text frame that is not
UTF-8, a frame that breaks RFC 6455), it reports a ``CloseConnection``
carrying the code to fail the connection with (1007, 1002) while the
connection is still open. Hypercorn 0.18's ``WSStream._handle_events``
answers a ``CloseConnection`` only once the *peer* started closing, so it
drops the TCP connection without a word. RFC 6455 7.1.7: an endpoint that
fails an established connection SHOULD send a close frame with the code
first. :func:`send_close_frames_on_protocol_errors` makes Hypercorn do so;
the client then sees 1007 ("invalid frame payload data") or 1002, and the
connection closes as for Hypercorn's own 1009 (message too big).
"""

from __future__ import annotations

from typing import Any

from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.ws_stream import FrameTooLargeError, WSStream
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping


async def _handle_events(self: Any) -> None:
    """Hypercorn 0.18's ``WSStream._handle_events``, plus the close frame for a protocol error."""
    for event in self.connection.events():
        if isinstance(event, Message):
            try:
                self.buffer.extend(event)
            except FrameTooLargeError:
                await self._send_wsproto_event(CloseConnection(code=1009))
                break
            if event.message_finished:
                await self.app_put(self.buffer.to_message())
                self.buffer.clear()
        elif isinstance(event, Ping):
            await self._send_wsproto_event(event.response())
        elif isinstance(event, CloseConnection):
            if self.connection.state is ConnectionState.OPEN:
                # wsproto failed the connection (ParseFailed): the peer did not close it. Say why,
                # then wait for the peer's close frame, as Hypercorn does after a 1009.
                await self._send_wsproto_event(CloseConnection(code=event.code, reason=event.reason))
                break
            if self.connection.state is ConnectionState.REMOTE_CLOSING:
                await self._send_wsproto_event(event.response())
            await self.send(StreamClosed(stream_id=self.stream_id))


def send_close_frames_on_protocol_errors() -> None:
    """Install the close frame on protocol errors in Hypercorn's WebSocket streams (idempotent).

    It replaces one method of Hypercorn's ``WSStream`` for the whole
    process; it changes nothing but the frame sent before a failed
    connection closes.
    """
    WSStream._handle_events = _handle_events  # type: ignore[method-assign]  # see the module docstring
