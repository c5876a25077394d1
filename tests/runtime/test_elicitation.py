"""Asking the human: ToolContext.elicit, the ElicitationBridge, RunStream.respond, and tool approvals.

Every test runs under the leak checker and inside a ``trio.fail_after`` (on
``autojump_clock``, so a deadlock fails at once instead of hanging).
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import TYPE_CHECKING, Any, Literal, cast

import pydantic
import pytest
import trio
import trio.testing

from agents import (
    Agent,
    ElicitationResult,
    ElicitationTimeout,
    ElicitationUnavailable,
    ModelRequest,
    ScriptedModel,
    ToolCall,
    ToolContext,
    ToolResultMessage,
    tool,
)
from runtime import (
    AgentRuntimeError,
    ElicitationResponseError,
    InvalidElicitationResponse,
    UnknownElicitationError,
    open_runtime,
)
from runtime.events import (
    ElicitationRequest,
    Event,
    RunFinished,
    ToolCallFinished,
    ToolCallStarted,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from agents import ElicitationAction, SessionLike
    from runtime import RunStream
    from tests.runtime.conftest import ElicitingTool


def finished(events: list[Event]) -> RunFinished:
    """The run's RunFinished, checking it is the only one and the last event."""
    finishes = [event for event in events if isinstance(event, RunFinished)]
    assert len(finishes) == 1
    assert events[-1] is finishes[0]
    return finishes[0]


def requests_in(events: list[Event]) -> list[ElicitationRequest]:
    """The ElicitationRequest events, in arrival order."""
    return [event for event in events if isinstance(event, ElicitationRequest)]


def results_by_call(events: list[Event]) -> dict[str, ToolCallFinished]:
    """The ToolCallFinished events, by call id."""
    return {event.call_id: event for event in events if isinstance(event, ToolCallFinished)}


async def answer_all(
    stream: RunStream, answer: Callable[[ElicitationRequest], tuple[ElicitationAction, Any]]
) -> list[Event]:
    """Read the whole stream, answering each ElicitationRequest as ``answer`` says, and return every event."""
    events: list[Event] = []
    async for event in stream:
        events.append(event)
        if isinstance(event, ElicitationRequest):
            action, content = answer(event)
            await stream.respond(event.id, action, content)
    return events


class Deployment(pydantic.BaseModel):
    """What a deploy tool asks the human for."""

    env: Literal["staging", "prod"]
    replicas: int


FLAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "env": {"type": "string", "enum": ["staging", "prod"]},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["env"],
    "additionalProperties": False,
}


# -- asking and answering ------------------------------------------------------


