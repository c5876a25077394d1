"""Typed output end to end: each mode in a real session, retries, partial values, sub-agents, history.

Every run goes through a real runtime and session with a ``ScriptedModel``;
what the model was told (retry messages, schemas) is read back from
``ScriptedModel.requests``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import TYPE_CHECKING, Any

import attrs
import pydantic
import pytest
import trio
import trio.testing

from agents import (
    TRANSFER_TOOL,
    Agent,
    AssistantMessage,
    Hooks,
    RunContext,
    ScriptedModel,
    StopChunk,
    StopRun,
    TextChunk,
    ToolCall,
    ToolCallChunk,
    ToolResultMessage,
    UserMessage,
    tool,
)
from runtime import RunFailedError, RunResult, open_runtime
from runtime._loop import OUTPUT_DELTA_INTERVAL
from runtime.events import (
    ErrorEvent,
    Event,
    FinalOutput,
    ModelStopped,
    OutputDelta,
    RunFinished,
    SubAgentEvent,
    ToolCallFinished,
    ToolCallStarted,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agents import Message, ModelChunk, OutputMode


class Cat(pydantic.BaseModel):
    """A cat."""

    name: str
    lives: int = 9


@dataclasses.dataclass
class Dog:
    name: str
    good: bool


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@attrs.frozen
class Ran:
    """One finished run: its events, its result and the session's history after it."""

    events: list[Event]
    result: RunResult[Any]
    history: tuple[Message, ...]
    times: list[float] = attrs.field(factory=list)
    """``trio.current_time()`` when the consumer received each event."""


async def run_once(agent: Agent[Any, Any], prompt: str = "go") -> Ran:
    """Run ``agent`` once, streamed, in a fresh runtime and session."""
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        events: list[Event] = []
        times: list[float] = []
        async with session.run(prompt) as stream:
            async for event in stream:
                events.append(event)
                times.append(trio.current_time())
        return Ran(events, stream.result, session.history, times)


def turn(*chunks: ModelChunk) -> list[ModelChunk]:
    """A scripted response streaming exactly these chunks."""
    return list(chunks)


def finished(events: list[Event]) -> RunFinished:
    """The run's RunFinished, checking it is the only one and the last event."""
    finishes = [event for event in events if isinstance(event, RunFinished)]
    assert len(finishes) == 1
    assert events[-1] is finishes[0]
    return finishes[0]


def assert_history_valid(history: Sequence[Message]) -> None:
    """Every tool call has exactly one result, right after the response that made it (as providers demand)."""
    owed: list[str] = []
    for message in history:
        if isinstance(message, ToolResultMessage):
            assert message.call_id in owed, f"result {message.call_id} answers no open call"
            owed.remove(message.call_id)
            continue
        assert not owed, f"calls {owed} have no result before {message!r}"
        if isinstance(message, AssistantMessage):
            owed = [call.call_id for call in message.tool_calls]
            assert len(set(owed)) == len(owed)
    assert not owed, f"calls {owed} have no result at the end"


def results_for(history: Sequence[Message], name: str) -> list[ToolResultMessage]:
    return [m for m in history if isinstance(m, ToolResultMessage) and m.name == name]


def tool_names(model: ScriptedModel, turn: int = 0) -> list[str]:
    return [spec.name for spec in model.requests[turn].tools]


# -- each mode ------------------------------------------------------------------


async def test_typed_output_tool_mode_answers_through_final_result() -> None:
    """In tool mode the model is offered final_result with the type's schema; its call becomes RunResult.output."""
    model = ScriptedModel([ToolCall("final_result", {"name": "Tom"})])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, tools=[add]))
    assert ran.result.reason == "completed"
    assert ran.result.output == Cat(name="Tom", lives=9)
    assert isinstance(ran.result.output, Cat)
    (offered,) = [spec for spec in model.requests[0].tools if spec.name == "final_result"]
    assert set(offered.parameters["properties"]) == {"name", "lives"}
    assert tool_names(model) == ["add", "final_result"]
    assert model.requests[0].output is None
    assert_history_valid(ran.history)
    assert [r.is_error for r in results_for(ran.history, "final_result")] == [False]


