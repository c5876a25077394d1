"""Why the model stopped: ModelStopped events, RunResult.stop_reason, refusals, and cut-off tool arguments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import pydantic
import pytest

from agents import (
    TRANSFER_TOOL,
    Agent,
    AssistantMessage,
    RefusalChunk,
    ScriptedModel,
    StopChunk,
    TextChunk,
    ToolCall,
    ToolCallChunk,
    ToolResultMessage,
    UsageChunk,
    tool,
)
from runtime import RunFailedError, RunResult, open_runtime
from runtime.events import (
    STOP_REASONS,
    ErrorEvent,
    Event,
    FinalOutput,
    ModelStopped,
    Refusal,
    RunFinished,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
)

if TYPE_CHECKING:
    from agents import Message, ModelChunk, StopReason


class Cat(pydantic.BaseModel):
    name: str


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@attrs.frozen
class Ran:
    events: list[Event]
    result: RunResult[Any]
    history: tuple[Message, ...]


async def run_once(agent: Agent[Any, Any]) -> Ran:
    """Run ``agent`` once, streamed, in a fresh runtime and session."""
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            events = [event async for event in stream]
        return Ran(events, stream.result, session.history)


def finished(events: list[Event]) -> RunFinished:
    """The run's RunFinished, checking it is the only one and the last event."""
    finishes = [event for event in events if isinstance(event, RunFinished)]
    assert len(finishes) == 1
    assert events[-1] is finishes[0]
    return finishes[0]


def turn(*chunks: ModelChunk) -> list[ModelChunk]:
    """A scripted response streaming exactly these chunks."""
    return list(chunks)


def stops(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(event.reason, event.raw) for event in events if isinstance(event, ModelStopped)]


# -- stop reasons ---------------------------------------------------------------


async def test_stop_reason_of_each_response_reaches_the_consumer() -> None:
    """Every model response ends with a ModelStopped event; RunResult.stop_reason is the last response's."""
    model = ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "It is 3."])
    ran = await run_once(Agent(name="a", model=model, tools=[add]))
    assert stops(ran.events) == [("tool_use", None), ("end_turn", None)]
    assert ran.result.stop_reason == "end_turn"
    # Each ModelStopped follows its response's content and precedes the tools that response asked for.
    first_stop = next(i for i, e in enumerate(ran.events) if isinstance(e, ModelStopped))
    first_tool = next(i for i, e in enumerate(ran.events) if isinstance(e, ToolCallStarted))
    assert first_stop < first_tool


async def test_stop_reason_max_tokens_on_a_text_answer_is_visible() -> None:
    """A text answer cut at max_tokens completes, and the cut is visible: ModelStopped and stop_reason say so."""
    model = ScriptedModel([turn(TextChunk("The answer is"), StopChunk("max_tokens", "length"))])
    ran = await run_once(Agent(name="a", model=model))
    assert finished(ran.events).reason == "completed"
    assert ran.result.output == "The answer is"
    assert stops(ran.events) == [("max_tokens", "length")]
    assert ran.result.stop_reason == "max_tokens"


@pytest.mark.parametrize(
    ("reason", "raw"),
    [
        ("content_filter", "content_filter"),
        ("pause_turn", "pause_turn"),
        ("other", "stop_sequence_unknown"),
        ("end_turn", "stop"),
    ],
)
async def test_stop_reason_keeps_the_normalised_reason_and_the_providers_raw_value(
    reason: StopReason, raw: str
) -> None:
    """Whatever the normalised reason, the provider's raw value travels with it to the event and the result."""
    model = ScriptedModel([turn(TextChunk("partial"), StopChunk(reason, raw))])
    ran = await run_once(Agent(name="a", model=model))
    assert stops(ran.events) == [(reason, raw)]
    assert ran.result.stop_reason == reason


def test_stop_reasons_are_the_normalised_set() -> None:
    """The normalised stop reasons are exactly those of the issue."""
    assert (
        frozenset({"end_turn", "tool_use", "max_tokens", "content_filter", "refusal", "pause_turn", "other"})
        == STOP_REASONS
    )


