"""Usage limits: per run, per session (cumulative), and sub-agents spending their parent's budget.

Token counts are scripted exactly with ``UsageChunk`` turns, so each test
knows what every request spent.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from agents import (
    TRANSFER_TOOL,
    Agent,
    AssistantMessage,
    RunUsage,
    ScriptedModel,
    StopChunk,
    TextChunk,
    ToolCallChunk,
    ToolResultMessage,
    UsageChunk,
    UsageLimits,
    tool,
)
from runtime import RunFailedError, open_runtime
from runtime.events import AgentSwitched, ErrorEvent, Event, RunFinished, SubAgentEvent, Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agents import Message, ModelChunk
    from runtime import RunResult


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


_call_ids = itertools.count(1)


def calls(n: int, *, input_tokens: int = 10, output_tokens: int = 5) -> list[ModelChunk]:
    """A response asking for ``n`` add calls (each with an id of its own), with the usage given."""
    chunks: list[ModelChunk] = [ToolCallChunk(f"c{next(_call_ids)}", "add", {"a": 1, "b": 2}) for _ in range(n)]
    return [*chunks, StopChunk("tool_use"), UsageChunk(input_tokens, output_tokens)]


def answer(text: str = "done", *, input_tokens: int = 10, output_tokens: int = 5) -> list[ModelChunk]:
    """A final text response with the usage given."""
    return [TextChunk(text), StopChunk("end_turn"), UsageChunk(input_tokens, output_tokens)]


async def collect(agent: Agent[Any, Any]) -> tuple[list[Event], RunResult[Any], tuple[Message, ...]]:
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            events = [event async for event in stream]
        return events, stream.result, session.history


def ended_by_limit(events: list[Event]) -> str:
    """The message of the run's usage-limit ending, checking its shape: ErrorEvent, then RunFinished, last."""
    errors = [event for event in events if isinstance(event, ErrorEvent)]
    assert len(errors) == 1
    assert errors[0].kind == "usage_limit"
    assert events[-2] is errors[0]
    assert events[-1] == RunFinished("usage_limit", errors[0].message)
    return errors[0].message


def assert_history_valid(history: Sequence[Message]) -> None:
    """Every tool call has exactly one result, right after the response that made it."""
    owed: list[str] = []
    for message in history:
        if isinstance(message, ToolResultMessage):
            assert message.call_id in owed
            owed.remove(message.call_id)
            continue
        assert not owed
        if isinstance(message, AssistantMessage):
            owed = [call.call_id for call in message.tool_calls]
    assert not owed


# -- each limit, per run ----------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "script", "requests_made", "message"),
    [
        (
            UsageLimits(requests=2),
            [calls(1), calls(1), answer()],
            2,
            "requests limit of 2 reached: 2 model requests made",
        ),
        (
            UsageLimits(input_tokens=80),
            [calls(1, input_tokens=50), calls(1, input_tokens=50), answer()],
            2,
            "input_tokens limit of 80 exceeded: 100 used",
        ),
        (
            UsageLimits(output_tokens=15),
            [calls(1, output_tokens=10), calls(1, output_tokens=10), answer()],
            2,
            "output_tokens limit of 15 exceeded: 20 used",
        ),
        (
            UsageLimits(total_tokens=40),
            [calls(1, input_tokens=20, output_tokens=5), calls(1, input_tokens=20, output_tokens=5), answer()],
            2,
            "total_tokens limit of 40 exceeded: 50 used",
        ),
        (
            UsageLimits(tool_calls=2),
            [calls(2), calls(1), answer()],
            2,
            "tool_calls limit of 2 exceeded: 3 used",
        ),
    ],
    ids=["requests", "input_tokens", "output_tokens", "total_tokens", "tool_calls"],
)
async def test_usage_limit_crossed_ends_the_run_before_the_next_request(
    limits: UsageLimits, script: list[list[ModelChunk]], requests_made: int, message: str
) -> None:
    """Past a limit, the next model request is not made: ErrorEvent names the limit and the count, and the run
    finishes with usage_limit, its history valid."""
    model = ScriptedModel(script)
    events, result, history = await collect(Agent(name="a", model=model, tools=[add], usage_limits=limits))
    assert len(model.requests) == requests_made
    assert ended_by_limit(events) == message
    assert result.reason == "usage_limit"
    assert result.requests == requests_made
    assert result.error == ErrorEvent("usage_limit", message)
    assert_history_valid(history)