async def test_typed_output_native_mode_requests_the_schema_and_parses_the_text() -> None:
    """In native mode the request carries the schema (no final_result tool) and the JSON text is the answer."""
    model = ScriptedModel(['{"name": "Tom", "lives": 3}'])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, output_mode="native", instructions="Hi."))
    assert ran.result.output == Cat(name="Tom", lives=3)
    request = model.requests[0]
    assert request.output is not None
    assert request.output.name == "Cat"
    assert set(request.output.schema["properties"]) == {"name", "lives"}
    assert request.tools == ()
    assert request.instructions == "Hi."  # the provider enforces the schema: nothing added to the prompt
    assert ran.result.text == '{"name": "Tom", "lives": 3}'


async def test_typed_output_prompted_mode_puts_the_schema_in_the_instructions() -> None:
    """In prompted mode the schema is appended to the instructions, and JSON text (even fenced) is the answer."""
    model = ScriptedModel(['```json\n{"name": "Tom"}\n```'])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, output_mode="prompted", instructions="Hi."))
    assert ran.result.output == Cat(name="Tom")
    request = model.requests[0]
    assert request.output is None
    assert request.tools == ()
    assert request.instructions.startswith("Hi.\n\n")
    schema = json.loads(request.instructions.splitlines()[-1])
    assert set(schema["properties"]) == {"name", "lives"}


@pytest.mark.parametrize(
    "answer",
    [
        'Here is the JSON:\n```json\n{"name": "Tom"}\n```',
        '```json\n{"name": "Tom"}\n```\nLet me know if you need more.',
    ],
)
async def test_typed_output_prompted_answer_with_prose_around_its_fence_completes(answer: str) -> None:
    """Prose before or after a fenced answer is ignored: the run completes with the value the last
    OutputDelta showed, on the first try."""
    model = ScriptedModel([answer])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, output_mode="prompted", output_retries=0))
    assert finished(ran.events).reason == "completed"
    assert ran.result.output == Cat(name="Tom")
    assert [event.partial for event in ran.events if isinstance(event, OutputDelta)][-1] == {"name": "Tom"}
    assert len(model.requests) == 1


async def test_typed_output_union_member_is_chosen_by_the_tool_called() -> None:
    """A union offers final_result_<Member> tools; calling final_result_Dog gives a Dog."""
    model = ScriptedModel([ToolCall("final_result_Dog", {"name": "Rex", "good": True})])
    agent = Agent[None, Cat | Dog](name="a", model=model, output_type=Cat | Dog)
    ran = await run_once(agent)
    assert ran.result.output == Dog("Rex", True)
    assert tool_names(model) == ["final_result_Cat", "final_result_Dog"]
    assert_history_valid(ran.history)


@pytest.mark.parametrize(
    ("mode", "turn"),
    [
        ("tool", ToolCall("final_result", {"response": [1, 2, 3]})),
        ("native", '{"response": [1, 2, 3]}'),
        ("prompted", '{"response": [1, 2, 3]}'),
    ],
)
async def test_typed_output_non_object_type_is_unwrapped(mode: OutputMode, turn: str | ToolCall) -> None:
    """list[int] is answered as {"response": [...]} in every mode; the output is the list itself."""
    ran = await run_once(Agent(name="a", model=ScriptedModel([turn]), output_type=list[int], output_mode=mode))
    assert ran.result.output == [1, 2, 3]
    final = ran.events[-2]
    assert isinstance(final, FinalOutput)
    assert final.output == [1, 2, 3]