async def test_elicit_accepted_answer_reaches_tool_validated_to_the_schema_type(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A question arrives as ElicitationRequest(id, message, JSON schema, agent); the accepted answer returns typed."""
    got: list[ElicitationResult] = []

    @tool
    async def pick(ctx: ToolContext[Any]) -> int:
        """Asks how many."""
        answer = await ctx.elicit("How many?", schema=int)
        got.append(answer)
        return int(answer.content) * 2

    agent = Agent(name="asker", model=ScriptedModel([ToolCall("pick"), "done"]), tools=[pick])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = await answer_all(stream, lambda request: ("accept", "21"))
    (request,) = requests_in(events)
    assert request.message == "How many?"
    assert request.schema == {"type": "integer"}
    assert request.agent == "asker"
    assert got == [ElicitationResult("accept", 21)]
    assert type(got[0].content) is int  # validated by the schema, not passed through as "21"
    assert got[0].accepted
    (started,) = [event for event in events if isinstance(event, ToolCallStarted)]
    (done,) = results_by_call(events).values()
    assert events.index(started) < events.index(request) < events.index(done)
    assert (done.result, done.error) == (42, None)
    assert finished(events).reason == "completed"


async def test_elicit_model_schema_returns_a_model_instance(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool
) -> None:
    """With a pydantic model as schema, the request shows its JSON schema and the tool gets an instance."""
    asked = eliciting_tool("deploy", "Where?", schema=Deployment)
    agent = Agent(name="a", model=ScriptedModel([ToolCall("deploy"), "done"]), tools=[asked.tool])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = await answer_all(stream, lambda request: ("accept", {"env": "prod", "replicas": "3"}))
    (request,) = requests_in(events)
    assert request.schema == Deployment.model_json_schema()
    got = [answer.content for answer in asked.answers]
    assert got == [Deployment(env="prod", replicas=3)]
    assert isinstance(got[0], Deployment)


@pytest.mark.parametrize("action", ["decline", "cancel"])
async def test_elicit_decline_or_cancel_returns_that_action_without_content(
    action: ElicitationAction, autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool
) -> None:
    """A declined or cancelled question returns that action, not accepted, and drops any content sent with it."""
    asked = eliciting_tool("ask", "Proceed?", schema=bool)
    got = asked.answers
    agent = Agent(name="a", model=ScriptedModel([ToolCall("ask"), "done"]), tools=[asked.tool])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = await answer_all(stream, lambda request: (action, True))
    assert got == [ElicitationResult(action, None)]
    assert not got[0].accepted
    assert finished(events).reason == "completed"


async def test_respond_with_invalid_content_is_rejected_and_the_request_stays_open(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool
) -> None:
    """An answer failing the schema raises InvalidElicitationResponse; the tool keeps waiting, a valid answer works."""
    asked = eliciting_tool("pick", "How many?", schema=int)
    got = asked.answers
    agent = Agent(name="a", model=ScriptedModel([ToolCall("pick"), "done"]), tools=[asked.tool])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ElicitationRequest):
                        with pytest.raises(InvalidElicitationResponse, match="does not match its schema") as info:
                            await stream.respond(event.id, "accept", "many")
                        assert event.id in str(info.value)
                        assert isinstance(info.value, ElicitationResponseError)
                        await trio.testing.wait_all_tasks_blocked()
                        assert stream.pending_elicitations == (event.id,)
                        assert got == []  # the tool did not wake up
                        await stream.respond(event.id, "accept", 7)
    assert got == [ElicitationResult("accept", 7)]


async def test_respond_with_unknown_action_is_rejected_and_the_request_stays_open(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool
) -> None:
    """An action other than accept, decline or cancel raises InvalidElicitationResponse and leaves the request open."""
    asked = eliciting_tool("ask", "Anything?")
    got = asked.answers
    agent = Agent(name="a", model=ScriptedModel([ToolCall("ask"), "done"]), tools=[asked.tool])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ElicitationRequest):
                        with pytest.raises(InvalidElicitationResponse, match="'maybe'"):
                            await stream.respond(event.id, "maybe", "x")  # type: ignore[arg-type]
                        assert stream.pending_elicitations == (event.id,)
                        await stream.respond(event.id, "accept", {"free": "form"})
    assert got == [ElicitationResult("accept", {"free": "form"})]


async def test_respond_flat_json_schema_checks_required_enum_range_and_types(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool
) -> None:
    """A flat JSON schema (MCP's subset) rejects each kind of bad answer with a clear reason, then takes a good one."""
    asked = eliciting_tool("configure", "Configure the deployment", schema=FLAT_SCHEMA)
    got = asked.answers

    bad_answers: list[tuple[Any, str]] = [
        ("prod", "expected object"),
        ({"replicas": 2}, "missing required field"),
        ({"env": "dev"}, "must be one of"),
        ({"env": "prod", "replicas": 9}, "maximum is 5"),
        ({"env": "prod", "replicas": 0}, "minimum is 1"),
        ({"env": "prod", "replicas": True}, "expected integer"),
        ({"env": "prod", "region": "eu"}, "unexpected field 'region'"),
    ]
    agent = Agent(name="a", model=ScriptedModel([ToolCall("configure"), "done"]), tools=[asked.tool])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ElicitationRequest):
                        assert event.schema == FLAT_SCHEMA
                        for content, reason in bad_answers:
                            with pytest.raises(InvalidElicitationResponse, match=reason):
                                await stream.respond(event.id, "accept", content)
                            assert stream.pending_elicitations == (event.id,)
                        await stream.respond(event.id, "accept", {"env": "prod", "replicas": 3})
    assert got == [ElicitationResult("accept", {"env": "prod", "replicas": 3})]


async def test_respond_flat_json_schema_checks_string_lengths_and_formats(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool
) -> None:
    """A flat schema's minLength/maxLength (in code points) and the formats email, uri, date, date-time are checked."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "pin": {"type": "string", "minLength": 4, "maxLength": 4},
            "email": {"type": "string", "format": "email"},
            "home": {"type": "string", "format": "uri"},
            "day": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "date-time"},
            "host": {"type": "string", "format": "hostname"},  # not one of MCP's: not checked
        },
    }
    asked = eliciting_tool("profile", "Your details?", schema=schema)
    bad_answers: list[tuple[Any, str]] = [
        ({"pin": "1"}, "pin: at least 4 characters"),
        ({"pin": "12345"}, "pin: at most 4 characters"),
        ({"email": "ada.example.org"}, "email: not a valid email"),
        ({"email": "ada@"}, "email: not a valid email"),
        ({"home": "example.org/ada"}, "home: not a valid uri"),
        ({"home": "https://example.org/a b"}, "home: not a valid uri"),
        ({"day": "2024-02-30"}, "day: not a valid date"),
        ({"day": "20240201"}, "day: not a valid date"),
        ({"at": "2024-02-01T10:00:00"}, "at: not a valid date-time"),  # RFC 3339 needs the offset
        ({"at": "2024-02-01T25:00:00Z"}, "at: not a valid date-time"),
    ]
    good = {
        "pin": "ab\U0001d11e\u00e9",  # four code points, though five UTF-16 units
        "email": "ada@example.org",
        "home": "https://example.org/ada?x=1#top",
        "day": "2024-02-29",
        "at": "2016-12-31t23:59:60.5+01:00",  # a leap second, lower-case separators
        "host": "not a hostname",
    }
    agent = Agent(name="a", model=ScriptedModel([ToolCall("profile"), "done"]), tools=[asked.tool])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ElicitationRequest):
                        for content, reason in bad_answers:
                            with pytest.raises(InvalidElicitationResponse, match=reason):
                                await stream.respond(event.id, "accept", content)
                            assert stream.pending_elicitations == (event.id,)
                        await stream.respond(event.id, "accept", good)
    assert asked.answers == [ElicitationResult("accept", good)]


async def test_consumer_editing_a_flat_schema_changes_neither_the_tools_schema_nor_validation(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool
) -> None:
    """The consumer gets its own copy of a dict schema: its edits leave the tool's dict and the answer's check alone."""
    schema = copy.deepcopy(FLAT_SCHEMA)
    asked = eliciting_tool("configure", "Configure the deployment", schema=schema)
    agent = Agent(name="a", model=ScriptedModel([ToolCall("configure"), "done"]), tools=[asked.tool])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ElicitationRequest):
                        assert event.schema is not None
                        # A UI that adds a choice for display, and drops the required list.
                        event.schema["properties"]["env"]["enum"].append("dev")
                        event.schema["required"] = []
                        with pytest.raises(InvalidElicitationResponse, match="must be one of"):
                            await stream.respond(event.id, "accept", {"env": "dev"})
                        with pytest.raises(InvalidElicitationResponse, match="missing required field"):
                            await stream.respond(event.id, "accept", {})
                        await stream.respond(event.id, "accept", {"env": "prod"})
    assert schema == FLAT_SCHEMA
    assert asked.answers == [ElicitationResult("accept", {"env": "prod"})]


async def test_respond_before_the_run_started_is_a_clear_error() -> None:
    """respond() on a RunStream that was never entered raises AgentRuntimeError instead of doing nothing."""
    agent = Agent(name="a", model=ScriptedModel(["unused"]))
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        stream = session.run("go")
        with pytest.raises(AgentRuntimeError, match="has not started"):
            await stream.respond("elicitation-1", "accept", 1)


# -- timeouts and nobody to ask --------------------------------------------------


async def test_elicit_timeout_raises_and_drops_the_request(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool
) -> None:
    """An unanswered question raises ElicitationTimeout after its timeout, is no longer pending, and the run goes on."""
    asked = eliciting_tool(
        "ask", "Quick, yes or no?", schema=bool, timeout=30, catch=ElicitationTimeout, fallback="gave up waiting"
    )
    agent = Agent(name="a", model=ScriptedModel([ToolCall("ask"), "done"]), tools=[asked.tool])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(100):
            async with session.run("go") as stream:
                events: list[Event] = []
                async for event in stream:
                    events.append(event)
                    if isinstance(event, ToolCallFinished):
                        (request,) = requests_in(events)
                        assert stream.pending_elicitations == ()
                        with pytest.raises(UnknownElicitationError, match=request.id):
                            await stream.respond(request.id, "accept", True)
    ((error, waited),) = asked.errors
    assert waited == 30
    assert "30" in str(error)
    assert [(e.result, e.error) for e in results_by_call(events).values()] == [("gave up waiting", None)]
    assert finished(events).reason == "completed"


async def test_elicit_answered_in_time_is_not_timed_out(autojump_clock: trio.testing.MockClock) -> None:
    """An answer that arrives before the timeout is returned, and the timeout never fires afterwards."""
    got: list[ElicitationResult] = []

    @tool
    async def ask(ctx: ToolContext[Any]) -> str:
        """Asks with a deadline, then works a while."""
        got.append(await ctx.elicit("Name?", schema=str, timeout=30))
        await trio.sleep(60)  # well past the question's timeout
        return "ok"

    agent = Agent(name="a", model=ScriptedModel([ToolCall("ask"), "done"]), tools=[ask])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(100):
            async with session.run("go") as stream:
                events = await answer_all(stream, lambda request: ("accept", "ada"))
    assert got == [ElicitationResult("accept", "ada")]
    assert [(e.result, e.error) for e in results_by_call(events).values()] == [("ok", None)]


async def test_elicit_timeout_also_bounds_delivery_to_a_stalled_consumer(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool
) -> None:
    """With the stream full and its consumer not reading, elicit(timeout=5) still raises ElicitationTimeout at 5 s."""
    asked = eliciting_tool("ask", "Still there?", timeout=5, catch=ElicitationTimeout)
    agent = Agent(name="a", model=ScriptedModel([ToolCall("ask"), "done"]), tools=[asked.tool])
    # event_buffer=0: every event waits for the consumer to take it.
    async with open_runtime(event_buffer=0) as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(100):
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ToolCallStarted):
                        break
                # The consumer stalls (busy elsewhere) without leaving the block.
                with trio.move_on_after(60):
                    await asked.recorded.wait()
    assert len(asked.errors) == 1
    assert asked.errors[0][1] == 5


@pytest.mark.parametrize("timeout", [-1.0, math.nan])
async def test_elicit_with_a_negative_or_nan_timeout_raises_value_error_before_asking(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool, timeout: float
) -> None:
    """elicit(timeout=-1 or NaN) raises a ValueError naming ``timeout``, sends no question, streamed or in ask()."""
    asked = eliciting_tool("ask", "Which one?", timeout=timeout, catch=ValueError, fallback="bad timeout")
    agent = Agent(name="a", model=ScriptedModel([ToolCall("ask"), "done"] * 2), tools=[asked.tool])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = [event async for event in stream]
            result = await session.ask("again")  # with no consumer, still the argument's error first
        assert session.elicitation.asked == 0
    assert requests_in(events) == []
    assert [(e.result, e.error) for e in results_by_call(events).values()] == [("bad timeout", None)]
    assert [(call.result, call.error) for call in result.tool_calls] == [("bad timeout", None)]
    assert [str(error) for error, _ in asked.errors] == [
        f"timeout must be None or a number of seconds >= 0, not {timeout!r}"
    ] * 2


@pytest.mark.parametrize("schema", [42, "x", object()], ids=["int", "str", "object"])
async def test_elicit_with_a_schema_pydantic_cannot_make_is_a_type_error_before_asking(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool, schema: Any
) -> None:
    """elicit(schema=42) (no type, typing form or mapping) raises TypeError saying what a schema is, not
    pydantic's own error, and sends no question."""
    asked = eliciting_tool("ask", "Which one?", schema=schema, catch=TypeError, fallback="bad schema")
    agent = Agent(name="a", model=ScriptedModel([ToolCall("ask"), "done"]), tools=[asked.tool])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = [event async for event in stream]
        assert session.elicitation.asked == 0
    assert requests_in(events) == []
    ((error, _),) = asked.errors
    assert str(error).startswith("an elicitation schema is a type, a typing form or a flat JSON schema mapping")


async def test_elicit_with_an_infinite_timeout_waits_for_the_answer(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool
) -> None:
    """elicit(timeout=math.inf) is allowed: it waits like no timeout at all."""
    asked = eliciting_tool("ask", "Which one?", schema=str, timeout=math.inf)
    agent = Agent(name="a", model=ScriptedModel([ToolCall("ask"), "done"]), tools=[asked.tool])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                await answer_all(stream, lambda request: ("accept", "b"))
    assert asked.answers == [ElicitationResult("accept", "b")]


@pytest.mark.parametrize("how", ["ask", "run-not-answerable"])
async def test_elicit_with_nobody_to_answer_raises_unavailable_at_once(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool, how: str
) -> None:
    """A run started with ask() has no consumer, and one started with ``session.run(..., answerable=False)``
    a consumer that only watches: elicit raises ElicitationUnavailable without waiting at all, and nothing
    is asked (no ElicitationRequest streamed)."""
    asked = eliciting_tool(
        "ask_human", "Which one?", schema=str, timeout=3600, catch=ElicitationUnavailable, fallback="used the default"
    )
    agent = Agent(name="a", model=ScriptedModel([ToolCall("ask_human"), "done"]), tools=[asked.tool])
    events: list[Event] = []
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            start = trio.current_time()
            if how == "ask":
                result = await session.ask("go")
            else:
                async with session.run("go", answerable=False) as stream:
                    events = [event async for event in stream]
                result = stream.result
            assert trio.current_time() == start
    ((error, waited),) = asked.errors
    assert waited == 0
    assert "no consumer can answer" in str(error)
    assert requests_in(events) == []
    assert [(call.result, call.error) for call in result.tool_calls] == [("used the default", None)]
    assert session.elicitation.asked == 0


async def test_elicit_unavailable_not_caught_becomes_the_tool_error_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A tool that lets ElicitationUnavailable escape under ask() gets an error result, and the run completes."""

    @tool
    async def ask_human(ctx: ToolContext[Any]) -> str:
        """Asks, with no fallback."""
        await ctx.elicit("Which one?")
        return "asked"

    model = ScriptedModel([ToolCall("ask_human"), "done"])
    agent = Agent(name="a", model=model, tools=[ask_human])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            result = await session.ask("go")
    (call,) = result.tool_calls
    assert call.error is not None
    assert "no consumer can answer" in call.error
    assert result.reason == "completed"
    (seen,) = [m for m in model.requests[1].messages if isinstance(m, ToolResultMessage)]
    assert seen.is_error


async def test_elicit_outside_a_runtime_raises_unavailable() -> None:
    """A tool called directly (no runtime, so no elicitor) gets ElicitationUnavailable, not an AttributeError."""

    @tool
    async def ask_human(ctx: ToolContext[Any]) -> str:
        """Asks."""
        await ctx.elicit("Which one?")
        return "asked"

    agent = Agent(name="a", model=ScriptedModel([]), tools=[ask_human])
    ctx: ToolContext[None] = ToolContext(None, agent, cast("SessionLike", None), "r1", "call-1", "ask_human")
    with pytest.raises(ElicitationUnavailable, match="not running in a runtime"):
        await ask_human.call(ctx, {})


async def test_elicit_after_the_run_finished_raises_unavailable(autojump_clock: trio.testing.MockClock) -> None:
    """A task a tool started that asks once the run is over gets ElicitationUnavailable, and the session lives on."""
    outcome: list[BaseException] = []
    run_over = trio.Event()

    async def follow_up(ctx: ToolContext[Any]) -> None:
        await run_over.wait()
        try:
            await ctx.elicit("Anything else?")
        except Exception as exc:
            outcome.append(exc)

    @tool
    async def schedule(ctx: ToolContext[Any]) -> str:
        """Starts a follow-up question in the background."""
        ctx.session.start_soon(follow_up, ctx)
        return "scheduled"

    agent = Agent(name="a", model=ScriptedModel([ToolCall("schedule"), "done"]), tools=[schedule])
    async with open_runtime() as runtime:
        handle = await runtime.start_session(agent)
        try:
            with trio.fail_after(10):
                async with handle.session.run("go") as stream:
                    events = [event async for event in stream]
                    assert finished(events).reason == "completed"
                    run_over.set()  # the consumer is still in its block, but the run is over
                    await trio.testing.wait_all_tasks_blocked()
            assert len(outcome) == 1
            assert isinstance(outcome[0], ElicitationUnavailable)
            assert handle.error is None
            assert not handle.closed
        finally:
            await handle.aclose()


async def test_elicit_in_cleanup_after_the_consumer_left_raises_unavailable_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A tool asking in shielded cleanup after its consumer left gets ElicitationUnavailable at once, not a wait."""
    outcome: list[tuple[BaseException, float]] = []

    @tool
    async def draft(ctx: ToolContext[Any]) -> str:
        """Works until cancelled, then asks whether to keep the draft."""
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True) as cleanup:
                cleanup.deadline = trio.current_time() + 10  # a bounded grace, so the bug cannot hang the test
                start = trio.current_time()
                try:
                    await ctx.elicit("Keep the draft?", schema=bool)
                except ElicitationUnavailable as exc:
                    outcome.append((exc, trio.current_time() - start))
        return "never"

    agent = Agent(name="a", model=ScriptedModel([ToolCall("draft"), "done"]), tools=[draft])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(100):
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ToolCallStarted):
                        await trio.testing.wait_all_tasks_blocked()
                        break
                left_at = trio.current_time()
            assert trio.current_time() == left_at
    assert len(outcome) == 1
    assert outcome[0][1] == 0


