"""Sub-agents: transfer_task runs a nested loop inside a tool call, its events wrapped in the parent's stream.

Every test runs under the leak checker and inside a ``trio.fail_after`` (on
``autojump_clock``, so a deadlock fails at once instead of hanging).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing

from agents import (
    TRANSFER_TOOL,
    Agent,
    AgentDefinitionError,
    AssistantMessage,
    ElicitationUnavailable,
    Hooks,
    ModelRequest,
    RunContext,
    ScriptedModel,
    StopRun,
    Tool,
    ToolCall,
    ToolContext,
    ToolResultMessage,
    UserMessage,
    tool,
)
from runtime import ClosedRunStreamError, UnknownElicitationError, open_runtime
from runtime.events import (
    AgentSwitched,
    CustomEvent,
    ElicitationRequest,
    ErrorEvent,
    Event,
    RunFinished,
    RunStarted,
    SubAgentEvent,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
    Usage,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from agents import ElicitationAction
    from runtime import RunStream
    from tests.runtime.conftest import ElicitingTool


def transfer(agent: str, task: str = "do it") -> ToolCall:
    """A scripted call of the transfer tool."""
    return ToolCall(TRANSFER_TOOL, {"agent": agent, "task": task})


def top_finished(events: list[Event]) -> RunFinished:
    """The run's top-level RunFinished, checking it is the only one and the last event."""
    finishes = [event for event in events if isinstance(event, RunFinished)]
    assert len(finishes) == 1
    assert events[-1] is finishes[0]
    return finishes[0]


def innermost(event: Event) -> tuple[tuple[str, ...], Event]:
    """The chain of sub-agents an event came through (empty at top level), and the event itself."""
    return event.innermost() if isinstance(event, SubAgentEvent) else ((), event)


def requests_in(events: list[Event]) -> list[tuple[tuple[str, ...], ElicitationRequest]]:
    """Every ElicitationRequest, top-level or wrapped, with the sub-agent chain it came through."""
    found = []
    for event in events:
        path, inner = innermost(event)
        if isinstance(inner, ElicitationRequest):
            found.append((path, inner))
    return found


def top_level(events: list[Event], kind: type[Any]) -> list[Any]:
    """The top-level (unwrapped) events of one type."""
    return [event for event in events if isinstance(event, kind)]


async def answer_all(
    stream: RunStream, answer: Callable[[ElicitationRequest], tuple[ElicitationAction, Any]]
) -> list[Event]:
    """Read the whole stream, answering every question (wrapped or not) as ``answer`` says, and return every event."""
    events: list[Event] = []
    async for event in stream:
        events.append(event)
        _, inner = innermost(event)
        if isinstance(inner, ElicitationRequest):
            action, content = answer(inner)
            await stream.respond(inner.id, action, content)
    return events


def last_tool_result(request: ModelRequest) -> str:
    """The content of the newest tool result the model sees."""
    return [m for m in request.messages if isinstance(m, ToolResultMessage)][-1].text


@tool
async def ask_human(ctx: ToolContext[Any]) -> str:
    """Asks the human a question named after its agent."""
    answer = await ctx.elicit(f"question from {ctx.agent.name}", schema=str)
    return str(answer.content)


class BrokenToolset:
    """A toolset whose server cannot be reached when the run starts."""

    @asynccontextmanager
    async def open_tools(self, ctx: RunContext[Any]) -> AsyncIterator[Sequence[Tool]]:
        raise ConnectionError("MCP server is down")
        yield []  # pragma: no cover


class Gatekeeper(Hooks):
    """Stops every prompt that mentions a secret."""

    async def on_user_prompt(self, ctx: RunContext[Any], prompt: str) -> StopRun | None:
        return StopRun("no secrets") if "secret" in prompt else None


class BrokenHook(Hooks):
    """A user-prompt hook with a bug."""

    async def on_user_prompt(self, ctx: RunContext[Any], prompt: str) -> StopRun | None:
        raise KeyError("user")