async def test_typed_output_ask_returns_the_validated_value() -> None:
    """Session.ask returns a RunResult whose output is the validated value."""
    agent = Agent(name="a", model=ScriptedModel(['{"name": "Tom"}']), output_type=Cat, output_mode="prompted")
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        result = await session.ask("go")
    assert result.output == Cat(name="Tom")
    assert result.reason == "completed"


async def test_typed_output_final_output_comes_just_before_run_finished() -> None:
    """The validated value is streamed as FinalOutput, the event right before RunFinished("completed")."""
    ran = await run_once(
        Agent(name="a", model=ScriptedModel([ToolCall("final_result", {"name": "Tom"})]), output_type=Cat)
    )
    assert finished(ran.events).reason == "completed"
    final = ran.events[-2]
    assert isinstance(final, FinalOutput)
    assert final.output is ran.result.output
    assert sum(isinstance(event, FinalOutput) for event in ran.events) == 1


async def test_typed_output_text_agent_streams_no_final_output() -> None:
    """A plain-text agent keeps today's stream: no FinalOutput and no OutputDelta."""
    ran = await run_once(Agent(name="a", model=ScriptedModel(['{"name": "Tom"}'])))
    assert ran.result.output == '{"name": "Tom"}'
    assert not [event for event in ran.events if isinstance(event, FinalOutput | OutputDelta)]


# -- retries --------------------------------------------------------------------


async def test_typed_output_invalid_call_is_retried_with_pydantics_errors() -> None:
    """An invalid final_result call gets an error result listing pydantic's errors; the model's next try counts."""
    model = ScriptedModel([ToolCall("final_result", {"name": 3}), ToolCall("final_result", {"name": "Tom"})])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat))
    assert ran.result.output == Cat(name="Tom")
    assert len(model.requests) == 2
    told = [m for m in model.requests[1].messages if isinstance(m, ToolResultMessage)]
    assert len(told) == 1
    assert told[0].name == "final_result"
    assert told[0].is_error
    assert '"loc": ["name"]' in told[0].content
    assert "Input should be a valid string" in told[0].content
    assert told[0].text.endswith("Fix it and call final_result again.")
    assert_history_valid(ran.history)


@pytest.mark.parametrize("mode", ["native", "prompted"])
async def test_typed_output_invalid_text_is_retried_with_pydantics_errors(mode: OutputMode) -> None:
    """In text modes an answer that does not validate is followed by a user message with pydantic's errors."""
    model = ScriptedModel(['{"lives": "many"}', '{"name": "Tom"}'])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, output_mode=mode))
    assert ran.result.output == Cat(name="Tom")
    retry = model.requests[1].messages[-1]
    assert isinstance(retry, UserMessage)
    assert "Field required" in retry.content
    assert '"loc": ["name"]' in retry.content
    assert '"loc": ["lives"]' in retry.content
    assert retry.text.endswith("Answer again: only JSON matching the schema.")


async def test_typed_output_text_that_is_not_json_is_retried() -> None:
    """Prose where JSON was asked for is a retry whose message says it is not valid JSON."""
    model = ScriptedModel(["Tom, a cat.", '{"name": "Tom"}'])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, output_mode="prompted"))
    assert ran.result.output == Cat(name="Tom")
    retry = model.requests[1].messages[-1]
    assert isinstance(retry, UserMessage)
    assert retry.text.startswith("the answer is not valid JSON")


@pytest.mark.parametrize("retries", [0, 2])
async def test_typed_output_retries_exhausted_end_the_run_with_an_output_error(retries: int) -> None:
    """output_retries=N allows N retries after the first answer; then ErrorEvent("output") and RunFinished("error")."""
    bad = [ToolCall("final_result", {"name": i}) for i in range(retries + 1)]
    model = ScriptedModel([*bad, ToolCall("final_result", {"name": "never asked"})])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, output_retries=retries))
    assert len(model.requests) == retries + 1
    assert finished(ran.events).reason == "error"
    errors = [event for event in ran.events if isinstance(event, ErrorEvent)]
    assert [error.kind for error in errors] == ["output"]
    assert f"after {retries + 1} attempt(s)" in errors[0].message
    assert "Input should be a valid string" in errors[0].message
    assert ran.events[-2] is errors[0]
    assert ran.result.output is None
    assert ran.result.error == errors[0]
    assert_history_valid(ran.history)


