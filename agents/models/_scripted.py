"""ScriptedModel: a deterministic, offline model for examples, tests and benchmarks."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, TypeAlias

import attrs
import trio

from .._exceptions import ScriptExhaustedError
from .._messages import (
    Message,
    ModelChunk,
    ModelRequest,
    StopChunk,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    UsageChunk,
)

_END_TURN: Final = StopChunk("end_turn")
_TOOL_USE: Final = StopChunk("tool_use")  # frozen: one of each serves every response

_WORDS = re.compile(r"\s*\S+(?:\s+$)?|\s+$")


@attrs.frozen
class ToolCall:
    """A tool call in a :class:`ScriptedModel` script."""

    name: str
    arguments: dict[str, Any] = attrs.field(factory=dict)


Turn: TypeAlias = str | ToolCall | Sequence[ToolCall | ModelChunk]
"""One scripted response: final text, one tool call, several at once, or the exact chunks to stream
(to script what a provider does: ``[TextChunk("cut of"), StopChunk("max_tokens", "length")]``)."""

Script: TypeAlias = Iterable[Turn | Callable[[ModelRequest], Turn]]
"""A script: turns, or functions of the request that return a turn."""


class ScriptedModel:
    """A model that answers from a script, with no network and no randomness.

    Each model call takes the next turn of the script, across runs and
    sessions: a ``str`` is a final answer (streamed word by word), a
    :class:`ToolCall` or a list of them asks for tools, and a list of model
    chunks is streamed as it is. A turn may also be a function of the
    :class:`ModelRequest` returning one of those. Each response ends with
    its stop reason (``end_turn`` or ``tool_use``) and its usage, counted in
    words (of the text parts, for a message with images or documents).
    Every request is kept in :attr:`requests`.

    It answers a typed output in every mode: a JSON string is a
    ``native`` or ``prompted`` answer, ``ToolCall("final_result", {...})``
    a ``tool`` one. With ``stream_arguments`` each tool call's arguments
    also stream as ``ToolCallDeltaChunk`` pieces first (as real providers
    do), and ``chunk_delay`` paces the chunks like a model writing.
    ``name`` is what it is called in events (``"scripted"``).

    Example::

        model = ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "It is 3."])

    Raises:
        ScriptExhaustedError: on entering the ``stream`` block once the script has no turns left.
    """

    native_output = True
    """It answers ``output_mode="native"`` (with whatever JSON the script holds)."""

    def __init__(
        self,
        turns: Script,
        *,
        record_requests: bool = True,
        stream_arguments: bool = False,
        chunk_delay: float = 0.0,
        name: str = "scripted",
    ) -> None:
        self.name = name
        """What it is called in events and errors (a :class:`~agents.FallbackModel`'s ``ModelFallback``)."""
        self._turns: Iterator[Turn | Callable[[ModelRequest], Turn]] = iter(turns)
        self._calls = 0
        self._record = record_requests
        self._stream_arguments = stream_arguments
        self._chunk_delay = chunk_delay
        self.requests: list[ModelRequest] = []
        """Every request received, oldest first (if ``record_requests``)."""

    def stream(self, request: ModelRequest) -> _ScriptedStream:
        """Answer ``request`` with the script's next turn (taken when the block is entered)."""
        return _ScriptedStream(self, request)

    def _next_chunks(self, request: ModelRequest) -> list[ModelChunk]:
        if self._record:
            self.requests.append(request)
        try:
            turn = next(self._turns)
        except StopIteration:
            raise ScriptExhaustedError(
                f"ScriptedModel ran out of turns after {self._calls} model calls; add more turns to its script"
            ) from None
        self._calls += 1
        if callable(turn):
            turn = turn(request)
        return self._chunks(request, turn)

    def _chunks(self, request: ModelRequest, turn: Turn) -> list[ModelChunk]:
        chunks: list[ModelChunk] = []
        if isinstance(turn, str):
            chunks.extend(TextChunk(word) for word in _WORDS.findall(turn))
            chunks.append(_END_TURN)
            output = len(chunks) - 1
        elif isinstance(turn, ToolCall) or all(isinstance(item, ToolCall) for item in turn):
            calls: list[ToolCall] = [turn] if isinstance(turn, ToolCall) else list(turn)  # type: ignore[arg-type]
            for i, call in enumerate(calls):
                call_id = f"call_{self._calls}_{i}"
                if self._stream_arguments:
                    text = json.dumps(call.arguments)
                    chunks.extend(ToolCallDeltaChunk(call_id, call.name, piece) for piece in _WORDS.findall(text))
                chunks.append(ToolCallChunk(call_id, call.name, call.arguments))
            chunks.append(_TOOL_USE)
            output = 8 * len(calls)
        elif any(isinstance(item, ToolCall) for item in turn):
            raise TypeError(f"a scripted turn is tool calls or model chunks, not both: {turn!r}")
        else:
            return list(turn)  # type: ignore[arg-type]  # no ToolCall in it: all chunks
        chunks.append(UsageChunk(_count_words(request.instructions, request.messages), output))
        return chunks


class _ScriptedStream:
    """One scripted model call: its async context manager and its chunk iterator.

    A class rather than an async generator, so abandoning it never warns.
    """

    __slots__ = ("_chunks", "_delay", "_model", "_request")

    def __init__(self, model: ScriptedModel, request: ModelRequest) -> None:
        self._model = model
        self._request = request
        self._chunks: Iterator[ModelChunk] = iter(())
        self._delay = model._chunk_delay

    async def __aenter__(self) -> _ScriptedStream:
        # A cancel point, not a schedule point: an offline model has nothing
        # to wait for (an HTTP model's reads are its schedule points).
        await trio.lowlevel.checkpoint_if_cancelled()
        self._chunks = iter(self._model._next_chunks(self._request))
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __aiter__(self) -> _ScriptedStream:
        return self

    async def __anext__(self) -> ModelChunk:
        # A cancel point per chunk.
        if self._delay:
            await trio.sleep(self._delay)
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None


def _count_words(instructions: str, messages: tuple[Message, ...]) -> int:
    total = len(instructions.split())
    for message in messages:
        total += len(message.text.split())  # of a message with parts, its text parts (images count nothing)
    return total
