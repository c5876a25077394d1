"""The one protocol every model implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager

    from .._messages import ModelChunk, ModelRequest


@runtime_checkable
class Model(Protocol):
    """Something that answers a :class:`ModelRequest` with a stream of chunks.

    ``stream`` returns an async context manager so that a model talking HTTP
    closes its response on every path, including when the run is cancelled
    halfway through the stream::

        async with model.stream(request) as chunks:
            async for chunk in chunks:
                ...

    A model signals failure by raising :class:`~agents.ModelError` (or a
    subclass) from ``stream`` or from the iterator, or by yielding an
    :class:`~agents.ErrorChunk` for an error reported inside the stream.
    """

    def stream(self, request: ModelRequest) -> AbstractAsyncContextManager[AsyncIterator[ModelChunk]]:
        """Start one model call."""
        ...