# -- guarantee: a question pending when the consumer leaves ---------------------


async def test_consumer_leaving_with_a_pending_question_cancels_the_tool_and_drops_it(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool
) -> None:
    """cagent #3073 family: leaving with a question pending cancels its tool at once and drops it; the session lives."""
    asked = eliciting_tool("ask", "Still there?")
    agent = Agent(name="a", model=ScriptedModel([ToolCall("ask"), "second run done"]), tools=[asked.tool])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ElicitationRequest):
                        request = event
                        break
                assert stream.pending_elicitations == (request.id,)
                left_at = trio.current_time()
            assert trio.current_time() == left_at  # nothing waited on the unanswered question
            assert asked.cancelled.is_set()
            assert len(stream.pending_elicitations) == 0
            with pytest.raises(UnknownElicitationError):
                await stream.respond(request.id, "accept", None)
            (result,) = [m for m in session.history if isinstance(m, ToolResultMessage)]
            assert result.is_error
            assert (await session.ask("again")).output == "second run done"


async def test_consumer_leaving_while_a_question_waits_for_room_cancels_the_tool(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool
) -> None:
    """A question still waiting for room on a full stream when the consumer leaves is dropped with its tool, at once."""
    asked = eliciting_tool("ask", "Still there?")
    agent = Agent(name="a", model=ScriptedModel([ToolCall("ask")]), tools=[asked.tool])
    async with open_runtime(event_buffer=0) as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ToolCallStarted):
                        await trio.testing.wait_all_tasks_blocked()
                        break
                # The question exists but is not on the stream yet: it waits for the consumer.
                assert len(stream.pending_elicitations) == 1
                assert session.elicitation.asked == 0
                left_at = trio.current_time()
            assert trio.current_time() == left_at
    assert asked.cancelled.is_set()
    assert len(stream.pending_elicitations) == 0
    assert session.elicitation.asked == 0


