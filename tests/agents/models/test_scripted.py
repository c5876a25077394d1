"""ScriptedModel: a deterministic, offline model that answers from a script."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, strategies as st

from agents import (
    AssistantMessage,
    Model,
    ModelChunk,
    ModelRequest,
    ScriptedModel,
    ScriptExhaustedError,
    StopChunk,
    TextChunk,
    ToolCall,
    ToolCallChunk,
    UsageChunk,
    UserMessage,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


def _request(prompt: str = "hi", instructions: str = "") -> ModelRequest:
    return ModelRequest(instructions, (UserMessage(prompt),))


async def _collect(model: ScriptedModel, request: ModelRequest | None = None) -> list[ModelChunk]:
    async with model.stream(request if request is not None else _request()) as chunks:
        return [chunk async for chunk in chunks]


def _text(chunks: list[ModelChunk]) -> str:
    return "".join(chunk.text for chunk in chunks if isinstance(chunk, TextChunk))


def test_scripted_model_is_a_model() -> None:
    """ScriptedModel satisfies the ``Model`` protocol."""
    assert isinstance(ScriptedModel([]), Model)


async def test_scripted_text_turn_streams_several_deltas() -> None:
    """A ``str`` turn streams as several ``TextChunk`` deltas that join to the original text, then stop and usage."""
    model = ScriptedModel(["The answer is 42."])
    async with model.stream(_request()) as chunks:
        received = [chunk async for chunk in chunks]
    text_chunks = received[:-2]
    assert received[-2] == StopChunk("end_turn")
    assert isinstance(received[-1], UsageChunk)
    assert len(text_chunks) > 1
    assert all(isinstance(chunk, TextChunk) for chunk in text_chunks)
    assert _text(received) == "The answer is 42."


@pytest.mark.parametrize(
    "text",
    [
        "word",
        "two words",
        "  leading spaces",
        "line one\nline two",
        "tabs\tand   runs  of spaces",
        "é ü 漢字",
    ],
)
async def test_scripted_text_turn_keeps_inner_whitespace(text: str) -> None:
    """The deltas of a ``str`` turn keep its leading and inner whitespace exactly."""
    assert _text(await _collect(ScriptedModel([text]))) == text


@given(
    text=st.text(min_size=1).filter(lambda s: not s[-1].isspace()),
)
async def test_scripted_text_turn_joins_to_any_text(text: str) -> None:
    """For any text not ending in whitespace, the deltas join back to it."""
    assert _text(await _collect(ScriptedModel([text]))) == text


async def test_scripted_tool_call_turn_gives_a_tool_call_chunk() -> None:
    """A ``ToolCall`` turn streams one ``ToolCallChunk`` with its name and arguments, then a tool_use stop."""
    model = ScriptedModel([ToolCall("add", {"a": 1, "b": 2})])
    received = await _collect(model)
    assert len(received) == 3
    assert received[1] == StopChunk("tool_use")
    call = received[0]
    assert isinstance(call, ToolCallChunk)
    assert call.name == "add"
    assert call.arguments == {"a": 1, "b": 2}
    assert call.call_id


async def test_scripted_tool_call_without_arguments_has_empty_arguments() -> None:
    """A ``ToolCall`` with no arguments streams a chunk with ``{}`` as arguments."""
    received = await _collect(ScriptedModel([ToolCall("now")]))
    assert isinstance(received[0], ToolCallChunk)
    assert received[0].arguments == {}


async def test_scripted_tool_call_list_gives_chunks_with_distinct_ids() -> None:
    """A list of ``ToolCall``s streams one chunk each, in order, with distinct call ids."""
    model = ScriptedModel([[ToolCall("a", {"n": 1}), ToolCall("b", {"n": 2}), ToolCall("a", {"n": 3})], ToolCall("c")])
    first = [chunk for chunk in await _collect(model) if isinstance(chunk, ToolCallChunk)]
    second = [chunk for chunk in await _collect(model) if isinstance(chunk, ToolCallChunk)]
    assert [(chunk.name, chunk.arguments) for chunk in first] == [
        ("a", {"n": 1}),
        ("b", {"n": 2}),
        ("a", {"n": 3}),
    ]
    ids = [chunk.call_id for chunk in first + second]
    assert len(ids) == 4
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "turn",
    [
        pytest.param("Some final text.", id="text"),
        pytest.param(ToolCall("t"), id="tool-call"),
        pytest.param([ToolCall("t"), ToolCall("u")], id="tool-calls"),
    ],
)
async def test_scripted_usage_chunk_comes_last(turn: str | ToolCall | list[ToolCall]) -> None:
    """Every turn ends with exactly one ``UsageChunk``, after everything else."""
    received = await _collect(ScriptedModel([turn]))
    assert isinstance(received[-1], UsageChunk)
    assert not any(isinstance(chunk, UsageChunk) for chunk in received[:-1])


async def test_scripted_usage_counts_words() -> None:
    """Usage counts the request's words as input and the answer's words as output."""
    request = ModelRequest(
        "Be brief.", (UserMessage("what is two plus two"), AssistantMessage("four"), UserMessage("sure?"))
    )
    received = await _collect(ScriptedModel(["Yes, it is four."]), request)
    assert received[-1] == UsageChunk(input_tokens=2 + 5 + 1 + 1, output_tokens=4)


async def test_scripted_turns_are_consumed_in_order_across_calls() -> None:
    """Each call takes the next turn of the script, in order."""
    model = ScriptedModel(["first", ToolCall("second"), "third"])
    assert _text(await _collect(model)) == "first"
    second = await _collect(model)
    assert isinstance(second[0], ToolCallChunk)
    assert second[0].name == "second"
    assert _text(await _collect(model)) == "third"


async def test_scripted_turns_may_be_a_lazy_iterable() -> None:
    """The script may be any iterable, read one turn per call."""
    pulled: list[int] = []

    def turns() -> Iterator[str]:
        for i in range(3):
            pulled.append(i)
            yield f"turn{i}"

    model = ScriptedModel(turns())
    assert pulled == []
    assert _text(await _collect(model)) == "turn0"
    assert pulled == [0]


async def test_scripted_callable_turn_gets_the_request() -> None:
    """A callable turn is called with the request and its return value is the turn."""
    seen: list[ModelRequest] = []

    def echo(request: ModelRequest) -> str:
        seen.append(request)
        last = request.messages[-1]
        assert isinstance(last, UserMessage)
        return f"you said {last.content}"

    request = _request("hello")
    received = await _collect(ScriptedModel([echo]), request)
    assert seen == [request]
    assert seen[0] is request
    assert _text(received) == "you said hello"


async def test_scripted_callable_turn_may_return_tool_calls() -> None:
    """A callable turn may return tool calls, which stream as ``ToolCallChunk``s."""
    model = ScriptedModel([lambda request: [ToolCall("x"), ToolCall("y")]])
    names = [chunk.name for chunk in await _collect(model) if isinstance(chunk, ToolCallChunk)]
    assert names == ["x", "y"]


async def test_scripted_records_every_request() -> None:
    """Every request is recorded in ``.requests``, oldest first."""
    model = ScriptedModel(["one", "two"])
    first, second = _request("a"), _request("b")
    await _collect(model, first)
    await _collect(model, second)
    assert len(model.requests) == 2
    assert model.requests[0] is first
    assert model.requests[1] is second


async def test_scripted_record_requests_false_records_nothing() -> None:
    """With ``record_requests=False`` nothing is kept."""
    model = ScriptedModel(["one"], record_requests=False)
    await _collect(model)
    assert model.requests == []


async def test_scripted_exhausted_raises_on_entering_stream() -> None:
    """Once the script runs out, entering ``stream`` raises ``ScriptExhaustedError`` with a clear message."""
    model = ScriptedModel(["only"])
    await _collect(model)
    entered: list[bool] = []
    with pytest.raises(ScriptExhaustedError, match=r"ran out of turns after 1 model calls") as info:
        async with model.stream(_request()):
            entered.append(True)
    assert entered == []
    assert "add more turns" in str(info.value)


async def test_scripted_empty_script_raises_at_once() -> None:
    """A model with an empty script raises ``ScriptExhaustedError`` on the first call."""
    with pytest.raises(ScriptExhaustedError, match=r"after 0 model calls"):
        await _collect(ScriptedModel([]))


async def test_scripted_abandoned_chunks_do_not_warn() -> None:
    """Leaving the stream before its last chunk is clean: no warning about an unfinished iterator."""
    model = ScriptedModel(["many words to stream here", "next"])
    async with model.stream(_request()) as chunks:
        async for chunk in chunks:
            assert chunk == TextChunk("many")
            break
        del chunks
    # An abandoned async generator would warn when collected; the suite makes that an error.
    gc.collect()
    assert _text(await _collect(model)) == "next"