async def test_typed_output_ask_raises_run_failed_with_the_result_when_retries_run_out() -> None:
    """ask() raises RunFailedError(kind "output") carrying the run's result (no output, the error, the usage)."""
    model = ScriptedModel([ToolCall("final_result", {}), ToolCall("final_result", {})])
    agent = Agent(name="a", model=model, output_type=Cat)
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with pytest.raises(RunFailedError) as info:
            await session.ask("go")
    assert info.value.kind == "output"
    result = info.value.result
    assert result.reason == "error"
    assert result.output is None
    assert result.error is not None
    assert result.error.kind == "output"
    assert str(info.value) == result.error.message
    assert result.requests == 2
    assert result.usage.output_tokens > 0


async def test_typed_output_retries_count_against_max_turns() -> None:
    """Each retry is a turn: with max_turns=2 and many retries allowed, two bad answers end the run at max_turns."""
    model = ScriptedModel([ToolCall("final_result", {})] * 2 + [ToolCall("final_result", {"name": "late"})])
    agent = Agent(name="a", model=model, output_type=Cat, output_retries=5, max_turns=2)
    ran = await run_once(agent)
    assert len(model.requests) == 2
    assert finished(ran.events).reason == "max_turns"
    assert ran.result.output is None
    assert_history_valid(ran.history)


async def test_typed_output_tool_turns_do_not_use_up_retries() -> None:
    """Turns that call ordinary tools are not failed answers: output_retries=0 still allows them."""
    model = ScriptedModel(
        [
            ToolCall("add", {"a": 1, "b": 2}),
            ToolCall("add", {"a": 3, "b": 4}),
            ToolCall("final_result", {"name": "Tom"}),
        ]
    )
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, output_retries=0, tools=[add]))
    assert ran.result.output == Cat(name="Tom")
    assert [record.result for record in ran.result.tool_calls] == [3, 7]


async def test_typed_output_text_answer_in_tool_mode_is_retried_asking_for_final_result() -> None:
    """In tool mode a plain-text answer is a failed answer: the model is told to call final_result."""
    model = ScriptedModel(["It is a cat called Tom.", ToolCall("final_result", {"name": "Tom"})])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat))
    assert ran.result.output == Cat(name="Tom")
    retry = model.requests[1].messages[-1]
    assert isinstance(retry, UserMessage)
    assert "answer by calling final_result" in retry.content
    assert_history_valid(ran.history)


async def test_typed_output_text_answer_in_tool_mode_counts_as_a_failed_attempt() -> None:
    """With output_retries=0 a text answer in tool mode ends the run with an output error."""
    model = ScriptedModel(["It is a cat called Tom."])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, output_retries=0))
    assert finished(ran.events).reason == "error"
    error = ran.result.error
    assert error is not None
    assert error.kind == "output"
    assert "answered in text instead of calling the output tool" in error.message


async def test_typed_output_union_retry_names_every_member_tool() -> None:
    """For a union, the text retry lists each final_result_<Member> tool."""
    model = ScriptedModel(["a cat", ToolCall("final_result_Cat", {"name": "Tom"})])
    ran = await run_once(Agent[None, Cat | Dog](name="a", model=model, output_type=Cat | Dog))
    assert ran.result.output == Cat(name="Tom")
    retry = model.requests[1].messages[-1]
    assert isinstance(retry, UserMessage)
    assert "final_result_Cat or final_result_Dog" in retry.content