class SyncAsker:
    """A sync tool that asks from its worker thread with ``trio.from_thread.run(ctx.elicit, ...)``, twice."""

    def __init__(self) -> None:
        self.raised: list[BaseException] = []
        """What each of its two questions raised in the thread."""
        self.done = trio.Event()
        """Set when its thread has finished (the call's result is long discarded by then)."""

        @tool
        def ask(ctx: ToolContext[None]) -> str:
            """Asks the human from a worker thread."""
            try:
                for _ in range(2):  # the second question is asked after the call ended
                    try:
                        trio.from_thread.run(ctx.elicit, "Still there?")
                    except ElicitationUnavailable as exc:
                        self.raised.append(exc)
            finally:
                trio.from_thread.run_sync(self.done.set)
            return "asked"

        self.tool = ask


async def test_sync_tool_question_is_withdrawn_when_its_call_times_out() -> None:
    """A sync tool's question asked from its thread is withdrawn when tool_timeout ends the call: the thread's
    ``elicit`` raises ElicitationUnavailable at once, and so does one asked later, instead of waiting in a task
    outside the call (and the run, and the runtime) for an answer that never comes. Real clock: a thread."""
    asker = SyncAsker()
    agent = Agent(name="a", model=ScriptedModel([ToolCall("ask"), "done"]), tools=[asker.tool], tool_timeout=0.1)
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events: list[Event] = []
                async for event in stream:
                    events.append(event)
                    if isinstance(event, ToolCallFinished):
                        await asker.done.wait()
                        (request,) = requests_in(events)
                        assert stream.pending_elicitations == ()
                        with pytest.raises(UnknownElicitationError, match=request.id):
                            await stream.respond(request.id, "accept", None)
    assert [type(exc) for exc in asker.raised] == [ElicitationUnavailable, ElicitationUnavailable]
    assert all("tool call has ended" in str(exc) for exc in asker.raised)
    assert "tool_timeout" in str(results_by_call(events)["call_1_0"].error)
    assert finished(events).reason == "completed"


