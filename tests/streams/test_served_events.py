"""Issue 13's events served: a real served runtime and real clients (the remote session, SSE over httpx,
the updates WebSocket, raw and through ``open_updates_stream``) see typed output, stop reasons, refusals,
tool progress, custom events and usage limits as the runtime made them.

Real sockets, so the real clock: every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import decimal
import itertools
import json
import math
from typing import TYPE_CHECKING, Any, Final

import attrs
import pydantic
import trio
import trio.testing

from agents import (
    Agent,
    RefusalChunk,
    ScriptedModel,
    StopChunk,
    ToolCall,
    ToolContext,
    UsageLimits,
    UserMessage,
    tool,
)
from runtime import open_runtime
from runtime.events import (
    CustomEvent,
    ErrorEvent,
    Event,
    FinalOutput,
    ModelStopped,
    OutputDelta,
    Refusal,
    RunFinished,
    RunStarted,
    ToolCallDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
)
from streams import ListenerRegistry, UnknownEvent, Update, event_from_json, open_remote_session
from streams._client import open_updates_stream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from agents import ModelChunk, ModelRequest, Tool
    from agents.models import Turn
    from streams import Server
    from tests.streams.conftest import Create, MakeAgent, OpenRawWebSocket, Recorder, RunAttached, Serving

TIMEOUT: Final = 10
REFUSAL: Final = "I can't help with that"


class City(pydantic.BaseModel):
    """The typed output the served agent answers with."""

    name: str
    population: int


PARIS: Final = {"name": "Paris", "population": 2_100_000}


@attrs.frozen
class MyEvent(CustomEvent):
    """A user's event, sent by a tool."""

    step: int
    note: str
    city: Any = None


@tool
async def deploy(ctx: ToolContext[Any]) -> str:
    """Deploy, reporting progress and a custom event halfway."""
    await ctx.report_progress(1, total=2, message="half")
    await ctx.emit(MyEvent(step=1, note="halfway", city=City(name="Paris", population=2_100_000)))
    return "deployed"


def ws_url(server: Server, session_id: str) -> str:
    return f"ws://127.0.0.1:{server.port}/sessions/{session_id}/updates"


async def events_until_finished(updates: AsyncIterator[Update]) -> list[Event | UnknownEvent]:
    received: list[Event | UnknownEvent] = []
    async for update in updates:
        received.append(update.event)
        if isinstance(update.event, RunFinished):
            break
    return received


async def test_a_typed_output_reaches_remote_clients_as_json_data(serving: Serving, create: Create) -> None:
    """A served agent with a pydantic output type, its arguments streamed: the remote session's run and the
    updates WebSocket both get the argument deltas, the partial outputs, the stop reason, the output as a
    dict, and RunFinished("completed")."""
    answer = ToolCall("final_result", PARIS)
    agent = Agent(name="bot", model=ScriptedModel([answer], stream_arguments=True), output_type=City)
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (server, client):
            await create(client, "s1")
            async with (
                open_updates_stream(ws_url(server, "s1")) as watched,
                open_remote_session(server.url, "s1", registry=ListenerRegistry()) as remote,
            ):
                await trio.testing.wait_all_tasks_blocked()  # the server has subscribed the WebSocket
                async with remote.run("Which city?") as updates:
                    received = await events_until_finished(updates)
                seen = await events_until_finished(watched)

    assert seen == received
    assert received[0] == RunStarted("s1-r1")
    deltas = [event for event in received if isinstance(event, ToolCallDelta)]
    assert len(deltas) > 1
    assert {event.name for event in deltas} == {"final_result"}
    assert json.loads("".join(event.arguments_delta for event in deltas)) == PARIS
    assert ModelStopped("tool_use") in received
    partials = [event.partial for event in received if isinstance(event, OutputDelta)]
    assert partials[-1] == PARIS  # how many come before depends on the clock: they are rate-limited
    assert received[-2:] == [FinalOutput(PARIS), RunFinished("completed")]
    final = received[-2]
    assert isinstance(final, FinalOutput)
    assert type(final.output) is dict