async def test_usage_limit_at_exactly_the_limit_is_not_crossed() -> None:
    """Spending exactly a token or tool-call limit is allowed: the run goes on to its answer."""
    model = ScriptedModel([calls(2, input_tokens=40, output_tokens=10), answer(input_tokens=40, output_tokens=10)])
    limits = UsageLimits(requests=2, input_tokens=40, output_tokens=10, total_tokens=50, tool_calls=2)
    events, result, _ = await collect(Agent(name="a", model=model, tools=[add], usage_limits=limits))
    assert events[-1] == RunFinished("completed")
    assert result.requests == 2


async def test_usage_limit_is_not_checked_after_the_final_answer() -> None:
    """Limits stop the next request, never a finished answer: an answer that goes past one still completes."""
    model = ScriptedModel([answer(output_tokens=500)])
    _, result, _ = await collect(Agent(name="a", model=model, usage_limits=UsageLimits(output_tokens=10)))
    assert result.reason == "completed"
    assert result.usage.output_tokens == 500


async def test_usage_limit_of_zero_requests_makes_no_request() -> None:
    """requests=0: the run ends before its first model request."""
    model = ScriptedModel([answer()])
    events, result, _ = await collect(Agent(name="a", model=model, usage_limits=UsageLimits(requests=0)))
    assert model.requests == []
    assert ended_by_limit(events) == "requests limit of 0 reached: 0 model requests made"
    assert result.requests == 0


async def test_usage_limit_makes_ask_raise_run_failed_with_the_result() -> None:
    """ask() raises RunFailedError(kind "usage_limit") whose result has the usage spent and the error."""
    model = ScriptedModel([calls(1, input_tokens=7, output_tokens=3), answer()])
    agent = Agent(name="a", model=model, tools=[add], usage_limits=UsageLimits(requests=1))
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with pytest.raises(RunFailedError, match="requests limit of 1 reached") as info:
            await session.ask("go")
    assert info.value.kind == "usage_limit"
    result = info.value.result
    assert result.reason == "usage_limit"
    assert result.requests == 1
    assert (result.usage.input_tokens, result.usage.output_tokens) == (7, 3)
    assert [record.result for record in result.tool_calls] == [3]


async def test_usage_limits_per_run_start_afresh_each_run() -> None:
    """Agent.usage_limits bound each run alone: two runs of two requests each both complete under requests=2."""
    model = ScriptedModel([calls(1), answer("one"), calls(1), answer("two")])
    agent = Agent(name="a", model=model, tools=[add], usage_limits=UsageLimits(requests=2))
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        first = await session.ask("go")
        second = await session.ask("again")
    assert (first.output, second.output) == ("one", "two")
    assert (first.requests, second.requests) == (2, 2)


# -- per session ------------------------------------------------------------------


async def test_session_usage_limits_add_up_across_runs() -> None:
    """Agent.session_usage_limits count every run of the session: the second run stops once the total reaches it."""
    model = ScriptedModel([calls(1), answer("one"), calls(1), answer("never")])
    agent = Agent(name="a", model=model, tools=[add], session_usage_limits=UsageLimits(requests=3))
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        first = await session.ask("go")
        assert session.usage.requests == 2
        async with session.run("again") as stream:
            events = [event async for event in stream]
        second = stream.result
        usage = session.usage
    assert first.reason == "completed"
    assert ended_by_limit(events) == "requests limit of 3 reached: 3 model requests made"
    assert second.requests == 1  # the run's own count; the session's is the total
    assert usage.requests == 3
    assert len(model.requests) == 3


