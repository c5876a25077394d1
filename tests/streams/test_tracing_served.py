"""Served mode continues the client's trace: ``POST /sessions/{sid}/runs`` reads the W3C ``traceparent``.

A real server on loopback, so the real clock, bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

import httpx
import trio
from opentelemetry import baggage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agents import Agent, ScriptedModel, ToolCall, tool
from runtime import SQLiteStore, open_runtime
from runtime.events import ElicitationRequest
from streams import open_server, open_sse_listener
from tests.runtime.store.test_durable_sessions import crash_at, make_agent as durable_agent

if TYPE_CHECKING:
    from pathlib import Path

    from opentelemetry.sdk.trace import ReadableSpan

TIMEOUT: Final = 10


def recorder() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def run_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = [span for span in exporter.get_finished_spans() if span.name == "invoke_agent served"]
    return span


async def test_served_run_continues_the_clients_traceparent() -> None:
    """An attached run's invoke_agent span has the trace id of the client's span, and that span as parent."""
    provider, exporter = recorder()
    agent = Agent(name="served", model=ScriptedModel(["hello there"]))
    client_tracer = provider.get_tracer("client")
    with trio.fail_after(TIMEOUT):
        async with open_runtime(tracer_provider=provider) as runtime, open_server(agent, runtime=runtime) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                assert (await client.post("/sessions", json={"id": "s1"})).status_code == 201
                with client_tracer.start_as_current_span("client call") as mine:
                    headers: dict[str, str] = {}
                    TraceContextTextMapPropagator().inject(headers)
                assert "traceparent" in headers
                response = await client.post("/sessions/s1/runs", json={"input": "hi"}, headers=headers)
                assert response.status_code == 200
                assert "RunFinished" in response.text
    span = run_span(exporter)
    assert span.context is not None
    assert span.context.trace_id == mine.get_span_context().trace_id
    assert span.parent is not None
    assert span.parent.span_id == mine.get_span_context().span_id
    assert span.parent.is_remote
    provider.shutdown()


async def test_served_detached_run_continues_the_clients_traceparent() -> None:
    """A detached run (``"detach": true``) continues the client's trace too."""
    provider, exporter = recorder()
    agent = Agent(name="served", model=ScriptedModel(["hello there"]))
    trace_id, parent_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    headers = {"traceparent": f"00-{trace_id:032x}-{parent_id:016x}-01"}
    with trio.fail_after(TIMEOUT):
        async with open_runtime(tracer_provider=provider) as runtime, open_server(agent, runtime=runtime) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                assert (await client.post("/sessions", json={"id": "s1"})).status_code == 201
                response = await client.post("/sessions/s1/runs", json={"input": "hi", "detach": True}, headers=headers)
                assert response.status_code == 202
                run_id = response.json()["run_id"]
                follow = await client.get(f"/sessions/s1/runs/{run_id}/events")
                assert "RunFinished" in follow.text
    span = run_span(exporter)
    assert span.context is not None
    assert span.context.trace_id == trace_id
    assert span.parent is not None
    assert span.parent.span_id == parent_id
    provider.shutdown()


async def test_sse_client_sends_the_current_traceparent() -> None:
    """``open_sse_listener`` (what ``RemoteSession`` runs use) sends the current span's ``traceparent``, so
    the served run's span is a child of the caller's span."""
    provider, exporter = recorder()
    agent = Agent(name="served", model=ScriptedModel(["hello there"]))
    tracer = provider.get_tracer("client")
    with trio.fail_after(TIMEOUT):
        async with open_runtime(tracer_provider=provider) as runtime, open_server(agent, runtime=runtime) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                assert (await client.post("/sessions", json={"id": "s1"})).status_code == 201
            with tracer.start_as_current_span("caller") as mine:
                async with open_sse_listener(
                    f"{server.url}/sessions/s1/runs", method="POST", json_body={"input": "hi"}
                ) as listener:
                    async for message in listener:
                        if message.data.get("type") == "RunFinished":
                            break
    span = run_span(exporter)
    assert span.context is not None
    assert span.context.trace_id == mine.get_span_context().trace_id
    assert span.parent is not None
    assert span.parent.span_id == mine.get_span_context().span_id
    provider.shutdown()


@tool
def baggage_seen() -> dict[str, object]:
    """What OpenTelemetry baggage the run's context holds."""
    return dict(baggage.get_all())


async def test_served_run_takes_the_clients_trace_context_and_nothing_else() -> None:
    """The run continues the client's traceparent, but a ``baggage`` header is not taken: it became the run's
    own (readable as such, passed on to every call the run made: an MCP server's, a provider's)."""
    provider, exporter = recorder()
    agent = Agent(name="served", model=ScriptedModel([ToolCall("baggage_seen"), "done"]), tools=[baggage_seen])
    trace_id, parent_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    headers = {
        "traceparent": f"00-{trace_id:032x}-{parent_id:016x}-01",
        "baggage": "gen_ai.agent.name=evil,user.id=admin",
    }
    with trio.fail_after(TIMEOUT):
        async with open_runtime(tracer_provider=provider) as runtime, open_server(agent, runtime=runtime) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                assert (await client.post("/sessions", json={"id": "s1"})).status_code == 201
                response = await client.post("/sessions/s1/runs", json={"input": "hi"}, headers=headers)
    finished = [event for event in data_of(response.text) if event["type"] == "ToolCallFinished"]
    assert [event["result"] for event in finished] == [{}]
    span = run_span(exporter)
    assert span.context is not None
    assert span.context.trace_id == trace_id
    provider.shutdown()


async def test_a_run_resumed_by_an_answer_continues_the_answers_trace(tmp_path: Path) -> None:
    """An answer to a question a durable session kept across a restart resumes its run, detached: that run
    continues the trace of the answer's request, as any run a request starts. It began a new trace."""
    image, asked = await crash_at(tmp_path, "d", "pay 3", ElicitationRequest)
    provider, exporter = recorder()
    trace_id, parent_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    headers = {"traceparent": f"00-{trace_id:032x}-{parent_id:016x}-01"}
    with trio.fail_after(TIMEOUT):
        async with (
            open_runtime(store=SQLiteStore(image), tracer_provider=provider) as runtime,
            open_server(durable_agent(), runtime=runtime) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            url = f"/sessions/d/elicitations/{asked.id}"
            answer = await client.post(url, json={"action": "accept"}, headers=headers)
            assert answer.status_code == 202, answer.text
            resumed = answer.json()["run_id"]
            assert "RunFinished" in (await client.get(f"/sessions/d/runs/{resumed}/events")).text
    (span,) = [span for span in exporter.get_finished_spans() if span.name == "invoke_agent durable"]
    assert span.context is not None
    assert span.context.trace_id == trace_id
    assert span.parent is not None
    assert span.parent.span_id == parent_id
    provider.shutdown()


def data_of(body: str) -> list[dict[str, object]]:
    """The JSON data of an SSE body's messages."""
    return [json.loads(line.removeprefix("data: ")) for line in body.splitlines() if line.startswith("data: ")]