class RunEnds(Hooks):
    """Records the reason every run ends with."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    async def on_run_end(self, ctx: RunContext[Any], reason: str) -> None:
        self.reasons.append(reason)


# -- the nested run and its events -------------------------------------------------


async def test_transfer_runs_the_sub_agent_nested_and_its_answer_is_the_tool_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """transfer_task runs the sub-agent's loop in the call, wrapped between AgentSwitched events; one RunFinished."""
    seen: list[ToolResultMessage] = []

    def after_transfer(request: ModelRequest) -> str:
        seen.extend(m for m in request.messages if isinstance(m, ToolResultMessage))
        return "the boss is done"

    helper = Agent(name="helper", model=ScriptedModel(["the helper's answer"]))
    boss = Agent(
        name="boss", model=ScriptedModel([transfer("helper", "what is x?"), after_transfer]), sub_agents=[helper]
    )
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = [event async for event in stream]
    assert top_finished(events).reason == "completed"
    enter = events.index(AgentSwitched("boss", "helper"))
    leave = events.index(AgentSwitched("helper", "boss"))
    nested = events[enter + 1 : leave]
    assert nested
    assert all(isinstance(event, SubAgentEvent) and event.agent == "helper" for event in nested)
    child_events = [innermost(event)[1] for event in nested]
    assert isinstance(child_events[0], RunStarted)
    assert child_events[0].run_id.startswith(f"{stream.run_id}/helper")
    assert child_events[-1] == RunFinished("completed")  # the child's own RunFinished, wrapped
    (started,) = top_level(events, ToolCallStarted)
    (done,) = top_level(events, ToolCallFinished)
    assert started.name == TRANSFER_TOOL
    assert events.index(started) < enter < leave < events.index(done)
    assert (done.result, done.error) == ("the helper's answer", None)
    assert [(m.name, m.content, m.is_error) for m in seen] == [(TRANSFER_TOOL, "the helper's answer", False)]
    assert stream.result.output == "the boss is done"


async def test_transfer_tool_is_offered_with_the_sub_agents_listed(autojump_clock: trio.testing.MockClock) -> None:
    """An agent with sub-agents offers transfer_task, listing each sub-agent and accepting only their names."""
    model = ScriptedModel(["no transfer needed"])
    researcher = Agent(name="researcher", instructions="Finds facts.\nMore detail.", model=ScriptedModel([]))
    writer = Agent(name="writer", instructions="Writes prose.", model=ScriptedModel([]))
    boss = Agent(name="boss", model=model, sub_agents=[researcher, writer])
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            await session.ask("go")
    (spec,) = [spec for spec in model.requests[0].tools if spec.name == TRANSFER_TOOL]
    assert "- researcher: Finds facts." in spec.description
    assert "- writer: Writes prose." in spec.description
    assert spec.parameters["required"] == ["agent", "task"]
    assert spec.parameters["properties"]["agent"]["enum"] == ["researcher", "writer"]


async def test_sub_agent_sees_only_its_task_and_leaves_the_session_history_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The sub-agent's run starts from its task alone, and none of its messages enter the session's history."""
    child_model = ScriptedModel(["42"])
    helper = Agent(name="helper", model=child_model)
    boss = Agent(name="boss", model=ScriptedModel([transfer("helper", "compute x"), "x is 42"]), sub_agents=[helper])
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            await session.ask("what is x?")
        assert child_model.requests[0].messages == (UserMessage("compute x"),)
        history = session.history
    assert [type(message) for message in history] == [
        UserMessage,
        AssistantMessage,
        ToolResultMessage,
        AssistantMessage,
    ]
    assert history[0] == UserMessage("what is x?")
    assert isinstance(history[2], ToolResultMessage)
    assert history[2].content == "42"
    assert UserMessage("compute x") not in history


async def test_sub_agent_usage_is_added_to_the_run_usage(autojump_clock: trio.testing.MockClock) -> None:
    """The run's usage is the sum of its own model calls and its sub-agents' (nested ones included)."""
    leaf = Agent(name="leaf", model=ScriptedModel(["leaf words here"]))
    middle = Agent(name="middle", model=ScriptedModel([transfer("leaf"), "middle done"]), sub_agents=[leaf])
    boss = Agent(name="boss", model=ScriptedModel([transfer("middle"), "boss done"]), sub_agents=[middle])
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = [event async for event in stream]
    own = [event for event in events if isinstance(event, Usage)]
    nested = [inner for event in events if isinstance(event, SubAgentEvent) for inner in [innermost(event)[1]]]
    nested_usage = [event for event in nested if isinstance(event, Usage)]
    assert len(own) == 2
    assert len(nested_usage) == 3  # two model calls of middle, one of leaf
    usage = stream.result.usage
    assert usage.input_tokens == sum(u.input_tokens for u in own + nested_usage)
    assert usage.output_tokens == sum(u.output_tokens for u in own + nested_usage)
    assert usage.input_tokens > sum(u.input_tokens for u in own)


async def test_failing_sub_agent_becomes_the_transfer_error_result_and_the_parent_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A sub-agent run that errors gives the model "<name> failed: ..." and the parent run still completes."""
    helper = Agent(name="helper", model=ScriptedModel([]))  # its model fails on the first call
    boss = Agent(name="boss", model=ScriptedModel([transfer("helper"), last_tool_result]), sub_agents=[helper])
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = [event async for event in stream]
    nested = [innermost(event)[1] for event in events if isinstance(event, SubAgentEvent)]
    assert any(isinstance(event, ErrorEvent) and event.kind == "model" for event in nested)
    assert isinstance(nested[-1], RunFinished)
    assert nested[-1].reason == "error"
    (done,) = top_level(events, ToolCallFinished)
    assert done.error is not None
    assert done.error.startswith("helper failed: ")
    assert "ran out of turns" in done.error
    assert top_finished(events).reason == "completed"
    assert str(stream.result.output).startswith("helper failed")  # what the model saw


