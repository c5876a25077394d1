"""For tests that play an HTTP peer on a raw socket: reading what a client sent."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trio


async def read_request_head(stream: trio.SocketStream) -> bytes | None:
    """What the client sent up to the end of its request's head (and whatever else came in the same reads);
    ``None`` if it closed the connection first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk
    return data