async def test_sync_tool_question_is_withdrawn_when_the_consumer_leaves() -> None:
    """A sync tool's question pending when the consumer leaves is dropped with its call: the thread's
    ``elicit`` raises ElicitationUnavailable, and nothing waits on after the run. Real clock: a thread."""
    asker = SyncAsker()
    agent = Agent(name="a", model=ScriptedModel([ToolCall("ask")]), tools=[asker.tool])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ElicitationRequest):
                        break
            await asker.done.wait()
    assert [type(exc) for exc in asker.raised] == [ElicitationUnavailable, ElicitationUnavailable]


# -- guarantee: concurrent questions, each answer to its own tool ---------------


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_concurrent_questions_each_answer_reaches_its_own_tool_in_any_order(
    order: tuple[int, ...], autojump_clock: trio.testing.MockClock
) -> None:
    """Three calls of one turn ask; all requests arrive, and each answer, in any order, reaches the tool that asked."""

    @tool
    async def ask(ctx: ToolContext[Any], n: int) -> str:
        """Asks question n."""
        answer = await ctx.elicit(f"question {n}", schema=str)
        return f"tool {n} got {answer.content}"

    model = ScriptedModel([[ToolCall("ask", {"n": n}) for n in range(3)], "done"])
    agent = Agent(name="a", model=model, tools=[ask])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events: list[Event] = []
                async for event in stream:
                    events.append(event)
                    if isinstance(event, ElicitationRequest) and len(requests_in(events)) == 3:
                        await trio.testing.wait_all_tasks_blocked()
                        by_question = {request.message: request for request in requests_in(events)}
                        assert sorted(stream.pending_elicitations) == sorted(r.id for r in by_question.values())
                        for n in order:
                            await stream.respond(by_question[f"question {n}"].id, "accept", f"answer {n}")
                            await trio.testing.wait_all_tasks_blocked()  # let the answered tool finish first
                        assert stream.pending_elicitations == ()
    call_of = {event.call_id: event.arguments["n"] for event in events if isinstance(event, ToolCallStarted)}
    finished_calls = results_by_call(events)
    assert {call_of[call_id]: done.result for call_id, done in finished_calls.items()} == {
        n: f"tool {n} got answer {n}" for n in range(3)
    }
    # The tools woke up in the order they were answered.
    assert [call_of[call_id] for call_id in finished_calls] == list(order)
    assert len({request.id for request in requests_in(events)}) == 3