async def test_transfer_to_an_unknown_agent_is_an_argument_error_and_starts_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A transfer naming no sub-agent is an invalid-arguments error result; no AgentSwitched, the run goes on."""
    helper = Agent(name="helper", model=ScriptedModel([]))
    boss = Agent(name="boss", model=ScriptedModel([transfer("nobody"), "ok"]), sub_agents=[helper])
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = [event async for event in stream]
    (done,) = top_level(events, ToolCallFinished)
    assert done.error is not None
    assert "invalid arguments" in done.error
    assert top_level(events, AgentSwitched) == []
    assert top_finished(events).reason == "completed"


async def test_sub_agent_definitions_are_checked() -> None:
    """Duplicate sub-agent names, a negative max_depth and a tool named transfer_task are definition errors."""
    one = Agent(name="one", model=ScriptedModel([]))

    @tool(name=TRANSFER_TOOL)
    async def clash() -> str:
        """Takes the transfer tool's name."""
        return "clash"

    with pytest.raises(AgentDefinitionError, match="unique"):
        Agent(name="boss", model=ScriptedModel([]), sub_agents=[one, one])
    with pytest.raises(AgentDefinitionError, match="max_depth"):
        Agent(name="boss", model=ScriptedModel([]), sub_agents=[one], max_depth=-1)
    with pytest.raises(AgentDefinitionError, match="clashes"):
        Agent(name="boss", model=ScriptedModel([]), tools=[clash], sub_agents=[one])


# -- questions from sub-agents -----------------------------------------------------


async def test_sub_agent_question_reaches_the_parent_consumer_wrapped_and_is_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A sub-agent's question arrives as SubAgentEvent(child, ElicitationRequest); the parent stream answers it."""
    helper = Agent(name="helper", model=ScriptedModel([ToolCall("ask_human"), last_tool_result]), tools=[ask_human])
    boss = Agent(name="boss", model=ScriptedModel([transfer("helper"), last_tool_result]), sub_agents=[helper])
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = await answer_all(stream, lambda request: ("accept", f"answer to {request.message}"))
    ((path, request),) = requests_in(events)
    assert path == ("helper",)
    assert request.agent == "helper"
    assert top_level(events, ElicitationRequest) == []  # only ever wrapped
    assert stream.result.output == "answer to question from helper"
    assert top_finished(events).reason == "completed"


