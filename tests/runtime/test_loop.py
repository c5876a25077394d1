"""The agent loop: model call, concurrent tools, results, repeat; every failure an event."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import json
import math
import threading
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import attrs
import pydantic
import pytest
import trio
import trio.testing

from agents import (
    TRANSFER_TOOL,
    Agent,
    AgentsError,
    AssistantMessage,
    DocumentPart,
    ErrorChunk,
    Hooks,
    ModelChunk,
    ModelError,
    ModelRequest,
    ReasoningBlock,
    ReasoningChunk,
    RunContext,
    ScriptedModel,
    StopRun,
    TextChunk,
    Tool,
    ToolCall,
    ToolCallChunk,
    ToolContext,
    ToolResultMessage,
    UnsupportedContentError,
    UsageLimits,
    UserMessage,
    tool,
)
from runtime import RunFailedError, RunResult, SessionHandle, open_runtime
from runtime._loop import ON_RUN_END_GRACE
from runtime._wire import event_to_json
from runtime.events import (
    CustomEvent,
    ElicitationRequest,
    ErrorEvent,
    Event,
    ReasoningDelta,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    Usage,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from contextlib import AbstractAsyncContextManager


async def collect(agent: Agent, prompt: str = "go", *, deps: Any = None) -> list[Event]:
    """Run ``agent`` once in a fresh runtime and return every event it streamed."""
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run(prompt, deps=deps) as stream:
            return [event async for event in stream]


def finished(events: list[Event]) -> RunFinished:
    """The run's RunFinished, checking it is the only one and the last event."""
    finishes = [event for event in events if isinstance(event, RunFinished)]
    assert len(finishes) == 1
    assert events[-1] is finishes[0]
    return finishes[0]


def tool_results(model: ScriptedModel, turn: int) -> list[ToolResultMessage]:
    """The tool results the model saw in the request of the given turn."""
    return [m for m in model.requests[turn].messages if isinstance(m, ToolResultMessage)]


class ChunkModel:
    """A model that streams fixed chunks, then (optionally) blocks forever."""

    def __init__(self, chunks: Sequence[ModelChunk], *, then_hang: bool = False) -> None:
        self.chunks = chunks
        self.then_hang = then_hang

    @asynccontextmanager
    async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[ModelChunk]]:
        async def chunks() -> AsyncIterator[ModelChunk]:
            for chunk in self.chunks:
                yield chunk
            if self.then_hang:
                await trio.sleep_forever()

        iterator = chunks()
        try:
            yield iterator
        finally:
            await iterator.aclose()  # type: ignore[attr-defined]


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def test_loop_text_answer_streams_deltas_and_finishes_completed() -> None:
    """A plain answer streams RunStarted, text deltas, usage, then RunFinished("completed")."""
    events = await collect(Agent(name="a", model=ScriptedModel(["Hello there, friend."])))
    assert isinstance(events[0], RunStarted)
    deltas = [event.text for event in events if isinstance(event, TextDelta)]
    assert len(deltas) > 1
    assert "".join(deltas) == "Hello there, friend."
    assert any(isinstance(event, Usage) for event in events)
    assert finished(events).reason == "completed"


async def test_loop_tool_call_result_reaches_model_next_turn() -> None:
    """A tool call is announced, run, finished, and its result is in the next model request."""
    model = ScriptedModel([ToolCall("add", {"a": 2, "b": 3}), "5"])
    events = await collect(Agent(name="a", model=model, tools=[add]))
    started = [event for event in events if isinstance(event, ToolCallStarted)]
    done = [event for event in events if isinstance(event, ToolCallFinished)]
    assert [(e.name, e.arguments) for e in started] == [("add", {"a": 2, "b": 3})]
    assert [(e.result, e.error) for e in done] == [(5, None)]
    assert events.index(started[0]) < events.index(done[0])
    assert [(r.content, r.is_error) for r in tool_results(model, 1)] == [("5", False)]
    assert finished(events).reason == "completed"


async def test_loop_reasoning_chunks_become_reasoning_deltas() -> None:
    """Reasoning the model streams reaches the consumer as ReasoningDelta, apart from the text."""
    model = ChunkModel([ReasoningChunk("think "), ReasoningChunk("hard"), TextChunk("ok")])
    events = await collect(Agent(name="a", model=model))
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == ["think ", "hard"]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["ok"]


@tool
async def explode() -> str:
    """Always fails."""
    raise ValueError("kaboom")


@tool
async def slow() -> str:
    """Takes a minute."""
    await trio.sleep(60)
    return "late"