async def test_session_usage_is_the_running_total_of_its_runs() -> None:
    """Session.usage adds up requests, tokens and tool calls of every run, as each run's result reports them."""
    model = ScriptedModel(
        [
            calls(2, input_tokens=11, output_tokens=3),
            answer(input_tokens=13, output_tokens=4),
            answer(input_tokens=17, output_tokens=6),
        ]
    )
    agent = Agent(name="a", model=model, tools=[add])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        assert session.usage == RunUsage()
        first = await session.ask("go")
        second = await session.ask("again")
        usage = session.usage
    assert usage == RunUsage(requests=3, input_tokens=41, output_tokens=13, tool_calls=2)
    assert usage.requests == first.requests + second.requests
    assert usage.input_tokens == first.usage.input_tokens + second.usage.input_tokens
    assert usage.total_tokens == 54


async def test_session_and_run_limits_apply_together() -> None:
    """With both set, whichever is crossed first ends the run, and its message says which."""
    model = ScriptedModel([calls(1, output_tokens=30), answer("one", output_tokens=30), calls(1), answer()])
    agent = Agent(
        name="a",
        model=model,
        tools=[add],
        usage_limits=UsageLimits(requests=5),
        session_usage_limits=UsageLimits(output_tokens=50),
    )
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        first = await session.ask("go")
        with pytest.raises(RunFailedError) as info:
            await session.ask("again")
    assert first.reason == "completed"
    assert str(info.value) == "output_tokens limit of 50 exceeded: 60 used"
    assert info.value.result.requests == 0


# -- sub-agents -------------------------------------------------------------------


def transfer(agent: str = "helper") -> list[ModelChunk]:
    return [ToolCallChunk("t1", TRANSFER_TOOL, {"agent": agent, "task": "help"}), UsageChunk(10, 5)]


async def test_sub_agent_usage_counts_against_the_parents_limit() -> None:
    """A sub-agent's requests spend its parent's budget: the parent's limit stops the child, then the parent."""
    helper_model = ScriptedModel([calls(1), answer("helped")])
    helper = Agent(name="helper", model=helper_model, tools=[add])
    model = ScriptedModel([transfer(), answer("never")])
    agent = Agent(name="boss", model=model, sub_agents=[helper], usage_limits=UsageLimits(requests=2))
    events, result, _ = await collect(agent)
    assert len(model.requests) == 1
    assert len(helper_model.requests) == 1
    message = "requests limit of 2 reached: 2 model requests made"
    # The child's run ended by the limit (wrapped in the parent's stream) ...
    child_errors = [e.event for e in events if isinstance(e, SubAgentEvent) and isinstance(e.event, ErrorEvent)]
    assert child_errors == [ErrorEvent("usage_limit", message)]
    child_finish = [e.event for e in events if isinstance(e, SubAgentEvent) and isinstance(e.event, RunFinished)]
    assert child_finish == [RunFinished("usage_limit", message)]
    # ... and so did the parent's, before its own next request.
    assert ended_by_limit(events) == message
    assert result.requests == 2


async def test_sub_agent_usage_is_in_the_parents_result_and_the_session_usage() -> None:
    """RunResult.requests, usage and Session.usage include what the sub-agent spent."""
    helper = Agent(
        name="helper",
        model=ScriptedModel([calls(1, input_tokens=100, output_tokens=1), answer(input_tokens=100, output_tokens=1)]),
        tools=[add],
    )
    model = ScriptedModel([transfer(), answer(input_tokens=10, output_tokens=5)])
    agent = Agent(name="boss", model=model, sub_agents=[helper])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        result = await session.ask("go")
        usage = session.usage
    assert result.requests == 4
    assert (result.usage.input_tokens, result.usage.output_tokens) == (220, 12)
    assert usage == RunUsage(requests=4, input_tokens=220, output_tokens=12, tool_calls=2)  # transfer + add