async def test_nested_sub_agents_wrap_once_per_level_and_the_innermost_question_is_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two levels down, events arrive wrapped twice (innermost() unwraps them); a question there is answered."""
    leaf = Agent(name="leaf", model=ScriptedModel([ToolCall("ask_human"), last_tool_result]), tools=[ask_human])
    middle = Agent(name="middle", model=ScriptedModel([transfer("leaf"), last_tool_result]), sub_agents=[leaf])
    boss = Agent(name="boss", model=ScriptedModel([transfer("middle"), last_tool_result]), sub_agents=[middle])
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = await answer_all(stream, lambda request: ("accept", "from the top"))
    ((path, request),) = requests_in(events)
    assert path == ("middle", "leaf")
    assert request.agent == "leaf"
    switches = [(innermost(event)[0], innermost(event)[1]) for event in events]
    assert ((), AgentSwitched("boss", "middle")) in switches
    assert (("middle",), AgentSwitched("middle", "leaf")) in switches
    assert (("middle",), AgentSwitched("leaf", "middle")) in switches
    leaf_started = [inner for path, inner in switches if path == ("middle", "leaf") and isinstance(inner, RunStarted)]
    assert [started.run_id for started in leaf_started] == [f"{stream.run_id}/middle-1/leaf-1"]
    assert stream.result.output == "from the top"
    assert top_finished(events).reason == "completed"


async def test_sub_agent_approval_is_asked_of_the_parent_consumer(autojump_clock: trio.testing.MockClock) -> None:
    """A sub-agent's tool needing approval asks the top consumer; declined, the sub-agent sees "declined by user"."""
    ran: list[str] = []

    @tool(requires_approval=True)
    async def wipe(disk: str) -> str:
        """Wipe a disk."""
        ran.append(disk)
        return "wiped"

    helper = Agent(
        name="helper", model=ScriptedModel([ToolCall("wipe", {"disk": "sda"}), last_tool_result]), tools=[wipe]
    )
    boss = Agent(name="boss", model=ScriptedModel([transfer("helper"), last_tool_result]), sub_agents=[helper])
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = await answer_all(stream, lambda request: ("decline", None))
    ((path, request),) = requests_in(events)
    assert path == ("helper",)
    assert request.message.startswith("Allow helper to run wipe(disk='sda')?")
    assert ran == []
    assert stream.result.output == "declined by user"


async def test_concurrent_sub_agents_questions_each_reach_the_right_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two sub-agents started in one turn both ask; both questions arrive, each answer reaches the child that asked."""
    alpha = Agent(name="alpha", model=ScriptedModel([ToolCall("ask_human"), last_tool_result]), tools=[ask_human])
    beta = Agent(name="beta", model=ScriptedModel([ToolCall("ask_human"), last_tool_result]), tools=[ask_human])
    boss = Agent(
        name="boss", model=ScriptedModel([[transfer("alpha"), transfer("beta")], "done"]), sub_agents=[alpha, beta]
    )
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events: list[Event] = []
                async for event in stream:
                    events.append(event)
                    if len(requests_in(events)) == 2 and isinstance(innermost(event)[1], ElicitationRequest):
                        assert len(stream.pending_elicitations) == 2
                        for path, request in reversed(requests_in(events)):
                            await stream.respond(request.id, "accept", f"for {path[0]}")
    assert sorted(path for path, _ in requests_in(events)) == [("alpha",), ("beta",)]
    agent_of = {event.call_id: event.arguments["agent"] for event in top_level(events, ToolCallStarted)}
    results = {agent_of[done.call_id]: done.result for done in top_level(events, ToolCallFinished)}
    assert results == {"alpha": "for alpha", "beta": "for beta"}


async def test_sub_agent_question_under_ask_is_unavailable_at_once(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool
) -> None:
    """Under ask() a sub-agent's tool has nobody to ask either: ElicitationUnavailable at once."""
    asked = eliciting_tool(
        "careful", "sure?", timeout=3600, catch=ElicitationUnavailable, fallback="went ahead without asking"
    )
    helper = Agent(name="helper", model=ScriptedModel([ToolCall("careful"), last_tool_result]), tools=[asked.tool])
    boss = Agent(name="boss", model=ScriptedModel([transfer("helper"), last_tool_result]), sub_agents=[helper])
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            result = await session.ask("go")
    assert [(type(error).__name__, waited) for error, waited in asked.errors] == [("ElicitationUnavailable", 0)]
    assert result.output == "went ahead without asking"


# -- depth -----------------------------------------------------------------------------


async def test_nesting_past_max_depth_is_an_error_result_and_the_runs_go_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With max_depth=1 a sub-agent's own transfer is refused with a clear error result; nothing deeper starts."""
    leaf_model = ScriptedModel(["never"])
    leaf = Agent(name="leaf", model=leaf_model)
    middle = Agent(name="middle", model=ScriptedModel([transfer("leaf"), last_tool_result]), sub_agents=[leaf])
    boss = Agent(
        name="boss", model=ScriptedModel([transfer("middle"), last_tool_result]), sub_agents=[middle], max_depth=1
    )
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = [event async for event in stream]
    assert leaf_model.requests == []
    nested_done = [
        inner for event in events for path, inner in [innermost(event)] if isinstance(inner, ToolCallFinished) and path
    ]
    (refused,) = nested_done
    assert refused.error is not None
    assert "nest at most 1" in refused.error
    assert "'leaf'" in refused.error
    assert not any(innermost(event)[0] == ("middle", "leaf") for event in events)
    # middle got the refusal as its tool result and finished; so did the top run.
    assert stream.result.output == refused.error
    assert top_finished(events).reason == "completed"


