# mypy: enable-error-code="deprecated"
"""Typed output is typed for mypy: ``Agent(output_type=M)`` is an ``Agent[Any, M]`` and its results hold ``M``.

mypy runs over tests/ in strict mode, so each ``assert_type`` here is a
check of the public types; the tests also run, and check the values match.
What mypy must refuse is in ``_rejected_by_mypy``, each line with a ``type: ignore``
that mypy reports as unused if it stops refusing it (the ``deprecated`` check,
off by default, is on for this file).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, assert_type

import pydantic
import pytest
import trio

from agents import Agent, Hooks, RunContext, ScriptedModel, ToolCall, ToolContext, tool
from runtime import (
    Channel,
    MessageBus,
    RunFailedError,
    RunResult,
    RunStream,
    Runtime,
    Session,
    SessionHandle,
    open_gateway,
    open_runtime,
)
from runtime.events import ElicitationRequest, FinishReason, ToolCallFinished
from streams import open_server


class Weather(pydantic.BaseModel):
    city: str
    celsius: float


@dataclasses.dataclass
class Alert:
    level: int


async def test_typing_typed_agent_is_generic_in_its_output() -> None:
    """Agent(output_type=Weather) is an Agent[Any, Weather]; its session and ask() results carry Weather."""
    agent = Agent(
        name="weather",
        model=ScriptedModel([ToolCall("final_result", {"city": "Oslo", "celsius": -3})]),
        output_type=Weather,
    )
    assert_type(agent, Agent[Any, Weather])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        assert_type(session, Session[Weather])
        result = await session.ask("Weather in Oslo?")
        assert_type(result, RunResult[Weather])
        output = result.output
        assert_type(output, Weather | None)
    assert output == Weather(city="Oslo", celsius=-3)
    assert output is not None
    assert_type(output.celsius, float)


async def test_typing_default_agent_outputs_str() -> None:
    """An agent without output_type is an Agent[Any, str] whose results hold str."""
    agent = Agent(name="plain", model=ScriptedModel(["hello"]))
    assert_type(agent, Agent[Any, str])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        assert_type(session, Session[str])
        result = await session.ask("hi")
    assert_type(result.output, str | None)
    assert result.output == "hello"


async def test_typing_list_and_union_outputs() -> None:
    """list[...] is inferred; a union is annotated on the agent, and the output has the union's type."""
    numbers = Agent(
        name="n", model=ScriptedModel(['{"response": [1, 2]}']), output_type=list[int], output_mode="native"
    )
    assert_type(numbers, Agent[Any, list[int]])
    either = Agent[None, Weather | Alert](
        name="e", model=ScriptedModel([ToolCall("final_result_Alert", {"level": 2})]), output_type=Weather | Alert
    )
    async with open_runtime() as runtime:
        async with runtime.open_session(numbers) as session:
            listed = (await session.ask("go")).output
        async with runtime.open_session(either) as session:
            chosen = (await session.ask("go")).output
    assert_type(listed, list[int] | None)
    assert_type(chosen, Weather | Alert | None)
    assert listed == [1, 2]
    assert chosen == Alert(2)


async def test_typing_run_failed_error_carries_the_result() -> None:
    """RunFailedError.result is a RunResult (of any output type: the error is not generic)."""
    agent = Agent(
        name="w", model=ScriptedModel(["not json"]), output_type=Weather, output_mode="prompted", output_retries=0
    )
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with pytest.raises(RunFailedError) as info:
            await session.ask("go")
    assert_type(info.value.result, RunResult[Any])
    assert info.value.result.output is None


async def test_typing_run_stream_and_started_session_keep_the_output_type() -> None:
    """session.run() gives a RunStream[Weather] whose result holds Weather; start_session gives a
    SessionHandle[Weather]; bare RunStream and SessionHandle mean any output type."""
    agent = Agent(
        name="weather",
        model=ScriptedModel([ToolCall("final_result", {"city": "Oslo", "celsius": -3})]),
        output_type=Weather,
    )
    async with open_runtime() as runtime:
        handle = await runtime.start_session(agent)
        assert_type(handle, SessionHandle[Weather])
        assert_type(handle.session, Session[Weather])
        async with handle.session.run("Weather in Oslo?") as stream:
            assert_type(stream, RunStream[Weather])
            async for _ in stream:
                pass
        assert_type(stream.result.output, Weather | None)
        assert_type(handle.session.resume(), RunStream[Weather])  # made, not entered: nothing runs
        await handle.aclose()
    any_stream: RunStream = stream  # a bare RunStream is a RunStream[Any]: any run's stream fits it
    any_handle: SessionHandle = handle
    assert_type(any_stream.result, RunResult[Any])
    assert_type(any_handle.session, Session[Any])
    assert stream.result.output == Weather(city="Oslo", celsius=-3)