async def test_sub_agents_own_limit_stops_only_the_sub_agent() -> None:
    """A limit on the sub-agent's own runs stops it; the parent gets an error result naming it and goes on."""
    helper = Agent(
        name="helper",
        model=ScriptedModel([calls(1), answer("never")]),
        tools=[add],
        usage_limits=UsageLimits(requests=1),
    )
    model = ScriptedModel([transfer(), answer("carried on")])
    _, result, _ = await collect(Agent(name="boss", model=model, sub_agents=[helper]))
    assert result.reason == "completed"
    assert result.output == "carried on"
    (told,) = [m for m in model.requests[1].messages if isinstance(m, ToolResultMessage)]
    assert told.is_error
    assert told.content == "helper failed: requests limit of 1 reached: 1 model requests made"


async def test_sub_agent_usage_counts_against_the_session_limit() -> None:
    """A sub-agent's requests count toward the session's cumulative limit too."""
    helper = Agent(name="helper", model=ScriptedModel([answer("helped")]))
    model = ScriptedModel([transfer(), answer("one"), answer("never")])
    agent = Agent(name="boss", model=model, sub_agents=[helper], session_usage_limits=UsageLimits(requests=3))
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        first = await session.ask("go")
        with pytest.raises(RunFailedError, match="requests limit of 3 reached: 3 model requests made"):
            await session.ask("again")
        assert session.usage.requests == 3
    assert first.requests == 3


async def test_run_result_usage_sums_every_token_count_of_every_call() -> None:
    """Cached (read and written) and reasoning tokens add up over the run's calls, beside input and output."""
    first: list[ModelChunk] = [ToolCallChunk("c1", "add", {"a": 1, "b": 2}), UsageChunk(100, 10, 80, 5, 3)]
    second: list[ModelChunk] = [TextChunk("3"), UsageChunk(120, 4, 100, 0, 2)]
    agent = Agent(name="a", model=ScriptedModel([first, second]), tools=[add])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        result = await session.ask("1 + 2?")
    assert result.usage == Usage(220, 14, 180, 5, 5)


# -- Usage events add up, even when a timeout cuts their send -----------------------


def usage_events(events: list[Event]) -> tuple[int, int]:
    """The input and output tokens of every Usage event, a sub-agent's (wrapped) too."""
    usages = [event.innermost()[1] if isinstance(event, SubAgentEvent) else event for event in events]
    counted = [usage for usage in usages if isinstance(usage, Usage)]
    return sum(usage.input_tokens for usage in counted), sum(usage.output_tokens for usage in counted)


@pytest.mark.parametrize("where", ["run", "sub-agent"])
async def test_usage_events_add_up_to_the_totals_when_a_timeout_cuts_their_send(
    where: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A model's Usage waits for room (the consumer is not reading) when run_timeout, or the parent's
    tool_timeout for a sub-agent, fires: the tokens were spent, so the event is still delivered, and the
    Usage events a consumer reads add up to RunResult.usage and Session.usage."""
    spending = ScriptedModel([[UsageChunk(100, 7), TextChunk("hi"), StopChunk("end_turn")]])
    if where == "run":
        agent = Agent(name="a", model=spending, run_timeout=1)
        usage = (100, 7)
    else:
        helper = Agent(name="helper", model=spending)
        model = ScriptedModel([transfer(), answer(input_tokens=10, output_tokens=5)])
        agent = Agent(name="boss", model=model, sub_agents=[helper], tool_timeout=1)
        usage = (100 + 10 + 10, 7 + 5 + 5)
    events: list[Event] = []

    async def not_reading() -> None:
        # The next event (the run's RunStarted, or the sub-agent's) fills the buffer, and the Usage after it
        # waits for room past the timeout (virtual time) while this consumer does not read.
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(5)

    async with open_runtime(event_buffer=1) as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            if where == "run":
                await not_reading()
            async for event in stream:
                events.append(event)
                if isinstance(event, AgentSwitched) and event.to_agent == "helper":
                    await not_reading()
        result = stream.result
        spent = session.usage
    assert (result.usage.input_tokens, result.usage.output_tokens) == usage
    assert (spent.input_tokens, spent.output_tokens) == usage
    assert usage_events(events) == usage
    assert events[-1].reason == ("timeout" if where == "run" else "completed")  # type: ignore[union-attr]