async def test_max_depth_zero_refuses_every_transfer(autojump_clock: trio.testing.MockClock) -> None:
    """max_depth=0 refuses even the first transfer, with an error result and no AgentSwitched."""
    helper_model = ScriptedModel(["never"])
    helper = Agent(name="helper", model=helper_model)
    boss = Agent(name="boss", model=ScriptedModel([transfer("helper"), "ok"]), sub_agents=[helper], max_depth=0)
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = [event async for event in stream]
    (done,) = top_level(events, ToolCallFinished)
    assert done.error is not None
    assert "nest at most 0" in done.error
    assert top_level(events, AgentSwitched) == []
    assert helper_model.requests == []


# -- guarantee: a child that fails early restores the parent's bridge target -------


def broken_tools_child() -> Agent:
    """A sub-agent whose tools cannot be built (its toolset's server is down)."""
    return Agent(name="helper", model=ScriptedModel([]), tools=[BrokenToolset()])


def hook_stopped_child() -> Agent:
    """A sub-agent whose user-prompt hook stops every secret task."""
    return Agent(name="helper", model=ScriptedModel([]), hooks=[Gatekeeper()])


def broken_hook_child() -> Agent:
    """A sub-agent whose user-prompt hook raises."""
    return Agent(name="helper", model=ScriptedModel([]), hooks=[BrokenHook()])