async def test_stop_reason_is_none_when_the_model_never_answered() -> None:
    """A run whose model failed before sending a response has no stop reason."""
    ran = await run_once(Agent(name="a", model=ScriptedModel([]), max_turns=1))
    assert finished(ran.events).reason == "error"  # the script was empty
    assert ran.result.stop_reason is None
    assert not stops(ran.events)


# -- refusals -------------------------------------------------------------------


async def test_refusal_chunks_end_the_run_with_refusal() -> None:
    """OpenAI-style refusal pieces become one Refusal event with their text, then RunFinished("refusal")."""
    model = ScriptedModel(
        [turn(RefusalChunk("I can't "), RefusalChunk("help with that."), StopChunk("end_turn", "stop"))]
    )
    ran = await run_once(Agent(name="a", model=model))
    refusals = [event for event in ran.events if isinstance(event, Refusal)]
    assert refusals == [Refusal("I can't help with that.")]
    assert ran.events[-2] is refusals[0]
    assert finished(ran.events) == RunFinished("refusal", "I can't help with that.")
    assert ran.result.reason == "refusal"
    assert ran.result.refusal == "I can't help with that."
    assert ran.result.error is None
    assert not [event for event in ran.events if isinstance(event, ErrorEvent)]


async def test_refusal_stop_reason_makes_the_written_text_the_refusal() -> None:
    """Anthropic-style stop_reason "refusal": the text written before it is the refusal, not an answer."""
    model = ScriptedModel([turn(TextChunk("I won't "), TextChunk("do that."), StopChunk("refusal", "refusal"))])
    ran = await run_once(Agent(name="a", model=model))
    assert [event for event in ran.events if isinstance(event, Refusal)] == [Refusal("I won't do that.")]
    assert finished(ran.events).reason == "refusal"
    assert ran.result.refusal == "I won't do that."
    assert ran.result.stop_reason == "refusal"
    assert ran.result.text == ""
    assert stops(ran.events) == [("refusal", "refusal")]


async def test_refusal_without_text_still_ends_the_run_with_refusal() -> None:
    """A refusal with no text is still a refusal (not completed with empty text), with a message saying so."""
    ran = await run_once(Agent(name="a", model=ScriptedModel([[StopChunk("refusal")]])))
    assert [event for event in ran.events if isinstance(event, Refusal)] == [Refusal("")]
    assert finished(ran.events) == RunFinished("refusal", "the model refused to answer")
    assert ran.result.refusal == ""


async def test_refusal_makes_ask_raise_run_failed_with_the_result() -> None:
    """ask() raises RunFailedError(kind "refusal") whose result holds the refusal, the stop reason and the usage."""
    model = ScriptedModel([turn(TextChunk("No."), StopChunk("refusal", "refusal"), UsageChunk(12, 2))])
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=model)) as session:
        with pytest.raises(RunFailedError, match=r"the model refused: No\.$") as info:
            await session.ask("go")
    assert info.value.kind == "refusal"
    result = info.value.result
    assert result.reason == "refusal"
    assert result.refusal == "No."
    assert result.stop_reason == "refusal"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 2)
    assert result.requests == 1


async def test_refusal_of_a_typed_output_is_not_retried() -> None:
    """A refusal is not a failed answer: a typed run ends at once with refusal and no output."""
    model = ScriptedModel([[RefusalChunk("no")], ToolCall("final_result", {"name": "never"})])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, output_retries=3))
    assert len(model.requests) == 1
    assert finished(ran.events).reason == "refusal"
    assert ran.result.output is None
    assert not [event for event in ran.events if isinstance(event, FinalOutput)]


async def test_refusal_with_tool_calls_runs_none_and_leaves_history_valid() -> None:
    """Calls in a refusing response are not run, and the history holds no call left without a result."""
    model = ScriptedModel(
        [turn(ToolCallChunk("c1", "add", {"a": 1, "b": 2}), RefusalChunk("on second thought, no")), "next run"]
    )
    agent = Agent(name="a", model=model, tools=[add])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            events = [event async for event in stream]
        second = await session.ask("again")
    assert not [event for event in events if isinstance(event, ToolCallStarted | ToolCallFinished)]
    assert finished(events).reason == "refusal"
    assert second.output == "next run"
    sent = model.requests[1].messages
    assert not [m for m in sent if isinstance(m, AssistantMessage) and m.tool_calls]
    assert not [m for m in sent if isinstance(m, ToolResultMessage)]