async def test_pending_elicitations_lists_waiting_questions_oldest_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """pending_elicitations names every unanswered question, oldest first, and forgets each once answered."""

    @tool
    async def ask(ctx: ToolContext[Any], n: int) -> str:
        """Asks question n."""
        return str((await ctx.elicit(f"question {n}")).content)

    model = ScriptedModel([[ToolCall("ask", {"n": n}) for n in range(3)], "done"])
    agent = Agent(name="a", model=model, tools=[ask])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                seen: list[str] = []
                async for event in stream:
                    if isinstance(event, ElicitationRequest):
                        seen.append(event.id)
                        if len(seen) == 3:
                            assert stream.pending_elicitations == tuple(seen)
                            await stream.respond(seen[1], "accept", "b")
                            assert stream.pending_elicitations == (seen[0], seen[2])
                            await stream.respond(seen[0], "accept", "a")
                            await stream.respond(seen[2], "accept", "c")


async def test_two_sessions_questions_reach_their_own_consumer(autojump_clock: trio.testing.MockClock) -> None:
    """Two sessions asking at once (with the same request ids) each get the answer their own consumer gave."""

    @tool
    async def ask(ctx: ToolContext[Any]) -> str:
        """Asks for a name."""
        return str((await ctx.elicit("Name?", schema=str)).content)

    outputs: dict[str, list[Event]] = {}
    ids: dict[str, str] = {}
    both_asked = trio.Event()

    async with open_runtime() as runtime:

        async def converse(name: str) -> None:
            agent = Agent(name=name, model=ScriptedModel([ToolCall("ask"), "done"]), tools=[ask])
            async with runtime.open_session(agent) as session, session.run("go") as stream:
                events: list[Event] = []
                async for event in stream:
                    events.append(event)
                    if isinstance(event, ElicitationRequest):
                        ids[name] = event.id
                        if len(ids) == 2:
                            both_asked.set()
                        await both_asked.wait()  # both questions are open before either is answered
                        await stream.respond(event.id, "accept", f"answer for {name}")
                outputs[name] = events

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(converse, "left")
                nursery.start_soon(converse, "right")
    # Ids are unique across sessions, processes and restarts (a durable session keeps them), and each
    # answer reaches its own question through its own stream.
    assert ids["left"] != ids["right"]
    for name in ("left", "right"):
        (done,) = results_by_call(outputs[name]).values()
        assert done.result == f"answer for {name}"
        (request,) = requests_in(outputs[name])
        assert request.agent == name


# -- guarantee: answers to unknown or answered ids ------------------------------