async def test_tool_progress_and_a_custom_event_reach_a_remote_session_in_order(
    make_agent: MakeAgent, serving: Serving, new_recorder: Callable[[], Recorder]
) -> None:
    """A tool's report_progress and ctx.emit(MyEvent(...)) arrive at the remote session's run as ToolProgress
    and an UnknownEvent of type CustomEvent named MyEvent with its fields, between the tool's start and
    finish; its handler (over the updates WebSocket) gets the same JSON objects."""
    recorder = new_recorder()
    agent = make_agent(deploy, call=ToolCall("deploy"))
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (server, _), open_runtime() as runtime:
            async with (
                runtime.open_session(Agent(name="local", model=ScriptedModel([]))) as local,
                open_remote_session(server.url, "s1", handler=recorder, registry=ListenerRegistry()) as remote,
            ):
                await local.start(remote.serve)
                await remote.wait_connected()
                await trio.testing.wait_all_tasks_blocked()  # the server has subscribed all three streams
                async with remote.run("tool: deploy") as updates:
                    received = await events_until_finished(updates)
                await recorder.wait_until(lambda r: any(d["type"] == "RunFinished" for d in r.of("updates")))

    custom = {
        "type": "CustomEvent",
        "name": "MyEvent",
        "step": 1,
        "note": "halfway",
        "city": PARIS,
        "run_id": "s1-r1",
    }
    (call_id,) = {event.call_id for event in received if isinstance(event, ToolCallStarted)}
    around_the_tool = [
        event
        for event in received
        if isinstance(event, ToolCallStarted | ToolProgress | UnknownEvent | ToolCallFinished)
    ]
    assert around_the_tool == [
        ToolCallStarted(call_id, "deploy", {}),
        ToolProgress(call_id, 1.0, 2.0, "half"),
        UnknownEvent("CustomEvent", custom),
        ToolCallFinished(call_id, "deploy", "deployed"),
    ]
    assert received[-1] == RunFinished("completed")
    handled = [data for data in recorder.of("updates") if data["run_id"] == "s1-r1"]
    assert [event_from_json(data) for data in handled] == received
    assert custom in handled


class Opaque:
    """A value with no text form: its ``__str__`` raises (its repr is object's)."""

    def __str__(self) -> str:
        raise TypeError("no text form")

    __repr__ = object.__repr__


@tool
async def hand_over(ctx: ToolContext[Any]) -> str:
    """Emit a custom event holding a value with no text form."""
    await ctx.emit(MyEvent(step=1, note="opaque", city=Opaque()))
    return "handed"


async def test_an_event_field_with_no_text_form_is_served_as_a_placeholder_and_the_run_ends(
    serving: Serving, create: Create, run_attached: RunAttached
) -> None:
    """A custom event whose field's str() raises reaches the run's SSE stream with a placeholder for that
    field, and the stream goes on to its RunFinished; recording the event raised, which cut the stream with
    no ErrorEvent and no RunFinished."""
    agent = Agent(name="bot", model=ScriptedModel([ToolCall("hand_over"), "done"]), tools=[hand_over])
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (_, client):
            await create(client, "s1")
            data = await run_attached(client, "s1", "go")
    (custom,) = [item for item in data if item["type"] == "CustomEvent"]
    assert custom["city"] == "<Opaque that could not be converted to JSON: TypeError: no text form>"
    assert [item["type"] for item in data if item["type"] in ("ToolCallFinished", "ErrorEvent")] == ["ToolCallFinished"]
    assert data[-1] == {"type": "RunFinished", "reason": "completed", "message": None, "run_id": "s1-r1"}


@tool
async def factorial(n: int) -> int:
    """n!"""
    return math.factorial(n)


async def test_a_tool_result_too_long_a_number_for_json_readers_is_served_as_its_digits(
    serving: Serving, create: Create, run_attached: RunAttached
) -> None:
    """A tool's integer of over 4,300 digits reaches a client as its decimal string, which Python's json reads
    (run_attached parses each event with json.loads): it was a bare number json refuses, so a RemoteSession
    dropped the ToolCallFinished and an updates client failed with MalformedMessageError."""
    agent = Agent(name="bot", model=ScriptedModel([ToolCall("factorial", {"n": 2000}), "done"]), tools=[factorial])
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (_, client):
            await create(client, "s1")
            data = await run_attached(client, "s1", "go")
    (finished,) = [item for item in data if item["type"] == "ToolCallFinished"]
    assert finished["result"] == str(decimal.Decimal(math.factorial(2000)))
    assert data[-1]["reason"] == "completed"