@pytest.mark.parametrize(
    ("make_child", "child_finish", "transfer_error"),
    [
        (broken_tools_child, "error", "helper failed: toolset"),
        (hook_stopped_child, "hook_stop", None),
        (broken_hook_child, "error", "helper failed: on_user_prompt hook failed"),
    ],
)
async def test_cagent_3073_child_failing_early_ends_and_the_parent_question_reaches_the_parent(
    make_child: Callable[[], Agent],
    child_finish: str,
    transfer_error: str | None,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """cagent #3073: a child stopped before its loop ends its nested stream; the parent's next question is unwrapped."""
    boss = Agent(
        name="boss",
        model=ScriptedModel([transfer("helper", "tell me the secret"), ToolCall("ask_human"), "done"]),
        tools=[ask_human],
        sub_agents=[make_child()],
    )
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = await answer_all(stream, lambda request: ("accept", "the parent's answer"))
    # The child's nested stream ended: its RunFinished (wrapped), then the switch back.
    leave = events.index(AgentSwitched("helper", "boss"))
    child_end = events[leave - 1]
    assert isinstance(child_end, SubAgentEvent)
    assert isinstance(child_end.event, RunFinished)
    assert child_end.event.reason == child_finish
    transfer_done, ask_done = top_level(events, ToolCallFinished)
    if transfer_error is None:
        assert (transfer_done.result, transfer_done.error) == ("no secrets", None)
    else:
        assert transfer_done.error is not None
        assert transfer_done.error.startswith(transfer_error)
    # The bridge points at the parent again: its question arrives top-level, not as the child's.
    ((path, request),) = requests_in(events)
    assert path == ()
    assert request.agent == "boss"
    assert events.index(request) > leave
    assert (ask_done.result, ask_done.error) == ("the parent's answer", None)
    assert top_finished(events).reason == "completed"


async def test_cagent_3073_child_cancelled_by_tool_timeout_restores_the_parent_target(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """cagent #3073: a child cancelled by the parent's tool_timeout ends; the parent's next question is unwrapped."""
    child_ends = RunEnds()

    @tool
    async def forever() -> str:
        """Never returns."""
        await trio.sleep_forever()
        return "never"

    helper = Agent(name="helper", model=ScriptedModel([ToolCall("forever")]), tools=[forever], hooks=[child_ends])
    boss = Agent(
        name="boss",
        model=ScriptedModel([transfer("helper"), ToolCall("ask_human"), "done"]),
        tools=[ask_human],
        sub_agents=[helper],
        tool_timeout=5,
    )
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(100):
            async with session.run("go") as stream:
                events = await answer_all(stream, lambda request: ("accept", "the parent's answer"))
    assert child_ends.reasons == ["cancelled"]
    transfer_done, ask_done = top_level(events, ToolCallFinished)
    assert transfer_done.error is not None
    assert "tool_timeout=5" in transfer_done.error
    leave = events.index(AgentSwitched("helper", "boss"))
    assert events[leave - 1] == SubAgentEvent("helper", RunFinished("cancelled"))
    ((path, request),) = requests_in(events)
    assert path == ()
    assert events.index(request) > leave
    assert ask_done.result == "the parent's answer"
    assert top_finished(events).reason == "completed"


# -- cancellation -----------------------------------------------------------------------


async def test_cancelling_the_parent_cancels_the_child_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """Leaving the parent's block while a sub-agent's tool runs cancels the child at once; the session goes on."""
    child_tool_cancelled = trio.Event()
    child_ends = RunEnds()

    @tool
    async def nap() -> str:
        """Sleeps an hour."""
        try:
            await trio.sleep(3600)
        except trio.Cancelled:
            child_tool_cancelled.set()
            raise
        return "rested"

    helper = Agent(name="helper", model=ScriptedModel([ToolCall("nap")]), tools=[nap], hooks=[child_ends])
    boss = Agent(name="boss", model=ScriptedModel([transfer("helper"), "second run"]), sub_agents=[helper])
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(innermost(event)[1], ToolCallStarted) and innermost(event)[0] == ("helper",):
                        await trio.testing.wait_all_tasks_blocked()
                        break
                left_at = trio.current_time()
            assert trio.current_time() == left_at
            assert child_tool_cancelled.is_set()
            assert child_ends.reasons == ["cancelled"]
            (result,) = [m for m in session.history if isinstance(m, ToolResultMessage)]
            assert result.name == TRANSFER_TOOL
            assert result.is_error
            assert (await session.ask("again")).output == "second run"


async def test_consumer_leaving_with_a_sub_agent_question_pending_drops_it(
    autojump_clock: trio.testing.MockClock, eliciting_tool: ElicitingTool
) -> None:
    """A sub-agent's question pending when the consumer leaves is dropped with its tool, and nothing waits for it."""
    asked = eliciting_tool("ask", "still there?")
    helper = Agent(name="helper", model=ScriptedModel([ToolCall("ask")]), tools=[asked.tool])
    boss = Agent(name="boss", model=ScriptedModel([transfer("helper")]), sub_agents=[helper])
    async with open_runtime() as runtime, runtime.open_session(boss) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events: list[Event] = []
                async for event in stream:
                    events.append(event)
                    if requests_in(events):
                        break
                ((_, request),) = requests_in(events)
                assert stream.pending_elicitations == (request.id,)
                left_at = trio.current_time()
            assert trio.current_time() == left_at
    assert asked.cancelled.is_set()
    assert len(stream.pending_elicitations) == 0
    with pytest.raises(UnknownElicitationError):
        await stream.respond(request.id, "accept", None)


@attrs.frozen
class _Late(CustomEvent):
    note: str


@pytest.mark.parametrize("via", ["tool", "hook"])
async def test_a_sub_agent_run_that_has_ended_takes_no_more_events_from_its_tasks(via: str) -> None:
    """A task started from a sub-agent's tool (a ToolContext) or hook (a RunContext) outlives the sub-agent's
    run, its parent going on: its emit is refused (as at top level) and a tool's progress dropped, never a
    SubAgentEvent after the sub-agent's RunFinished. Before, a hook's context still sent into the parent's
    stream."""
    child_ended = trio.Event()
    refused: list[BaseException] = []
    done = trio.Event()

    def start_late_task(ctx: RunContext[Any]) -> None:
        async def later() -> None:
            await child_ended.wait()
            if isinstance(ctx, ToolContext):
                await ctx.report_progress(1, message="late")
            try:
                await ctx.emit(_Late("late"))
            except ClosedRunStreamError as exc:
                refused.append(exc)
            done.set()

        ctx.session.start_soon(later)

    @tool
    async def kick(ctx: ToolContext[None]) -> str:
        """Start background work."""
        start_late_task(ctx)
        return "started"

    class Heartbeat(Hooks):
        async def on_user_prompt(self, ctx: RunContext[Any], prompt: Any) -> None:
            start_late_task(ctx)

    @tool
    async def wait_for_late() -> str:
        """The parent's next tool: the late task has had its chance by the time it returns."""
        child_ended.set()
        await done.wait()
        return "waited"

    if via == "tool":
        child = Agent(name="child", model=ScriptedModel([ToolCall("kick", {}), "child done"]), tools=[kick])
    else:
        child = Agent(name="child", model=ScriptedModel(["child done"]), hooks=[Heartbeat()])
    parent = Agent(
        name="parent",
        model=ScriptedModel(
            [ToolCall(TRANSFER_TOOL, {"agent": "child", "task": "t"}), ToolCall("wait_for_late"), "end"]
        ),
        sub_agents=[child],
        tools=[wait_for_late],
    )
    with trio.fail_after(5):
        async with open_runtime() as runtime, runtime.open_session(parent) as session, session.run("go") as stream:
            events = [event async for event in stream]
    nested = [event.innermost()[1] for event in events if isinstance(event, SubAgentEvent)]
    assert isinstance(nested[-1], RunFinished)  # nothing of the child after its end
    assert [str(exc) for exc in refused] == ["_Late was emitted after its run had ended"]
    assert stream.result.progress_dropped == (via == "tool")
    assert stream.result.reason == "completed"


@pytest.mark.parametrize("pace", [0.3, 0.6])
async def test_a_sub_agent_ended_by_the_tool_timeout_still_closes_in_a_full_parent_stream(
    pace: float, autojump_clock: trio.testing.MockClock
) -> None:
    """The transfer call times out while the consumer is slow (the parent's buffer full): the parent goes
    on, so the AgentSwitched back, and the sub-agent's RunFinished if its RunStarted went in (at 0.3 s an
    event it did; at 0.6 s the timeout came while it waited for room, so it has no events at all), still
    reach its stream, in order."""

    @tool
    async def slow() -> str:
        """Slow."""
        await trio.sleep(10)
        return "x"

    child = Agent(name="child", model=ScriptedModel([ToolCall("slow", {})]), tools=[slow])
    parent = Agent(
        name="parent",
        model=ScriptedModel([ToolCall(TRANSFER_TOOL, {"agent": "child", "task": "t"}), "done"]),
        sub_agents=[child],
        tool_timeout=1,
    )
    async with open_runtime(event_buffer=2) as runtime, runtime.open_session(parent) as session:
        seen: list[Event] = []
        async with session.run("go") as stream:
            async for event in stream:
                seen.append(event)
                await trio.sleep(pace)  # slow: the buffer is full when the timeout fires
    switches = [(event.from_agent, event.to_agent) for event in seen if isinstance(event, AgentSwitched)]
    assert switches == [("parent", "child"), ("child", "parent")]
    nested = [event.innermost()[1] for event in seen if isinstance(event, SubAgentEvent)]
    if pace == 0.3:
        assert isinstance(nested[0], RunStarted)
        assert isinstance(nested[-1], RunFinished)
        back = next(i for i, e in enumerate(seen) if isinstance(e, AgentSwitched) and e.to_agent == "parent")
        assert isinstance(seen[back - 1], SubAgentEvent)  # the sub-agent's end comes before the switch back
    else:
        assert nested == []  # no RunStarted went in: no end is owed either
    assert seen[-1] == RunFinished("completed")


@pytest.mark.parametrize("timeout", ["tool_timeout", "run_timeout"])
async def test_the_switch_back_from_a_finished_sub_agent_is_owed_when_a_timeout_cancels_its_send(
    timeout: str, autojump_clock: trio.testing.MockClock
) -> None:
    """The sub-agent finished; the parent's tool_timeout or run_timeout fires while AgentSwitched back waits
    for room in a full stream (the consumer stopped reading): the switch back still reaches the consumer,
    after the sub-agent's RunFinished, so every switch into a sub-agent has its switch back."""
    child = Agent(name="child", model=ScriptedModel(["child done"]))
    parent = Agent(
        name="parent",
        model=ScriptedModel([transfer("child"), "done"]),
        sub_agents=[child],
        tool_timeout=1 if timeout == "tool_timeout" else None,
        run_timeout=1 if timeout == "run_timeout" else None,
    )
    seen: list[Event] = []
    async with open_runtime(event_buffer=1) as runtime, runtime.open_session(parent) as session:
        async with session.run("go") as stream:
            async for event in stream:
                seen.append(event)
                if isinstance(event, SubAgentEvent) and isinstance(event.innermost()[1], Usage):
                    # The child's last event before its RunFinished, which fills the buffer: the switch back
                    # waits for room. Virtual time (the autojump clock) passes the 1 s timeout meanwhile.
                    await trio.sleep(2)
    switches = [(event.from_agent, event.to_agent) for event in seen if isinstance(event, AgentSwitched)]
    assert switches == [("parent", "child"), ("child", "parent")]
    back = seen.index(AgentSwitched("child", "parent"))
    assert seen[back - 1] == SubAgentEvent("child", RunFinished("completed"))
    assert isinstance(seen[-1], RunFinished)
    assert seen[-1].reason == ("completed" if timeout == "tool_timeout" else "timeout")


async def test_a_sub_agent_cut_by_the_tool_timeout_finishes_its_tool_calls_in_a_full_parent_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The parent's tool_timeout cancels a sub-agent while its tool runs and the parent's stream is full:
    the sub-agent's ToolCallStarted still gets its ToolCallFinished ("the tool call was cancelled"), owed
    as its RunFinished is, before that RunFinished and the switch back; the parent goes on."""

    @tool
    async def stuck(ctx: ToolContext[None]) -> str:
        """Fills the stream, then takes too long."""
        await ctx.emit(_Late("filler"))
        await trio.sleep(100)
        return "late"

    child = Agent(name="child", model=ScriptedModel([ToolCall("stuck", {}), "x"]), tools=[stuck])
    parent = Agent(name="parent", model=ScriptedModel([transfer("child"), "done"]), sub_agents=[child], tool_timeout=1)
    seen: list[Event] = []
    async with open_runtime(event_buffer=1) as runtime, runtime.open_session(parent) as session:
        async with session.run("go") as stream:
            async for event in stream:
                seen.append(event)
                if isinstance(event, SubAgentEvent) and isinstance(event.event, ToolCallStarted):
                    await trio.testing.wait_all_tasks_blocked()  # the filler is in: the stream is full
                    await trio.sleep(5)  # past the tool_timeout (virtual time), not reading
    nested = [event.event for event in seen if isinstance(event, SubAgentEvent)]
    cancelled = ToolCallFinished("call_1_0", "stuck", None, "the tool call was cancelled")
    assert nested[-2:] == [cancelled, RunFinished("cancelled")]
    back = seen.index(AgentSwitched("child", "parent"))
    assert seen[back - 1] == SubAgentEvent("child", RunFinished("cancelled"))
    assert seen[-1] == RunFinished("completed")


async def test_nothing_of_a_cancelled_sub_agent_call_is_sent_after_its_tool_call_finished(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A sub-agent's call cancelled by the parent's tool_timeout: a task of it that goes on (here while the
    sub-agent's on_run_end hook runs, before its run has ended) reports progress after the call's
    ToolCallFinished: that progress is dropped and counted, never sent."""
    go = trio.Event()
    reported = trio.Event()

    @tool
    async def kick(ctx: ToolContext[None]) -> str:
        """Start a task that reports later, then take too long."""

        async def later() -> None:
            await go.wait()
            await ctx.report_progress(1, message="late")
            reported.set()

        ctx.session.start_soon(later)
        await trio.sleep(100)
        return "late"

    class LetItReport(Hooks):
        async def on_run_end(self, ctx: RunContext[Any], reason: str) -> None:
            go.set()
            await reported.wait()

    child = Agent(name="child", model=ScriptedModel([ToolCall("kick", {})]), tools=[kick], hooks=[LetItReport()])
    parent = Agent(name="parent", model=ScriptedModel([transfer("child"), "done"]), sub_agents=[child], tool_timeout=1)
    async with open_runtime() as runtime, runtime.open_session(parent) as session, session.run("go") as stream:
        events = [event async for event in stream]
    assert reported.is_set()
    nested = [event.event for event in events if isinstance(event, SubAgentEvent)]
    assert not [event for event in nested if isinstance(event, ToolProgress)]
    assert nested[-2:] == [
        ToolCallFinished("call_1_0", "kick", None, "the tool call was cancelled"),
        RunFinished("cancelled"),
    ]
    assert stream.result.progress_dropped == 1
    assert stream.result.reason == "completed"