async def test_respond_to_an_unknown_id_is_an_error_and_leaves_other_questions_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Answering an id that never existed raises UnknownElicitationError; the real questions stay open, answerable."""

    @tool
    async def ask(ctx: ToolContext[Any], n: int) -> str:
        """Asks question n."""
        return str((await ctx.elicit(f"question {n}", schema=str)).content)

    model = ScriptedModel([[ToolCall("ask", {"n": n}) for n in range(2)], "done"])
    agent = Agent(name="a", model=model, tools=[ask])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events: list[Event] = []
                async for event in stream:
                    events.append(event)
                    if isinstance(event, ElicitationRequest) and len(requests_in(events)) == 2:
                        before = stream.pending_elicitations
                        with pytest.raises(UnknownElicitationError, match="no-such-id") as info:
                            await stream.respond("no-such-id", "accept", "x")
                        assert isinstance(info.value, ElicitationResponseError)
                        await trio.testing.wait_all_tasks_blocked()
                        assert stream.pending_elicitations == before
                        assert results_by_call(events) == {}
                        for request in requests_in(events):
                            await stream.respond(request.id, "accept", request.message.upper())
    assert sorted(done.result for done in results_by_call(events).values()) == ["QUESTION 0", "QUESTION 1"]


async def test_respond_twice_is_an_error_and_keeps_the_first_answer(autojump_clock: trio.testing.MockClock) -> None:
    """A second answer to an id raises UnknownElicitationError; the tool keeps the first, the other stays unaffected."""

    @tool
    async def ask(ctx: ToolContext[Any], n: int) -> str:
        """Asks question n."""
        return str((await ctx.elicit(f"question {n}", schema=str)).content)

    model = ScriptedModel([[ToolCall("ask", {"n": n}) for n in range(2)], "done"])
    agent = Agent(name="a", model=model, tools=[ask])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events: list[Event] = []
                async for event in stream:
                    events.append(event)
                    if isinstance(event, ElicitationRequest) and len(requests_in(events)) == 2:
                        first, second = requests_in(events)
                        await stream.respond(first.id, "accept", "first answer")
                        with pytest.raises(UnknownElicitationError, match="already answered"):
                            await stream.respond(first.id, "accept", "second answer")
                        with pytest.raises(UnknownElicitationError):
                            await stream.respond(first.id, "decline")
                        assert stream.pending_elicitations == (second.id,)
                        await stream.respond(second.id, "accept", "other answer")
    first, second = requests_in(events)
    call_of = {event.call_id: event.arguments["n"] for event in events if isinstance(event, ToolCallStarted)}
    results = {f"question {call_of[call_id]}": done.result for call_id, done in results_by_call(events).items()}
    assert results == {first.message: "first answer", second.message: "other answer"}


# -- guarantee: no lock across a send, no unbounded buffer ----------------------


async def test_slow_consumer_questions_wait_for_room_instead_of_piling_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ironclaw #905 shape: ten tools ask a slowest consumer; at most event_buffer questions get ahead, none lost."""
    buffer, tools = 2, 10

    @tool
    async def ask(ctx: ToolContext[Any], n: int) -> int:
        """Asks question n."""
        return int((await ctx.elicit(str(n), schema=int)).content)

    model = ScriptedModel([[ToolCall("ask", {"n": n}) for n in range(tools)], "done"])
    agent = Agent(name="a", model=model, tools=[ask])
    ahead: list[int] = []
    async with open_runtime(event_buffer=buffer) as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events: list[Event] = []
                async for event in stream:
                    events.append(event)
                    # The slowest consumer: it reads only once every other task is blocked.
                    await trio.testing.wait_all_tasks_blocked()
                    received = len(requests_in(events))
                    # `asked` counts questions the bridge has put on the stream.
                    ahead.append(session.elicitation.asked - received)
                    if isinstance(event, ElicitationRequest):
                        await stream.respond(event.id, "accept", int(event.message) * 10)
    assert max(ahead) == buffer  # the stream did fill up with questions...
    assert min(ahead) >= 0
    assert session.elicitation.asked == tools  # ...and the rest waited for room, none were lost
    call_of = {event.call_id: event.arguments["n"] for event in events if isinstance(event, ToolCallStarted)}
    assert {call_of[c]: done.result for c, done in results_by_call(events).items()} == {n: n * 10 for n in range(tools)}
    assert finished(events).reason == "completed"


async def test_respond_while_other_questions_wait_for_room_completes_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ironclaw #905 shape: while other questions block on a full stream, answering one completes and wakes its tool."""
    got: list[int] = []

    @tool
    async def ask(ctx: ToolContext[Any], n: int) -> int:
        """Asks question n."""
        answer = int((await ctx.elicit(str(n), schema=int)).content)
        got.append(answer)
        return answer

    model = ScriptedModel([[ToolCall("ask", {"n": n}) for n in range(4)], "done"])
    agent = Agent(name="a", model=model, tools=[ask])
    async with open_runtime(event_buffer=1) as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events: list[Event] = []
                async for event in stream:
                    events.append(event)
                    if isinstance(event, ElicitationRequest):
                        first = event
                        break
                await trio.testing.wait_all_tasks_blocked()
                assert session.elicitation.asked < 4  # some questions are blocked on the full stream
                assert len(stream.pending_elicitations) == 4
                start = trio.current_time()
                with trio.fail_after(1):
                    await stream.respond(first.id, "accept", 100)
                assert trio.current_time() == start
                await trio.testing.wait_all_tasks_blocked()
                assert got == [100]  # the answered tool woke while the others were still blocked
                events += await answer_all(stream, lambda request: ("accept", int(request.message)))
    assert sorted(got) == sorted([n for n in range(4) if str(n) != first.message] + [100])
    assert finished(events).reason == "completed"