async def test_typing_served_session_is_of_any_output() -> None:
    """ServedSession.session is a Session[Any], not a bare Session (which is Session[str] by OutputT's
    default): a served typed agent's output may be assigned to its own type."""
    agent = Agent(
        name="weather",
        model=ScriptedModel([ToolCall("final_result", {"city": "Oslo", "celsius": -3})]),
        output_type=Weather,
    )
    async with open_server(agent, port=0) as server:
        served = await server.open_session("s")
        assert_type(served.session, Session[Any])
        output: Weather | None = (await served.session.ask("Weather in Oslo?")).output
    assert output == Weather(city="Oslo", celsius=-3)


async def test_typing_elicit_takes_typing_forms() -> None:
    """ctx.elicit(schema=...) takes a typing form (the README's Literal["yes", "no"], a union) as well as a type
    and a flat JSON schema; the Literal is shown as an enum and checks the answer."""

    @tool
    async def deploy(ctx: ToolContext[None], env: str) -> str:
        """Deploy."""
        if env == "never":  # type-checked only: each form is accepted by mypy
            await ctx.elicit("n?", schema=int | None)
            await ctx.elicit("n?", schema=int)
            await ctx.elicit("n?", schema={"type": "object", "properties": {}})
        answer = await ctx.elicit(f"Deploy to {env}?", schema=Literal["yes", "no"], timeout=300)
        return "deployed" if answer.accepted and answer.content == "yes" else "not deployed"

    agent = Agent(name="ops", model=ScriptedModel([ToolCall("deploy", {"env": "prod"}), "done"]), tools=[deploy])
    results: list[Any] = []
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("deploy") as stream:
            async for event in stream:
                if isinstance(event, ElicitationRequest):
                    assert event.schema is not None
                    assert event.schema["enum"] == ["yes", "no"]
                    await stream.respond(event.id, "accept", "yes")
                elif isinstance(event, ToolCallFinished):
                    results.append(event.result)
    assert results == ["deployed"]


class _ServesWithoutDefault:
    """A channel whose run() takes task_status without a default, as the README writes it."""

    name = "plain"

    async def run(self, bus: MessageBus, *, task_status: trio.TaskStatus[Any]) -> None:
        task_status.started()
        await trio.sleep_forever()


async def test_typing_channel_needs_no_task_status_default() -> None:
    """A Channel's run(bus, *, task_status) needs no default for task_status: the gateway always starts it
    with nursery.start, and such a channel is a Channel for mypy and serves in a gateway."""
    channel: Channel = _ServesWithoutDefault()
    agent = Agent(name="a", model=ScriptedModel([]))
    async with open_runtime() as runtime, open_gateway(runtime, agent, channels=[channel]) as gateway:
        assert gateway.statistics().sessions == 0


async def _rejected_by_mypy(runtime: Runtime, session: Session[str]) -> None:  # pragma: no cover - never run
    """Calls mypy must refuse (each ``type: ignore`` would be reported unused if it did not)."""
    await runtime.start_session(Agent(name="a", model=ScriptedModel([])), idle_timeout="5")  # type: ignore[arg-type]
    with session.run("hi"):  # type: ignore[deprecated]
        pass


async def test_typing_start_session_idle_timeout_is_a_number_none_or_left_out() -> None:
    """start_session's idle_timeout takes seconds or None (or is left out for the runtime's), and mypy refuses
    anything else (see _rejected_by_mypy)."""
    agent = Agent(name="a", model=ScriptedModel([]))
    async with open_runtime(idle_timeout=30) as runtime:
        for timeout in (5.0, None):
            handle = await runtime.start_session(agent, idle_timeout=timeout)
            await handle.aclose()
        handle = await runtime.start_session(agent)
        await handle.aclose()
    assert handle.closed


async def test_typing_plain_with_on_a_run_is_flagged_and_raises() -> None:
    """``with session.run(...)`` is flagged by mypy (__enter__ is deprecated; see _rejected_by_mypy) and raises
    TypeError, without a DeprecationWarning, when run."""
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=ScriptedModel([]))) as session:
        stream = session.run("hi")
        with pytest.raises(TypeError, match="async with"):
            stream.__enter__()  # type: ignore[deprecated]


class _ReasonHooks(Hooks):
    """Narrows on_run_end's reason to FinishReason: mypy refused that override while the base said ``str``."""

    def __init__(self) -> None:
        self.reasons: list[FinishReason] = []

    async def on_run_end(self, ctx: RunContext[Any], reason: FinishReason) -> None:
        self.reasons.append(reason)


async def test_typing_on_run_end_gets_a_finish_reason() -> None:
    """Hooks.on_run_end's reason is a FinishReason (runtime.events' type, defined in agents for Hooks): a hook
    may annotate it so, and gets the run's RunFinished reason."""
    hooks = _ReasonHooks()
    agent = Agent(name="a", model=ScriptedModel(["hi"]), hooks=[hooks])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        await session.ask("hello")
    assert hooks.reasons == ["completed"]