@pytest.mark.parametrize(
    ("call", "expected_error"),
    [
        (ToolCall("nope", {}), "unknown tool 'nope'"),
        (ToolCall("explode", {}), "ValueError: kaboom"),
        (ToolCall("add", {"a": "x", "b": 1}), "invalid arguments for tool 'add': a:"),
        (ToolCall("slow", {}), "took longer than tool_timeout=1.0s"),
    ],
    ids=["unknown", "raises", "bad-arguments", "timeout"],
)
async def test_loop_tool_failure_is_error_result_and_run_goes_on(
    call: ToolCall, expected_error: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A failing tool call becomes an error result the model sees, and the run continues."""
    model = ScriptedModel([call, "recovered"])
    agent = Agent(name="a", model=model, tools=[add, explode, slow], tool_timeout=1.0)
    events = await collect(agent)
    (done,) = [event for event in events if isinstance(event, ToolCallFinished)]
    assert done.error is not None
    assert expected_error in done.error
    assert done.result is None
    (result,) = tool_results(model, 1)
    assert result.is_error
    assert expected_error in result.content
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "recovered"
    assert finished(events).reason == "completed"


async def test_loop_invalid_json_arguments_are_an_error_result() -> None:
    """Arguments a provider sent as broken JSON become an error result, not a crash."""
    model = ChunkModel([ToolCallChunk("c1", "add", '{"a": 1,')])
    agent = Agent(name="a", model=model, tools=[add], max_turns=1)
    events = await collect(agent)
    (started,) = [e for e in events if isinstance(e, ToolCallStarted)]
    (done,) = [e for e in events if isinstance(e, ToolCallFinished)]
    assert started.arguments == {}
    assert done.error is not None
    assert "not valid JSON" in done.error


async def test_loop_arguments_of_another_type_are_that_calls_error_and_the_turn_goes_on() -> None:
    """A custom model (or an adapter's bug) giving arguments that are neither text nor a mapping fails that
    call with an error result, not the run; the turn's other call runs."""
    model = ChunkModel([ToolCallChunk("c1", "add", cast("Any", 5)), ToolCallChunk("c2", "add", {"a": 1, "b": 2})])
    agent = Agent(name="a", model=model, tools=[add], max_turns=1)
    events = await collect(agent)
    finished_calls = {e.call_id: e for e in events if isinstance(e, ToolCallFinished)}  # in the order they ended
    first, second = finished_calls["c1"], finished_calls["c2"]
    assert first.error is not None
    assert "must be a JSON object, not int" in first.error
    assert second.result == 3


async def test_loop_tools_of_one_turn_run_concurrently_and_results_keep_call_order() -> None:
    """Tools of one turn run at once (each waits for the other) and results follow call order."""
    first_running = trio.Event()
    second_done = trio.Event()

    @tool
    async def first() -> str:
        """Waits for the second to finish."""
        first_running.set()
        await second_done.wait()
        return "first"

    @tool
    async def second() -> str:
        """Finishes once the first is running."""
        await first_running.wait()
        second_done.set()
        return "second"

    model = ScriptedModel([[ToolCall("first"), ToolCall("second")], "both"])
    with trio.fail_after(5):
        events = await collect(Agent(name="a", model=model, tools=[first, second]))
    finish_order = [e.name for e in events if isinstance(e, ToolCallFinished)]
    assert finish_order == ["second", "first"]
    assert [e.name for e in events if isinstance(e, ToolCallStarted)] == ["first", "second"]
    assert [r.content for r in tool_results(model, 1)] == ["first", "second"]


async def test_loop_max_turns_ends_run_with_max_turns() -> None:
    """A model that keeps calling tools is stopped after max_turns model calls."""
    model = ScriptedModel([ToolCall("add", {"a": 1, "b": 1})] * 3)
    events = await collect(Agent(name="a", model=model, tools=[add], max_turns=3))
    assert finished(events).reason == "max_turns"
    assert len(model.requests) == 3


async def test_loop_run_timeout_ends_run_with_timeout(autojump_clock: trio.testing.MockClock) -> None:
    """Past run_timeout the run ends with an ErrorEvent naming the deadline and RunFinished("timeout")."""
    model = ScriptedModel([ToolCall("slow")])
    async with open_runtime() as runtime:
        agent = Agent(name="a", model=model, tools=[slow], run_timeout=5.0)
        async with runtime.open_session(agent) as session:
            async with session.run("go") as stream:
                events = [event async for event in stream]
            (error,) = [e for e in events if isinstance(e, ErrorEvent)]
            assert error.kind == "timeout"
            assert "run_timeout=5.0s" in error.message
            assert finished(events).reason == "timeout"
            # The cut-short tool call still has a result, so history is valid.
            (result,) = [m for m in session.history if isinstance(m, ToolResultMessage)]
            assert result.is_error


async def test_loop_model_idle_timeout_ends_run_with_timeout(autojump_clock: trio.testing.MockClock) -> None:
    """A model that goes quiet for model_idle_timeout ends the run with "timeout"."""
    model = ChunkModel([TextChunk("hel")], then_hang=True)
    events = await collect(Agent(name="a", model=model, model_idle_timeout=2.0))
    (error,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.kind == "timeout"
    assert "model_idle_timeout=2.0s" in error.message
    assert finished(events).reason == "timeout"


async def test_loop_slow_consumer_is_not_an_idle_model(autojump_clock: trio.testing.MockClock) -> None:
    """Time spent waiting for a slow consumer does not count against model_idle_timeout."""
    model = ChunkModel([TextChunk(str(i)) for i in range(5)])
    agent = Agent(name="a", model=model, model_idle_timeout=1.0)
    async with open_runtime(event_buffer=0) as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            events = []
            async for event in stream:
                events.append(event)
                await trio.sleep(10)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "01234"
    assert finished(events).reason == "completed"


class FailingModel:
    """A model whose every call raises."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    @asynccontextmanager
    async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[ModelChunk]]:
        raise self.error
        yield  # pragma: no cover


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (FailingModel(ModelError("overloaded")), "overloaded"),
        (FailingModel(OSError("connection refused")), "OSError: connection refused"),
        (ChunkModel([TextChunk("par"), ErrorChunk("server_error", "upstream died")]), "upstream died"),
        (ScriptedModel([]), "ScriptedModel ran out of turns"),
    ],
    ids=["model-error", "foreign-error", "error-chunk", "script-exhausted"],
)
async def test_loop_model_failure_ends_run_with_error(model: Any, message: str) -> None:
    """A model that raises or reports an error ends the run: ErrorEvent("model"), RunFinished("error")."""
    events = await collect(Agent(name="a", model=model))
    (error,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.kind == "model"
    assert message in error.message
    assert finished(events).reason == "error"


class NamedLikeOurs(Exception):
    """A third-party error whose package name happens to start with "agents"."""


NamedLikeOurs.__module__ = "agents_contrib.errors"


class OursFromElsewhere(AgentsError):
    """An error of the agents tree defined outside the agents package (a plugin's, a test's)."""


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (ModelError("overloaded"), "overloaded"),
        (OursFromElsewhere("said plainly"), "said plainly"),
        (NamedLikeOurs("boom"), "NamedLikeOurs: boom"),
        (OSError("connection refused"), "OSError: connection refused"),
    ],
    ids=["ours", "ours-from-elsewhere", "named-like-ours", "foreign"],
)
async def test_loop_tells_our_errors_by_class_not_by_module_name(error: Exception, message: str) -> None:
    """An error of the AgentsError tree is reported as its message alone; any other gets its type name in front."""
    events = await collect(Agent(name="a", model=FailingModel(error)))
    (event,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert event.message == message


class RecordingHooks(Hooks):
    """Records every hook call."""

    def __init__(self, *, stop: str | None = None, refuse_tools: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.stop = stop
        self.refuse_tools = refuse_tools

    async def on_user_prompt(self, ctx: RunContext[Any], prompt: str) -> StopRun | None:
        self.calls.append(("on_user_prompt", prompt))
        return StopRun(self.stop) if self.stop else None

    async def before_tool(self, ctx: ToolContext[Any], arguments: dict[str, Any]) -> None:
        self.calls.append(("before_tool", (ctx.tool_name, arguments)))
        if self.refuse_tools:
            raise PermissionError("not allowed")

    async def after_tool(self, ctx: ToolContext[Any], result: Any, error: str | None) -> None:
        self.calls.append(("after_tool", (ctx.tool_name, result, error)))

    async def on_run_end(self, ctx: RunContext[Any], reason: str) -> None:
        self.calls.append(("on_run_end", reason))


async def test_hooks_are_called_in_order_around_tools() -> None:
    """on_user_prompt, before_tool, after_tool and on_run_end see the run as it happens."""
    hooks = RecordingHooks()
    model = ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "3"])
    await collect(Agent(name="a", model=model, tools=[add], hooks=[hooks]), "sum")
    assert hooks.calls == [
        ("on_user_prompt", "sum"),
        ("before_tool", ("add", {"a": 1, "b": 2})),
        ("after_tool", ("add", 3, None)),
        ("on_run_end", "completed"),
    ]


async def test_hooks_user_prompt_stop_ends_run_before_the_model() -> None:
    """A StopRun from on_user_prompt ends the run with hook_stop and its message; the model is not called."""
    hooks = RecordingHooks(stop="not today")
    model = ScriptedModel(["never"])
    events = await collect(Agent(name="a", model=model, hooks=[hooks]))
    assert finished(events) == RunFinished("hook_stop", "not today")
    assert model.requests == []
    assert hooks.calls[-1] == ("on_run_end", "hook_stop")


async def test_hooks_before_tool_raising_refuses_the_call() -> None:
    """A before_tool hook that raises stops the tool; its message is the model's error result."""
    ran: list[int] = []

    @tool
    async def guarded() -> str:
        """Must not run."""
        ran.append(1)
        return "ran"

    model = ScriptedModel([ToolCall("guarded"), "ok"])
    events = await collect(Agent(name="a", model=model, tools=[guarded], hooks=[RecordingHooks(refuse_tools=True)]))
    (done,) = [e for e in events if isinstance(e, ToolCallFinished)]
    assert done.error == "PermissionError: not allowed"
    assert ran == []


async def test_hooks_failing_user_prompt_hook_is_an_error_event() -> None:
    """A hook that raises ends the run with ErrorEvent("hook") and RunFinished("error")."""

    class Broken(Hooks):
        async def on_user_prompt(self, ctx: RunContext[Any], prompt: str) -> StopRun | None:
            raise KeyError("missing")

    events = await collect(Agent(name="a", model=ScriptedModel(["x"]), hooks=[Broken()]))
    (error,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.kind == "hook"
    assert finished(events).reason == "error"


@pytest.mark.parametrize("hook_takes", [0.5, math.inf], ids=["within-the-grace", "for-ever"])
@pytest.mark.parametrize("cancel", ["consumer-leaves", "session-closed"])
async def test_hooks_on_run_end_of_an_ended_run_gets_a_second_when_a_cancel_comes(
    autojump_clock: trio.testing.MockClock, cancel: str, hook_takes: float
) -> None:
    """A run has ended (completed) and its on_run_end is writing (an audit row): the consumer leaving before
    RunFinished, or the session closing, leaves the hook ON_RUN_END_GRACE more, as a cancelled run's hooks
    have, not a Cancelled at its next checkpoint. A hook that would take for ever is cut after that second."""
    ends: list[str] = []
    writing = trio.Event()

    class Audit(Hooks):
        async def on_run_end(self, ctx: RunContext[Any], reason: str) -> None:
            writing.set()
            await trio.sleep(hook_takes)
            ends.append(reason)

    agent = Agent(name="a", model=ScriptedModel(["answer"]), hooks=[Audit()])  # one word: one TextDelta
    async with open_runtime() as runtime:
        handle = await runtime.start_session(agent)
        async with handle.session.run("hi") as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    await writing.wait()  # the run has ended: its end hook runs
                    cancelled_at = trio.current_time()
                    if cancel == "consumer-leaves":
                        break
                    await handle.aclose()
    assert ends == (["completed"] if hook_takes < ON_RUN_END_GRACE else [])
    assert trio.current_time() - cancelled_at == min(hook_takes, ON_RUN_END_GRACE)


async def test_hooks_on_run_end_of_an_ended_run_takes_as_long_as_it_needs_when_nothing_cancels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The second of grace is for a cancel: an ended run's slow on_run_end, never cancelled, is not cut."""
    ends: list[str] = []

    class Slow(Hooks):
        async def on_run_end(self, ctx: RunContext[Any], reason: str) -> None:
            await trio.sleep(30)
            ends.append(reason)

    events = await collect(Agent(name="a", model=ScriptedModel(["x"]), hooks=[Slow()]))
    assert ends == ["completed"]
    assert finished(events).reason == "completed"


async def test_hooks_after_tool_hears_of_a_call_cut_by_a_cancel(autojump_clock: trio.testing.MockClock) -> None:
    """A call cut short by the run's end (run_timeout here) is ended for its hooks too: after_tool gets the
    call's error, so a before_tool/after_tool pair (a metric, a lock, a span) stays balanced."""

    @tool
    async def hang() -> str:
        """Never answers."""
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    hooks = RecordingHooks()
    model = ScriptedModel([ToolCall("hang"), "never"])
    events = await collect(Agent(name="a", model=model, tools=[hang], hooks=[hooks], run_timeout=5))
    (done,) = [e for e in events if isinstance(e, ToolCallFinished)]
    assert done.error == "the tool call was cancelled"
    assert hooks.calls[1:] == [
        ("before_tool", ("hang", {})),
        ("after_tool", ("hang", None, "the tool call was cancelled")),
        ("on_run_end", "timeout"),
    ]


async def test_hooks_a_call_cancelled_before_its_before_tool_gets_no_after_tool() -> None:
    """A call cancelled while it waits for its approval never reached before_tool: no after_tool either (a
    pair keyed by call id would find no start)."""

    @tool(requires_approval=True)
    async def pay(amount: int) -> str:
        """Pay."""
        return f"paid {amount}"

    hooks = RecordingHooks()
    agent = Agent(name="a", model=ScriptedModel([ToolCall("pay", {"amount": 5}), "x"]), tools=[pay], hooks=[hooks])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("pay 5") as stream:
            async for event in stream:
                if isinstance(event, ElicitationRequest):
                    break  # leaving cancels the run while its call waits for the approval
    assert [name for name, _ in hooks.calls] == ["on_user_prompt", "on_run_end"]


def test_hooks_a_decorated_async_hook_is_taken() -> None:
    """A hook wrapped by a decorator (a plain def returning the coroutine, functools.wraps) is an async hook."""

    def logged(method: Any) -> Any:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return wrapper

    class Decorated(Hooks):
        @logged
        async def on_run_end(self, ctx: RunContext[Any], reason: str) -> None:
            pass

    assert Agent(name="a", model=ScriptedModel([]), hooks=[Decorated()]).hooks


@pytest.mark.parametrize("is_async", [False, True])
async def test_instructions_callable_gets_run_context_with_deps(is_async: bool) -> None:
    """A callable instructions gets the run's context (deps included) and becomes the system prompt."""

    def sync_instructions(ctx: RunContext[str]) -> str:
        return f"Speak to {ctx.deps} as {ctx.agent.name}."

    async def async_instructions(ctx: RunContext[str]) -> str:
        return sync_instructions(ctx)

    model = ScriptedModel(["hi"])
    instructions = async_instructions if is_async else sync_instructions
    await collect(Agent(name="guide", model=model, instructions=instructions), deps="Ada")
    assert model.requests[0].instructions == "Speak to Ada as guide."


async def test_instructions_callable_that_returns_no_string_ends_the_run_with_an_error() -> None:
    """An instructions callable that forgets its return gives None: the run ends with an ErrorEvent of kind
    "instructions" before the model is asked; "None" was sent as the system prompt."""

    def forgot(ctx: RunContext[Any]) -> str:
        prompt = f"Speak as {ctx.agent.name}."
        assert prompt  # ... and the return of it forgotten
        return None  # type: ignore[return-value]

    model = ScriptedModel(["hi"])
    events = await collect(Agent(name="guide", model=model, instructions=forgot))
    (error,) = [event for event in events if isinstance(event, ErrorEvent)]
    assert (error.kind, error.message) == ("instructions", "the instructions callable returned a NoneType, not a str")
    assert model.requests == []


async def test_tool_context_carries_deps_session_and_call() -> None:
    """A tool declaring a ToolContext gets the run's deps, session, agent and call id."""
    seen: list[ToolContext[dict[str, str]]] = []

    @tool
    async def whoami(ctx: ToolContext[dict[str, str]]) -> str:
        """Tells who is asking."""
        seen.append(ctx)
        return ctx.deps["user"]

    model = ScriptedModel([ToolCall("whoami"), "done"])
    agent = Agent(name="a", model=model, tools=[whoami])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        result = await session.ask("who?", deps={"user": "ada"})
    (ctx,) = seen
    assert ctx.session is session
    assert ctx.agent is agent
    assert ctx.run_id == result.run_id
    assert ctx.tool_name == "whoami"
    assert [(c.result, c.call_id) for c in result.tool_calls] == [("ada", ctx.call_id)]


async def test_sync_tool_runs_in_a_worker_thread() -> None:
    """A sync tool function runs (in a thread) and its result reaches the model."""

    threads: list[int] = []

    def shout(text: str) -> str:
        threads.append(threading.get_ident())
        return text.upper()

    model = ScriptedModel([ToolCall("shout", {"text": "hey"}), "done"])
    async with (
        open_runtime() as runtime,
        runtime.open_session(Agent(name="a", model=model, tools=[shout])) as s,
    ):
        result: RunResult = await s.ask("go")
    assert [c.result for c in result.tool_calls] == ["HEY"]
    assert threads != [threading.get_ident()]
    assert len(threads) == 1


class RecordingToolset:
    """A toolset that records when it is opened and closed."""

    def __init__(self, *, fail: bool = False) -> None:
        self.log: list[str] = []
        self.fail = fail

    @asynccontextmanager
    async def open_tools(self, ctx: RunContext[Any]) -> AsyncIterator[Sequence[Tool]]:
        if self.fail:
            raise ConnectionError("MCP server unreachable")
        self.log.append("open")
        try:
            yield [add]
        finally:
            self.log.append("close")


async def test_toolset_is_opened_for_the_run_and_closed_after() -> None:
    """A toolset's tools are usable during the run, and it is closed when the run ends."""
    toolset = RecordingToolset()
    model = ScriptedModel([ToolCall("add", {"a": 1, "b": 1}), "2"])
    events = await collect(Agent(name="a", model=model, tools=[toolset]))
    assert [e.result for e in events if isinstance(e, ToolCallFinished)] == [2]
    assert toolset.log == ["open", "close"]
    assert [spec.name for spec in model.requests[0].tools] == ["add"]


async def test_toolset_is_closed_when_the_run_is_cancelled() -> None:
    """Leaving the run block while a tool runs still closes the toolset."""
    toolset = RecordingToolset()
    model = ScriptedModel([ToolCall("slow")])
    agent = Agent(name="a", model=model, tools=[toolset, slow])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            async for event in stream:
                if isinstance(event, ToolCallStarted):
                    break
    assert toolset.log == ["open", "close"]


class NamedToolset:
    """A toolset named like an MCP server, whose tools answer with that name (which one ran shows)."""

    def __init__(self, name: str, *tool_names: str) -> None:
        self.name = name
        self.tool_names = tool_names

    @asynccontextmanager
    async def open_tools(self, ctx: RunContext[Any]) -> AsyncIterator[Sequence[Tool]]:
        async def answer() -> str:
            """Answers with its toolset's name."""
            return self.name

        yield [tool(name=name)(answer) for name in self.tool_names]


class _Answer(pydantic.BaseModel):
    """A typed answer, given with the output tool."""

    x: int


@tool
async def echo() -> str:
    """A local tool."""
    return "local"


@pytest.mark.parametrize(
    ("clash", "holder"),
    [("final_result", "the output tool"), (TRANSFER_TOOL, "the transfer tool"), ("echo", "a local tool")],
)
async def test_a_toolset_tool_named_like_one_the_model_has_is_left_out_with_a_warning(
    clash: str, holder: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A toolset's tool named like the output tool, the transfer tool or a local tool is not offered as well
    (a provider refuses a request with two tools of one name): it is left out, with a warning naming the
    toolset and the tool, and the model gets each name once."""
    helper = Agent(name="helper", model=ScriptedModel(["helped"]))
    model = ScriptedModel([ToolCall("final_result", {"x": 1})])
    agent = Agent(
        name="a",
        model=model,
        tools=[echo, NamedToolset("files", clash, "other")],
        sub_agents=[helper],
        output_type=_Answer,
    )
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        assert (await session.ask("go")).output == _Answer(x=1)
    names = [spec.name for spec in model.requests[0].tools]
    assert sorted(names) == sorted({"echo", TRANSFER_TOOL, "other", "final_result"})
    assert f"toolset 'files': its tool {clash!r} is left out: {holder} has that name" in caplog.text


async def test_a_tool_name_two_toolsets_have_is_the_first_ones_and_the_local_tools_before_both(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two toolsets with a tool of one name: the first one's is offered and called, the second's left out
    with a warning; a local tool of that name comes before both."""
    model = ScriptedModel([[ToolCall("shared"), ToolCall("echo")], "done"])
    agent = Agent(
        name="a", model=model, tools=[NamedToolset("one", "shared", "echo"), NamedToolset("two", "shared"), echo]
    )
    events = await collect(agent)
    assert sorted(spec.name for spec in model.requests[0].tools) == ["echo", "shared"]
    assert sorted((e.name, e.result) for e in events if isinstance(e, ToolCallFinished)) == [
        ("echo", "local"),
        ("shared", "one"),
    ]
    assert "toolset 'two': its tool 'shared' is left out: toolset 'one' has that name" in caplog.text
    assert "toolset 'one': its tool 'echo' is left out: a local tool has that name" in caplog.text


async def test_a_tool_value_json_cannot_hold_is_sent_as_its_text_and_the_run_goes_on() -> None:
    """A result JSON has no form for (bytes that are not UTF-8) is sent as its str, to the model and to a
    remote client alike; the call beside it and the run are not disturbed."""

    @tool
    async def raw() -> dict[str, bytes]:
        """Returns bytes that are not text."""
        return {"raw": b"\xff"}

    @tool
    async def fine() -> str:
        """Fine."""
        return "fine"

    agent = Agent(name="a", model=ScriptedModel([[ToolCall("raw"), ToolCall("fine")], "done"]), tools=[raw, fine])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            events = [event async for event in stream]
        finished = [event for event in events if isinstance(event, ToolCallFinished)]
        assert sorted((event.name, event.error) for event in finished) == [("fine", None), ("raw", None)]
        assert events[-1] == RunFinished("completed")
        results = [message for message in session.history if isinstance(message, ToolResultMessage)]
        assert [(result.content, result.is_error) for result in results] == [
            ("{'raw': b'\\xff'}", False),
            ("fine", False),
        ]
    # A remote client gets the same text in its ToolCallFinished.
    assert [event_to_json(event)["result"] for event in finished if event.name == "raw"] == [results[0].content]


class _Cat(pydantic.BaseModel):
    """A pydantic model a tool may return."""

    name: str


@dataclasses.dataclass
class _Dog:
    """A dataclass a tool may return."""

    name: str


class _Colour(enum.Enum):
    """An enum a tool may return."""

    RED = "red"


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        (_Cat(name="Tom"), '{"name":"Tom"}'),
        (_Dog("Rex"), '{"name":"Rex"}'),
        ([_Cat(name="Tom")], '[{"name":"Tom"}]'),
        ({1, 2}, "[1,2]"),
        (_Colour.RED, '"red"'),
        (b"abc", '"abc"'),
        (datetime.date(2024, 1, 2), '"2024-01-02"'),
        ({(1, 2): 3}, '{"1,2":3}'),
        ({"n": 1, "s": "é"}, '{"n":1,"s":"é"}'),
    ],
    ids=["model", "dataclass", "list_of_models", "set", "enum", "bytes", "date", "tuple_key", "dict"],
)
async def test_a_tool_value_reaches_the_model_as_the_json_remote_clients_get(value: object, sent: str) -> None:
    """A tool's value that is not a str is its JSON in the result the model sees (a model or dataclass as
    its fields, not its repr), the same JSON a remote client gets for its ToolCallFinished."""

    @tool
    async def get() -> Any:
        """Returns the value."""
        return value

    agent = Agent(name="a", model=ScriptedModel([ToolCall("get"), "done"]), tools=[get])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            events = [event async for event in stream]
        (result,) = [message for message in session.history if isinstance(message, ToolResultMessage)]
    assert (result.content, result.is_error) == (sent, False)
    (done,) = [event for event in events if isinstance(event, ToolCallFinished)]
    assert done.result is value
    assert json.loads(sent) == event_to_json(done)["result"]


class _Report(pydantic.BaseModel):
    """A tool's result whose computed field raises: it has no JSON form, nor a str (its repr shows the field)."""

    rows: dict[str, int] = {}

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def total_of_a(self) -> int:
        return self.rows["a"]


async def test_a_tool_result_with_no_text_form_is_that_calls_error_result_and_the_run_goes_on() -> None:
    """A tool's value that can be turned into neither JSON nor a str (a computed field raising KeyError) is
    an error result the model sees, saying so, and the run goes on. It was converted outside the call's
    error handling: the run failed as a runtime bug, its ToolCallFinished saying "the tool call was
    cancelled"."""

    @tool
    async def report() -> _Report:
        """A report."""
        return _Report()

    agent = Agent(name="a", model=ScriptedModel([ToolCall("report"), "done"]), tools=[report])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            events = [event async for event in stream]
        (result,) = [message for message in session.history if isinstance(message, ToolResultMessage)]
    error = "the tool's result (_Report) has no JSON or text form: KeyError: 'a'"
    assert (result.content, result.is_error) == (error, True)
    (finished,) = [event for event in events if isinstance(event, ToolCallFinished)]
    assert (finished.result, finished.error) == (None, error)
    assert not [event for event in events if isinstance(event, ErrorEvent)]
    assert events[-1] == RunFinished("completed")


async def test_a_sync_tool_that_calls_sys_exit_gets_an_error_result_and_nothing_else_ends() -> None:
    """SystemExit from a tool (argparse on bad input) is that call's error: the run goes on, and the
    runtime and its other sessions are not brought down."""

    @tool
    def cli(args: str) -> str:
        """Parses args as a command line."""
        raise SystemExit(2)

    agent = Agent(name="a", model=ScriptedModel([ToolCall("cli", {"args": ""}), "done", "again"]), tools=[cli])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            events = [event async for event in stream]
        (finished,) = [event for event in events if isinstance(event, ToolCallFinished)]
        assert finished.error == "the tool exited: SystemExit: 2"
        assert events[-1] == RunFinished("completed")
        assert (await session.ask("next")).output == "again"


class _LibraryExit(BaseException):
    """A library's own BaseException (pytest's Exit, gevent's GreenletExit are ones)."""


@pytest.mark.parametrize(
    ("raised", "message"),
    [(_LibraryExit("custom base"), "_LibraryExit: custom base"), (GeneratorExit(), "GeneratorExit")],
    ids=["own", "GeneratorExit"],
)
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_a_tool_raising_a_base_exception_gets_an_error_result_and_nothing_else_ends(
    raised: BaseException, message: str, sync: bool
) -> None:
    """A BaseException that is neither a cancel nor Ctrl+C (GeneratorExit, a library's own) is that
    call's error result: the run goes on, and the session and the runtime's other sessions are not ended."""

    def boom() -> str:
        """Fails."""
        raise raised

    async def boom_async() -> str:
        """Fails."""
        raise raised

    failing = tool(name="boom")(boom if sync else boom_async)
    agent = Agent(name="a", model=ScriptedModel([ToolCall("boom"), "done", "again"]), tools=[failing])
    other = Agent(name="b", model=ScriptedModel(["hi"]))
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        handle = await runtime.start_session(other)
        async with session.run("go") as stream:
            events = [event async for event in stream]
        (done,) = [event for event in events if isinstance(event, ToolCallFinished)]
        assert done.error == message
        assert events[-1] == RunFinished("completed")
        (result,) = [message for message in session.history if isinstance(message, ToolResultMessage)]
        assert (result.content, result.is_error) == (message, True)
        assert (await session.ask("next")).output == "again"
        assert (await handle.session.ask("x")).output == "hi"
        await handle.aclose()


@pytest.mark.parametrize("ending", ["run_timeout", "tool_timeout", "consumer_leaves"])
async def test_a_tool_whose_task_fails_as_it_is_cancelled_ends_as_cancelled_and_the_session_goes_on(
    ending: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A tool's own nursery whose task raises while cancelled gives a group of that error and Cancelled:
    the cancel goes on as any cancel (run_timeout ends the run as "timeout", tool_timeout the call as a
    timeout), and the session does not fail for it."""

    @tool
    async def fetch() -> str:
        """Fetches with a helper whose close fails when cancelled."""

        async def helper() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise ConnectionError("close failed")  # a close that fails as it is cancelled

        async with trio.open_nursery() as nursery:
            nursery.start_soon(helper)
            await trio.sleep(100)
        return "fetched"

    agent = Agent(
        name="a",
        model=ScriptedModel([ToolCall("fetch"), "done", "again"]),
        tools=[fetch],
        run_timeout=1.0 if ending == "run_timeout" else None,
        tool_timeout=1.0 if ending == "tool_timeout" else None,
    )
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        events: list[Event] = []
        with trio.move_on_after(1.0 if ending == "consumer_leaves" else 1000):
            async with session.run("go") as stream:
                async for event in stream:
                    events.append(event)
        if ending == "run_timeout":
            assert events[-1] == RunFinished("timeout", events[-1].message)  # type: ignore[union-attr]
        elif ending == "tool_timeout":
            (finished,) = [event for event in events if isinstance(event, ToolCallFinished)]
            assert finished.error is not None
            assert "tool_timeout" in finished.error
            assert events[-1] == RunFinished("completed")
        assert session.error is None
        assert not session.closed
        assert (await session.ask("next")).reason == "completed"


async def test_reasoning_blocks_go_into_the_responses_message_and_are_no_event() -> None:
    """A model's ReasoningBlock chunks are kept, in order, in its AssistantMessage (sent back next turn),
    while only its ReasoningChunk pieces are streamed (as ReasoningDelta)."""

    @tool
    async def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    blocks = (ReasoningBlock("thinking", "sig"), ReasoningBlock("opaque", redacted=True))
    turn: list[ModelChunk] = [ReasoningChunk("thinking"), *blocks, ToolCallChunk("c1", "add", {"a": 1, "b": 2})]
    model = ScriptedModel([turn, "3"])
    events = await collect(Agent(name="a", model=model, tools=[add]))
    assert [event for event in events if isinstance(event, ReasoningDelta)] == [ReasoningDelta("thinking")]
    assert events[-1] == RunFinished("completed")
    (response,) = [message for message in model.requests[1].messages if isinstance(message, AssistantMessage)]
    assert response.reasoning == blocks
    assert response.tool_calls == (ToolCallChunk("c1", "add", {"a": 1, "b": 2}),)


class NoDocumentURLs:
    """A provider that takes no document by URL (as Chat Completions): it refuses one as it builds the
    request, sending nothing; it sends other requests to ``answers``."""

    def __init__(self, answers: ScriptedModel) -> None:
        self.answers = answers

    def stream(self, request: ModelRequest) -> AbstractAsyncContextManager[AsyncIterator[ModelChunk]]:
        for message in request.messages:
            if isinstance(message, UserMessage) and not isinstance(message.content, str):
                for part in message.content:
                    if isinstance(part, DocumentPart) and part.url is not None:
                        raise UnsupportedContentError(part, provider="test", reason="no document by URL")
        return self.answers.stream(request)


async def test_a_part_the_model_cannot_take_fails_its_run_only() -> None:
    """A run whose new message holds a part the model refuses ends with the model error, and the message is
    not kept in the history: the session's later runs send nothing of it and succeed."""
    answers = ScriptedModel(["plain", "still"])
    agent = Agent(name="a", model=NoDocumentURLs(answers))
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run(["read", DocumentPart(url="https://example.com/a.pdf")]) as stream:
            events = [event async for event in stream]
        (error,) = [event for event in events if isinstance(event, ErrorEvent)]
        assert error.kind == "model"
        assert "cannot send a document by URL" in error.message
        assert events[-1] == RunFinished("error", error.message)
        assert session.history == ()
        assert (await session.ask("hello")).output == "plain"
        assert (await session.ask("again")).output == "still"
    assert [message.text for message in answers.requests[1].messages] == ["hello", "plain", "again"]


async def test_a_first_request_failing_otherwise_keeps_the_users_message() -> None:
    """A run whose first model request fails for another reason (the model's error, a usage limit before
    it) keeps the user's message in the history, as before."""
    async with (
        open_runtime() as runtime,
        runtime.open_session(Agent(name="a", model=ChunkModel([ErrorChunk("server_error", "overloaded")]))) as s,
    ):
        with pytest.raises(RunFailedError, match="overloaded"):
            await s.ask("hi")
        assert s.history == (UserMessage("hi"),)
    limited = Agent(name="a", model=ScriptedModel(["ok"]), session_usage_limits=UsageLimits(requests=1))
    async with open_runtime() as runtime, runtime.open_session(limited) as s:
        await s.ask("one")
        with pytest.raises(RunFailedError, match="requests limit"):
            await s.ask("two")
        assert s.history == (UserMessage("one"), AssistantMessage("ok"), UserMessage("two"))


@attrs.frozen
class Step(CustomEvent):
    """A tool's own event."""

    n: int


async def test_a_tool_call_cut_off_by_run_timeout_finishes_as_cancelled_before_the_run_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """run_timeout cancels a call in flight while the stream is full: its ToolCallStarted still gets a
    ToolCallFinished ("the tool call was cancelled"), owed past the full buffer, before the ErrorEvent and
    RunFinished("timeout"); RunResult.tool_calls and the history say the same of it as of the call that
    finished."""

    @tool
    async def stalling(ctx: ToolContext[None]) -> str:
        """Sends a step, then takes a minute."""
        await ctx.emit(Step(1))
        await trio.sleep(60)
        return "late"

    model = ScriptedModel([[ToolCallChunk("c1", "add", {"a": 1, "b": 2}), ToolCallChunk("c2", "stalling", {})]])
    agent = Agent(name="a", model=model, tools=[add, stalling], run_timeout=5.0)
    events: list[Event] = []
    async with open_runtime(event_buffer=1) as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            async for event in stream:
                events.append(event)
                if isinstance(event, ToolCallStarted) and event.call_id == "c2":
                    # Not reading past run_timeout (virtual time): the stream is full when it fires.
                    await trio.testing.wait_all_tasks_blocked()
                    await trio.sleep(10)
        result = stream.result
        history = session.history
    done = [event for event in events if isinstance(event, ToolCallFinished)]
    cancelled = ToolCallFinished("c2", "stalling", None, "the tool call was cancelled")
    assert done == [ToolCallFinished("c1", "add", 3, None), cancelled]
    assert [type(event) for event in events[events.index(cancelled) :]] == [ToolCallFinished, ErrorEvent, RunFinished]
    assert finished(events).reason == "timeout"
    assert [(call.call_id, call.result, call.error) for call in result.tool_calls] == [
        ("c1", 3, None),
        ("c2", None, "the tool call was cancelled"),
    ]
    results = [(m.call_id, m.is_error) for m in history if isinstance(m, ToolResultMessage)]
    assert results == [("c1", False), ("c2", True)]


async def test_a_handler_sees_a_call_cancelled_by_the_consumer_leaving_finish_before_the_run() -> None:
    """The consumer leaves while a call runs: a stream handler, which sees every event, gets that call's
    ToolCallFinished ("the tool call was cancelled") before the run's RunFinished("cancelled")."""
    seen: list[Event] = []
    ended = trio.Event()

    async def watch(event: Event) -> None:
        seen.append(event)
        if isinstance(event, RunFinished):
            ended.set()

    agent = Agent(name="a", model=ScriptedModel([ToolCall("slow", {})]), tools=[slow])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        session.add_handler(watch)
        async with session.run("go") as stream:
            async for event in stream:
                if isinstance(event, ToolCallStarted):
                    break
        with trio.fail_after(5):
            await ended.wait()
        assert stream.result.tool_calls[0].error == "the tool call was cancelled"
    tail = [event for event in seen if isinstance(event, (ToolCallStarted, ToolCallFinished, RunFinished))]
    assert tail == [
        ToolCallStarted("call_1_0", "slow", {}),
        ToolCallFinished("call_1_0", "slow", None, "the tool call was cancelled"),
        RunFinished("cancelled"),
    ]


async def test_a_tool_call_finished_as_run_timeout_cuts_its_send_still_reaches_the_consumer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A call ended and was recorded, but its ToolCallFinished waited for room (a slow consumer, a full
    stream) when run_timeout fired: it is still delivered, before the ErrorEvent, so the consumer sees
    every call that RunResult.tool_calls lists."""

    @tool
    async def stepping(ctx: ToolContext[None]) -> str:
        """Sends a step, which fills the stream, then ends."""
        await ctx.emit(Step(1))
        return "stepped"

    agent = Agent(name="a", model=ScriptedModel([ToolCall("stepping"), "done"]), tools=[stepping], run_timeout=1)
    async with open_runtime(event_buffer=1) as runtime, runtime.open_session(agent) as session:
        events: list[Event] = []
        async with session.run("go") as stream:
            async for event in stream:
                events.append(event)
                if isinstance(event, ToolCallStarted):
                    # The step fills the buffer: the call's ToolCallFinished waits for room, and waits on
                    # past run_timeout (virtual time) while this consumer does not read.
                    await trio.testing.wait_all_tasks_blocked()
                    await trio.sleep(5)
        result = stream.result
    assert [call.call_id for call in result.tool_calls] == ["call_1_0"]
    (done,) = [event for event in events if isinstance(event, ToolCallFinished)]
    assert done == ToolCallFinished("call_1_0", "stepping", "stepped", None)
    assert [type(event) for event in events[events.index(done) :]] == [ToolCallFinished, ErrorEvent, RunFinished]
    assert finished(events).reason == "timeout"


@pytest.mark.parametrize("answered", [True, False])
async def test_the_wait_for_an_approval_is_not_tool_timeout_but_run_timeout_bounds_it(
    answered: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """tool_timeout bounds a tool's own work, not the human's approval before it: an approval given after
    longer than tool_timeout runs the tool; one never given waits until run_timeout ends the run (the
    call is then cancelled)."""

    @tool(requires_approval=True)
    async def guarded() -> str:
        """Needs approval."""
        return "ran"

    agent = Agent(
        name="a", model=ScriptedModel([ToolCall("guarded"), "done"]), tools=[guarded], tool_timeout=1, run_timeout=60
    )
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        events: list[Event] = []
        async with session.run("go") as stream:
            async for event in stream:
                events.append(event)
                if isinstance(event, ElicitationRequest) and answered:
                    await trio.sleep(30)  # the human takes their time: 30 times tool_timeout
                    await stream.respond(event.id, "accept")
    (done,) = [event for event in events if isinstance(event, ToolCallFinished)]
    if answered:
        assert done == ToolCallFinished("call_1_0", "guarded", "ran", None)
        assert finished(events) == RunFinished("completed")
    else:
        assert done == ToolCallFinished("call_1_0", "guarded", None, "the tool call was cancelled")
        assert finished(events).reason == "timeout"
        assert trio.current_time() == pytest.approx(60)


@pytest.mark.parametrize("hook", ["on_run_end", "after_tool"])
async def test_hooks_a_cancelled_runs_hook_that_closes_its_session_while_a_session_task_leaves_the_run(
    autojump_clock: trio.testing.MockClock, hook: str
) -> None:
    """A task of the session (a background consumer) leaves a run block early, which waits for the run; the
    run's hook, in its shielded second of grace, closes the session, which waited for every other task of it,
    that consumer too: each waited for the other for ever, shielded, and the runtime could not exit."""
    ended: list[str] = []
    handles: list[SessionHandle] = []

    class CloseTheSession(Hooks):
        async def after_tool(self, ctx: ToolContext[Any], result: Any, error: str | None) -> None:
            if hook == "after_tool":
                await handles[0].aclose()
                ended.append("after_tool")

        async def on_run_end(self, ctx: RunContext[Any], reason: str) -> None:
            if hook == "on_run_end":
                await handles[0].aclose()
                ended.append("on_run_end")

    @tool
    async def slow() -> str:
        """Never answers."""
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    agent = Agent(name="a", model=ScriptedModel([ToolCall("slow"), "x"]), tools=[slow], hooks=[CloseTheSession()])
    left = trio.Event()
    with trio.fail_after(60):
        async with open_runtime() as runtime:
            handle = await runtime.start_session(agent)
            handles.append(handle)

            async def consume() -> None:
                async with handle.session.run("go") as stream:
                    async for event in stream:
                        if isinstance(event, ToolCallStarted):
                            break  # cancels the run, and waits for its task
                left.set()

            handle.session.start_soon(consume)
            await handle.wait_closed()
    assert left.is_set()
    assert ended == [hook]