# -- tool approval -------------------------------------------------------------------


@tool(requires_approval=True)
async def deploy(env: str) -> str:
    """Deploy the service.

    Args:
        env: Where to.
    """
    return f"deployed to {env}"


async def test_approval_asks_before_running_and_runs_once_accepted(autojump_clock: trio.testing.MockClock) -> None:
    """A requires_approval tool asks "Allow <agent> to run <tool>(...)?" before running, and runs once accepted."""
    agent = Agent(name="ops", model=ScriptedModel([ToolCall("deploy", {"env": "prod"}), "done"]), tools=[deploy])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = await answer_all(stream, lambda request: ("accept", None))
    (request,) = requests_in(events)
    assert request.message.startswith("Allow ops to run deploy(env='prod')?")
    assert request.agent == "ops"
    (done,) = results_by_call(events).values()
    assert (done.result, done.error) == ("deployed to prod", None)
    assert events.index(request) < events.index(done)


@pytest.mark.parametrize("action", ["decline", "cancel"])
async def test_approval_refused_gives_the_model_declined_by_user_and_the_run_goes_on(
    action: ElicitationAction, autojump_clock: trio.testing.MockClock
) -> None:
    """A declined (or dismissed) approval never runs the tool; the model sees "declined by user"; the run completes."""
    ran: list[str] = []
    seen: list[ToolResultMessage] = []

    @tool(requires_approval=True)
    async def delete(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return "deleted"

    def after_refusal(request: ModelRequest) -> str:
        seen.extend(m for m in request.messages if isinstance(m, ToolResultMessage))
        return "understood, I will not delete it"

    model = ScriptedModel([ToolCall("delete", {"path": "/etc"}), after_refusal])
    agent = Agent(name="a", model=model, tools=[delete])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = await answer_all(stream, lambda request: (action, None))
    assert ran == []
    (done,) = results_by_call(events).values()
    assert (done.result, done.error) == (None, "declined by user")
    assert [(m.content, m.is_error) for m in seen] == [("declined by user", True)]
    assert finished(events).reason == "completed"
    assert stream.result.output == "understood, I will not delete it"


async def test_approval_predicate_asks_only_for_the_calls_it_selects(autojump_clock: trio.testing.MockClock) -> None:
    """requires_approval=<predicate> asks only for the calls whose arguments it selects; the others just run."""

    @tool(requires_approval=lambda args: args["amount"] > 100)
    async def pay(amount: int) -> str:
        """Pay."""
        return f"paid {amount}"

    model = ScriptedModel([[ToolCall("pay", {"amount": 5}), ToolCall("pay", {"amount": 500})], "done"])
    agent = Agent(name="a", model=model, tools=[pay])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = await answer_all(stream, lambda request: ("decline", None))
    (request,) = requests_in(events)
    assert "pay(amount=500)" in request.message
    assert sorted((str(e.result), str(e.error)) for e in results_by_call(events).values()) == [
        ("None", "declined by user"),
        ("paid 5", "None"),
    ]


async def test_approval_with_nobody_to_ask_does_not_run_the_tool(autojump_clock: trio.testing.MockClock) -> None:
    """Under ask() an approval cannot be given: the tool does not run and the model gets a "not run:" error result."""
    ran: list[str] = []

    @tool(requires_approval=True)
    async def delete(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return "deleted"

    agent = Agent(name="a", model=ScriptedModel([ToolCall("delete", {"path": "x"}), "done"]), tools=[delete])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            start = trio.current_time()
            result = await session.ask("go")
            assert trio.current_time() == start
    assert ran == []
    (call,) = result.tool_calls
    assert call.error is not None
    assert call.error.startswith("not run:")
    assert result.reason == "completed"


async def test_concurrent_approvals_both_reach_the_consumer_and_each_decision_applies_to_its_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two calls of one turn needing approval both ask; accepting one and declining the other runs only the first."""
    model = ScriptedModel([[ToolCall("deploy", {"env": "staging"}), ToolCall("deploy", {"env": "prod"})], "done"])
    agent = Agent(name="ops", model=model, tools=[deploy])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events: list[Event] = []
                async for event in stream:
                    events.append(event)
                    if isinstance(event, ElicitationRequest) and len(requests_in(events)) == 2:
                        for request in reversed(requests_in(events)):
                            await stream.respond(request.id, "accept" if "staging" in request.message else "decline")
    env_of = {event.call_id: event.arguments["env"] for event in events if isinstance(event, ToolCallStarted)}
    outcomes = {env_of[c]: (done.result, done.error) for c, done in results_by_call(events).items()}
    assert outcomes == {"staging": ("deployed to staging", None), "prod": (None, "declined by user")}