async def test_refusal_of_a_sub_agent_is_an_error_result_for_the_parent() -> None:
    """A sub-agent that refuses is an error result naming the refusal; the parent's run goes on."""
    helper = Agent(name="helper", model=ScriptedModel([[RefusalChunk("not my job")]]))
    model = ScriptedModel([ToolCall(TRANSFER_TOOL, {"agent": "helper", "task": "do it"}), "fine, I'll do it"])
    ran = await run_once(Agent(name="boss", model=model, sub_agents=[helper]))
    (told,) = [m for m in model.requests[1].messages if isinstance(m, ToolResultMessage)]
    assert told.is_error
    assert told.content == "helper failed: it refused: not my job"
    assert finished(ran.events).reason == "completed"
    assert ran.result.refusal is None


# -- cut-off tool arguments -------------------------------------------------------


async def test_tool_arguments_cut_at_max_tokens_are_an_error_result_saying_so() -> None:
    """Arguments cut off by max_tokens reach the model as an error result that says they were cut off."""
    model = ScriptedModel(
        [turn(ToolCallChunk("c1", "add", '{"a": 1, "b'), StopChunk("max_tokens", "length")), "I'll be briefer."]
    )
    ran = await run_once(Agent(name="a", model=model, tools=[add]))
    (done,) = [event for event in ran.events if isinstance(event, ToolCallFinished)]
    assert done.result is None
    assert done.error is not None
    assert "were cut off" in done.error
    assert "max_tokens" in done.error
    (told,) = [m for m in model.requests[1].messages if isinstance(m, ToolResultMessage)]
    assert (told.call_id, told.is_error, told.content) == ("c1", True, done.error)
    assert finished(ran.events).reason == "completed"
    assert not [event for event in ran.events if isinstance(event, ErrorEvent)]


async def test_tool_arguments_cut_at_max_tokens_do_not_stop_the_complete_calls() -> None:
    """Of the calls in a cut response, the complete ones still run; only the cut one is an error result."""
    model = ScriptedModel(
        [
            turn(
                ToolCallChunk("c1", "add", '{"a": 1, "b": 2}'),
                ToolCallChunk("c2", "add", '{"a": 3, "b": '),
                StopChunk("max_tokens", "length"),
            ),
            "done",
        ]
    )
    ran = await run_once(Agent(name="a", model=model, tools=[add]))
    results = {
        event.call_id: (event.result, event.error) for event in ran.events if isinstance(event, ToolCallFinished)
    }
    assert results["c1"] == (3, None)
    assert results["c2"][0] is None
    assert "were cut off" in str(results["c2"][1])


async def test_bad_tool_arguments_without_max_tokens_are_not_called_cut_off() -> None:
    """Broken JSON in a response that ended normally is reported as invalid JSON, not as a cut."""
    model = ScriptedModel([turn(ToolCallChunk("c1", "add", '{"a": 1, "b'), StopChunk("tool_use")), "done"])
    ran = await run_once(Agent(name="a", model=model, tools=[add]))
    (done,) = [event for event in ran.events if isinstance(event, ToolCallFinished)]
    assert done.error is not None
    assert "not valid JSON" in done.error
    assert "cut off" not in done.error


async def test_text_deltas_before_a_refusal_are_still_streamed() -> None:
    """What the model wrote before its refusal stop reason was streamed as it came (nothing is held back)."""
    model = ScriptedModel([turn(TextChunk("I won't"), StopChunk("refusal"))])
    ran = await run_once(Agent(name="a", model=model))
    assert [event.text for event in ran.events if isinstance(event, TextDelta)] == ["I won't"]


async def test_refusal_output_of_a_text_agent_is_not_an_earlier_responses_text() -> None:
    """After a tool turn, a refusing response is the last one: output is its text (empty), not the earlier words."""
    model = ScriptedModel(
        [
            turn(TextChunk("Let me add."), ToolCallChunk("c1", "add", {"a": 1, "b": 2}), StopChunk("tool_use")),
            turn(RefusalChunk("no")),
        ]
    )
    ran = await run_once(Agent(name="a", model=model, tools=[add]))
    assert ran.result.reason == "refusal"
    assert ran.result.refusal == "no"
    assert ran.result.output == ran.result.text == ""