async def test_typed_output_union_with_str_takes_a_text_answer() -> None:
    """Cat | str in tool mode: a plain-text answer is the output, not a retry."""
    model = ScriptedModel(["Just text."])
    ran = await run_once(Agent[None, Cat | str](name="a", model=model, output_type=Cat | str))
    assert ran.result.output == "Just text."
    assert len(model.requests) == 1
    final = ran.events[-2]
    assert isinstance(final, FinalOutput)
    assert final.output == "Just text."


# -- history --------------------------------------------------------------------


async def test_typed_output_calls_beside_a_valid_answer_get_results_and_do_not_run() -> None:
    """A valid final_result ends the run: calls made beside it are not run but each gets a result."""
    model = ScriptedModel([[ToolCall("add", {"a": 1, "b": 2}), ToolCall("final_result", {"name": "Tom"})]])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, tools=[add]))
    assert ran.result.output == Cat(name="Tom")
    assert ran.result.tool_calls == ()
    assert not [event for event in ran.events if isinstance(event, ToolCallStarted)]
    assert_history_valid(ran.history)
    assert [r.name for r in ran.history if isinstance(r, ToolResultMessage)] == ["add", "final_result"]


async def test_typed_output_calls_beside_an_invalid_answer_run_and_all_get_results() -> None:
    """With an invalid final_result, the other calls of that response run; every call has a result next turn."""
    model = ScriptedModel(
        [
            [ToolCall("add", {"a": 1, "b": 2}), ToolCall("final_result", {"name": None})],
            ToolCall("final_result", {"name": "Tom"}),
        ]
    )
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, tools=[add]))
    assert ran.result.output == Cat(name="Tom")
    assert [(r.name, r.result) for r in ran.result.tool_calls] == [("add", 3)]
    seen = {m.name: m for m in model.requests[1].messages if isinstance(m, ToolResultMessage)}
    assert (seen["add"].content, seen["add"].is_error) == ("3", False)
    assert seen["final_result"].is_error
    assert_history_valid(model.requests[1].messages)
    assert_history_valid(ran.history)


async def test_typed_output_history_stays_valid_for_the_next_run() -> None:
    """After a run that retried, a second run in the session sends a history where every call has its result."""
    model = ScriptedModel(
        [
            ToolCall("final_result", {"lives": 1}),
            ToolCall("final_result", {"name": "Tom"}),
            ToolCall("final_result", {"name": "Felix"}),
        ]
    )
    agent = Agent(name="a", model=model, output_type=Cat)
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        first = await session.ask("one")
        second = await session.ask("two")
    assert (first.output, second.output) == (Cat(name="Tom"), Cat(name="Felix"))
    sent = model.requests[2].messages
    assert_history_valid(sent)
    assert [type(m).__name__ for m in sent] == [
        "UserMessage",
        "AssistantMessage",
        "ToolResultMessage",
        "AssistantMessage",
        "ToolResultMessage",
        "UserMessage",
    ]


# -- partial values -------------------------------------------------------------


def long_answer(words: int) -> str:
    return json.dumps({"name": " ".join(f"w{i}" for i in range(words))})


async def test_typed_output_deltas_are_sent_at_a_bounded_rate(autojump_clock: trio.testing.MockClock) -> None:
    """While the answer streams, OutputDelta events come at most every OUTPUT_DELTA_INTERVAL (the last may follow
    sooner: it flushes the end), each a growing partial value, the last the whole value."""
    answer = long_answer(60)
    model = ScriptedModel([answer], chunk_delay=0.01)  # a chunk every 10 ms, for about 0.6 s
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, output_mode="prompted"))
    deltas = [
        (time, event.partial)
        for time, event in zip(ran.times, ran.events, strict=True)
        if isinstance(event, OutputDelta)
    ]
    duration = ran.times[-1] - ran.times[0]
    assert duration >= 0.6
    assert len(deltas) >= 5
    assert len(deltas) <= duration / OUTPUT_DELTA_INTERVAL + 2
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(deltas[:-1])]
    assert min(gaps) >= OUTPUT_DELTA_INTERVAL - 1e-9
    names = [partial.get("name", "") for _, partial in deltas]
    assert all(later.startswith(earlier) and later != earlier for earlier, later in itertools.pairwise(names))
    assert deltas[-1][1] == json.loads(answer)
    final = ran.events[-2]
    assert isinstance(final, FinalOutput)
    assert final.output == Cat(name=json.loads(answer)["name"])