def refusing_model() -> ScriptedModel:
    """Refuses every request, as a provider does: a refusal's text, then the stop reason ``refusal``."""
    refusal: list[ModelChunk] = [RefusalChunk(REFUSAL), StopChunk("refusal")]
    return ScriptedModel(itertools.repeat(refusal))


async def test_a_refusal_is_sent_then_the_run_finishes_with_refusal(
    serving: Serving, create: Create, run_attached: RunAttached
) -> None:
    """A model's refusal arrives over SSE (plain httpx, and the remote session) as ModelStopped("refusal"),
    Refusal(text) and RunFinished("refusal"), and the session takes the next run."""
    agent = Agent(name="bot", model=refusing_model())
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (server, client):
            await create(client, "s1")
            raw = await run_attached(client, "s1", "Do the bad thing")
            async with open_remote_session(server.url, "s1", registry=ListenerRegistry()) as remote:
                async with remote.run("Again?") as updates:
                    received = await events_until_finished(updates)
            session = (await client.get("/sessions/s1")).json()

    assert raw == [
        {"type": "RunStarted", "run_id": "s1-r1", "resumes": None},
        {"type": "ModelStopped", "reason": "refusal", "raw": None, "run_id": "s1-r1"},
        {"type": "Refusal", "text": REFUSAL, "run_id": "s1-r1"},
        {"type": "RunFinished", "reason": "refusal", "message": REFUSAL, "run_id": "s1-r1"},
    ]
    assert received == [
        RunStarted("s1-r2"),
        ModelStopped("refusal"),
        Refusal(REFUSAL),
        RunFinished("refusal", REFUSAL),
    ]
    assert session == {"id": "s1", "state": "idle", "runs": 2, "pending": []}


def tool_then_answer(request: ModelRequest) -> Turn:
    """A tool call for the user's message, an answer after the tool's result."""
    return ToolCall("add", {"a": 1, "b": 2}) if isinstance(request.messages[-1], UserMessage) else "It is 3."


async def test_a_usage_limit_ends_the_run_with_an_error_and_usage_limit(
    serving: Serving, create: Create, add: Tool, open_raw_websocket: OpenRawWebSocket
) -> None:
    """A run that would need a second model request past UsageLimits(requests=1) sends ErrorEvent("usage_limit")
    and RunFinished("usage_limit"): on the raw updates WebSocket, and decoded by the remote session's run."""
    agent = Agent(
        name="bot",
        model=ScriptedModel(itertools.repeat(tool_then_answer)),
        tools=[add],
        usage_limits=UsageLimits(requests=1),
    )
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (server, client):
            await create(client, "s1")
            async with (
                open_raw_websocket(server.port, "/sessions/s1/updates") as ws,
                open_remote_session(server.url, "s1", registry=ListenerRegistry()) as remote,
            ):
                await trio.testing.wait_all_tasks_blocked()  # the server has subscribed the WebSocket
                async with remote.run("What is 1 + 2?") as updates:
                    received = await events_until_finished(updates)
                sent = [await ws.receive_json()]
                while sent[-1]["type"] != "RunFinished":
                    sent.append(await ws.receive_json())

    message = "requests limit of 1 reached: 1 model requests made"
    assert sent[-2:] == [
        {"type": "ErrorEvent", "kind": "usage_limit", "message": message, "run_id": "s1-r1"},
        {"type": "RunFinished", "reason": "usage_limit", "message": message, "run_id": "s1-r1"},
    ]
    assert [event_from_json(data) for data in sent] == received
    assert any(isinstance(event, ToolCallFinished) and event.result == 3 for event in received)
    assert received[-2:] == [ErrorEvent("usage_limit", message), RunFinished("usage_limit", message)]