async def test_typed_output_deltas_do_not_follow_every_chunk(autojump_clock: trio.testing.MockClock) -> None:
    """A whole answer streamed at one instant is parsed once as it begins and once at its end, not per chunk."""
    ran = await run_once(Agent(name="a", model=ScriptedModel([long_answer(60)]), output_type=Cat, output_mode="native"))
    deltas = [event.partial for event in ran.events if isinstance(event, OutputDelta)]
    assert len(deltas) == 2
    assert deltas[-1] == json.loads(long_answer(60))


async def test_typed_output_deltas_in_tool_mode_follow_the_final_result_arguments(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """In tool mode the partial value is parsed from final_result's argument deltas (never another tool's)."""
    name = " ".join(f"w{i}" for i in range(30))
    model = ScriptedModel(
        [ToolCall("add", {"a": 1, "b": 2}), ToolCall("final_result", {"name": name})],
        stream_arguments=True,
        chunk_delay=0.01,
    )
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, tools=[add]))
    deltas = [event.partial for event in ran.events if isinstance(event, OutputDelta)]
    assert len(deltas) >= 3
    assert all(set(partial) <= {"name"} for partial in deltas)  # nothing of add's {"a", "b"}
    assert deltas[-1] == {"name": name}
    assert ran.result.output == Cat(name=name)


async def test_typed_output_deltas_of_a_wrapped_type_are_unwrapped(autojump_clock: trio.testing.MockClock) -> None:
    """For list[int] the partial values are the list so far, not the {"response": ...} wrapper."""
    values = list(range(40))
    model = ScriptedModel([ToolCall("final_result", {"response": values})], stream_arguments=True, chunk_delay=0.01)
    ran = await run_once(Agent(name="a", model=model, output_type=list[int]))
    deltas = [event.partial for event in ran.events if isinstance(event, OutputDelta)]
    assert len(deltas) >= 3
    assert all(isinstance(partial, list) and partial == values[: len(partial)] for partial in deltas)
    assert deltas[-1] == values


# -- max_tokens -----------------------------------------------------------------


async def test_typed_output_text_cut_at_max_tokens_is_a_validation_retry() -> None:
    """A JSON answer cut off at max_tokens is retried, and the model is told it was cut off; not a crash."""
    model = ScriptedModel([turn(TextChunk('{"name": "To'), StopChunk("max_tokens", "length")), '{"name": "Tom"}'])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, output_mode="prompted"))
    assert ran.result.output == Cat(name="Tom")
    assert [(e.reason, e.raw) for e in ran.events if isinstance(e, ModelStopped)] == [
        ("max_tokens", "length"),
        ("end_turn", None),
    ]
    retry = model.requests[1].messages[-1]
    assert isinstance(retry, UserMessage)
    assert retry.text.startswith("the response was cut off at the token limit (max_tokens)")


async def test_typed_output_call_cut_at_max_tokens_is_a_validation_retry() -> None:
    """final_result arguments cut off at max_tokens are an error result saying so, and the model tries again."""
    model = ScriptedModel(
        [
            turn(ToolCallChunk("c1", "final_result", '{"name": "To'), StopChunk("max_tokens", "max_tokens")),
            ToolCall("final_result", {"name": "Tom"}),
        ]
    )
    ran = await run_once(Agent(name="a", model=model, output_type=Cat))
    assert ran.result.output == Cat(name="Tom")
    (told,) = [m for m in model.requests[1].messages if isinstance(m, ToolResultMessage)]
    assert told.is_error
    assert "cut off at the token limit (max_tokens)" in told.content
    assert_history_valid(ran.history)


async def test_typed_output_text_answer_of_a_union_with_str_cut_at_max_tokens_is_retried() -> None:
    """With ``str | Cat``, a text answer cut off at max_tokens is no answer: the model is told, and its next,
    whole answer is the output."""
    model = ScriptedModel(
        [turn(TextChunk("The cat is call"), StopChunk("max_tokens", "length")), "The cat is called Tom."]
    )
    ran = await run_once(Agent(name="a", model=model, output_type=str | Cat))
    assert ran.result.output == "The cat is called Tom."
    assert finished(ran.events).reason == "completed"
    assert [e for e in ran.events if isinstance(e, FinalOutput)] == [FinalOutput("The cat is called Tom.")]
    retry = model.requests[1].messages[-1]
    assert isinstance(retry, UserMessage)
    assert retry.text == (
        "the response was cut off at the token limit (max_tokens), so the text answer is incomplete. "
        "Answer again, more briefly."
    )


async def test_typed_output_cut_answer_with_no_retries_left_is_an_output_error() -> None:
    """With no retries left, a cut-off answer ends the run with an output error naming max_tokens."""
    model = ScriptedModel([turn(TextChunk('{"name": "To'), StopChunk("max_tokens", "length"))])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, output_mode="native", output_retries=0))
    assert finished(ran.events).reason == "error"
    assert ran.result.error is not None
    assert ran.result.error.kind == "output"
    assert "max_tokens" in ran.result.error.message
    assert ran.result.stop_reason == "max_tokens"


# -- sub-agents and hooks -------------------------------------------------------


async def test_typed_output_sub_agent_answers_its_parent_with_its_value_as_json() -> None:
    """A typed sub-agent's validated value, as JSON, is the parent's transfer tool result."""
    child = Agent(name="vet", model=ScriptedModel([ToolCall("final_result", {"name": "Tom"})]), output_type=Cat)
    model = ScriptedModel([ToolCall(TRANSFER_TOOL, {"agent": "vet", "task": "name the cat"}), "Its name is Tom."])
    ran = await run_once(Agent(name="boss", model=model, sub_agents=[child]))
    (told,) = [m for m in model.requests[1].messages if isinstance(m, ToolResultMessage)]
    assert not told.is_error
    assert json.loads(told.text) == {"name": "Tom", "lives": 9}
    (done,) = [e for e in ran.events if isinstance(e, ToolCallFinished)]
    assert json.loads(done.result) == {"name": "Tom", "lives": 9}
    # The child's FinalOutput reaches the parent's stream wrapped, like its other events.
    wrapped = [e.event for e in ran.events if isinstance(e, SubAgentEvent) and isinstance(e.event, FinalOutput)]
    assert wrapped == [FinalOutput(Cat(name="Tom"))]
    assert ran.result.output == "Its name is Tom."


async def test_typed_output_sub_agent_that_fails_validation_is_an_error_result() -> None:
    """A typed sub-agent out of retries is an error result for its parent, which goes on."""
    child = Agent(name="vet", model=ScriptedModel(["no idea"]), output_type=Cat, output_retries=0)
    model = ScriptedModel([ToolCall(TRANSFER_TOOL, {"agent": "vet", "task": "name the cat"}), "It failed."])
    ran = await run_once(Agent(name="boss", model=model, sub_agents=[child]))
    (told,) = [m for m in model.requests[1].messages if isinstance(m, ToolResultMessage)]
    assert told.is_error
    assert told.text.startswith("vet failed: the output was not valid")
    assert finished(ran.events).reason == "completed"


class StopEverything(Hooks):
    async def on_user_prompt(self, ctx: RunContext[Any], prompt: str) -> StopRun | None:
        return StopRun("not today")


async def test_typed_output_hook_stop_has_no_output() -> None:
    """A run stopped by a hook has no typed output: output is None, and ask() returns it (hook_stop is no failure)."""
    agent = Agent(name="a", model=ScriptedModel([]), output_type=Cat, hooks=[StopEverything()])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        result = await session.ask("go")
        async with session.run("again") as stream:
            events = [event async for event in stream]
    assert result.reason == "hook_stop"
    assert result.output is None
    assert finished(events) == RunFinished("hook_stop", "not today")
    assert not [event for event in events if isinstance(event, FinalOutput)]


async def test_typed_output_sub_agent_stopped_by_a_hook_answers_its_parent_with_the_hooks_message() -> None:
    """A typed sub-agent stopped by its hook tells its parent the hook's message (as a text one does), not
    "null"."""
    child = Agent(name="vet", model=ScriptedModel([]), output_type=Cat, hooks=[StopEverything()])
    model = ScriptedModel([ToolCall(TRANSFER_TOOL, {"agent": "vet", "task": "name the cat"}), "Not today."])
    ran = await run_once(Agent(name="boss", model=model, sub_agents=[child]))
    (told,) = [m for m in model.requests[1].messages if isinstance(m, ToolResultMessage)]
    assert (told.text, told.is_error) == ("not today", False)
    assert finished(ran.events).reason == "completed"


async def test_typed_output_sub_agent_out_of_turns_is_an_error_result_unlike_a_none_answer() -> None:
    """A typed sub-agent that reaches max_turns without an answer is an error result for its parent, while
    one whose valid answer is None gives "null"."""
    asks = ScriptedModel([ToolCall("add", {"a": 1, "b": 2})])
    child = Agent(name="vet", model=asks, output_type=Cat, tools=[add], max_turns=1)
    model = ScriptedModel([ToolCall(TRANSFER_TOOL, {"agent": "vet", "task": "name the cat"}), "It failed."])
    ran = await run_once(Agent(name="boss", model=model, sub_agents=[child]))
    (told,) = [m for m in model.requests[1].messages if isinstance(m, ToolResultMessage)]
    assert told.is_error
    assert told.text == "vet failed: it ended without an answer: the run reached max_turns=1"
    assert finished(ran.events).reason == "completed"

    answers_none = ScriptedModel([ToolCall("final_result", {"response": None})])
    maybe = Agent(name="vet", model=answers_none, output_type=Cat | None)
    model = ScriptedModel([ToolCall(TRANSFER_TOOL, {"agent": "vet", "task": "name the cat"}), "No cat."])
    await run_once(Agent(name="boss", model=model, sub_agents=[maybe]))
    (told,) = [m for m in model.requests[1].messages if isinstance(m, ToolResultMessage)]
    assert (told.text, told.is_error) == ("null", False)


@tool
async def hang() -> int:
    """Never return."""
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def test_typed_output_history_valid_when_the_run_times_out_beside_an_invalid_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A run timing out while a call made beside an invalid final_result runs still leaves every call a result."""
    model = ScriptedModel([[ToolCall("hang"), ToolCall("final_result", {"name": None})]])
    ran = await run_once(Agent(name="a", model=model, output_type=Cat, tools=[hang], run_timeout=1))
    assert finished(ran.events).reason == "timeout"
    assert_history_valid(ran.history)
    (told,) = results_for(ran.history, "final_result")
    assert told.is_error


async def test_typed_output_history_valid_when_the_consumer_leaves_beside_an_invalid_answer() -> None:
    """A consumer leaving while a call made beside an invalid final_result runs leaves every call a result."""
    model = ScriptedModel([[ToolCall("hang"), ToolCall("final_result", {"name": None})]])
    agent = Agent(name="a", model=model, output_type=Cat, tools=[hang])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            async for event in stream:
                if isinstance(event, ToolCallStarted):
                    break
        history = session.history
    assert_history_valid(history)
    assert sorted(m.name for m in history if isinstance(m, ToolResultMessage)) == ["final_result", "hang"]
