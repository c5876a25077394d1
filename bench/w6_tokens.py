"""W6 token stream: the client's CPU per streamed token, for each provider format, against the raw floor.

A loopback provider (bench/token_server.py, a process of its own) answers
every request with one pre-built body of ``--chunks`` one-token chunks in
the provider's own format (bench/token_bodies.py: Chat Completions,
Anthropic Messages, Responses, Gemini), chunked transfer encoding, one HTTP
chunk per SSE event. Streaming a long answer is what an agent's client does
most, and per token nothing but parsing should cost anything: W6 measures how
close each library comes to the cheapest client that still does the work.

Measured per request, in this process:

- CPU per chunk: user + system CPU time of this process (``time.process_time``,
  all threads) from just before the request until the consumer has seen the
  last event and the library's block has closed, over the number of chunks;
- time to first event: wall time from the request to the first text piece.

The implementations (``--impl``), each a fresh process, with its own event loop:

- ``raw-floor``: httpx.AsyncClient under Trio + httpx-sse's ``aiter_sse`` +
  ``json.loads`` of every event and a lookup of its text: the cheapest client
  a library could be built on (trio-agents' interpreter);
- ``trio-agents``: the provider's ``HTTPModel`` driven through the runtime
  (``Agent``, ``open_runtime``, ``session.run``, every ``TextDelta`` consumed),
  and the same model alone (``async with model.stream(request)``, every
  ``TextChunk``), so the report separates parsing from the runtime's cost.
  ``OpenAIResponsesModel`` and ``GeminiModel`` are measured when this checkout
  has them, and noted as skipped otherwise;
- ``openai-agents``: ``OpenAIChatCompletionsModel`` / ``OpenAIResponsesModel``
  on an ``AsyncOpenAI`` client pointed at the loopback,
  ``Runner.run_streamed`` with every event of ``stream_events()`` consumed
  (it has no Anthropic or Gemini model of its own);
- ``pydantic-ai``: its OpenAI chat / Responses, Anthropic and Google models,
  each on a provider pointed at the loopback, ``run_stream_events`` with
  every event consumed (the text of ``PartStartEvent`` and ``PartDeltaEvent``).

Every client keeps one keep-alive connection per model; each path gets one
warm-up request, then ``--repeats`` measured ones, the paths alternating. The
text received is checked against the text sent.

    .venv/bin/python bench/w6_tokens.py --impl raw-floor --chunks 5000 --repeats 3
    bench/.venv-peers/bin/python bench/w6_tokens.py --impl pydantic-ai --formats chat,anthropic
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

from token_bodies import FORMATS, tokens

BENCH = Path(__file__).resolve().parent
IMPLS = ("raw-floor", "trio-agents", "openai-agents", "pydantic-ai")
MODEL_NAMES = {"chat": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "responses": "gpt-4o-mini",
               "gemini": "gemini-2.5-flash"}  # fmt: skip


class Clock:
    """One measured request: CPU and wall time from ``start`` to ``stop``, and the text pieces seen between."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.first: float | None = None
        self.cpu = 0.0
        self.wall = 0.0

    def start(self) -> None:
        gc.collect()
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def piece(self, text: str) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.wall
        self.pieces.append(text)

    def stop(self) -> None:
        self.cpu = time.process_time() - self.cpu


Run = Callable[[Clock], Awaitable[None]]
Result = tuple[dict[str, list[float]], dict[str, str]]  # metrics, and a note per format not measured


async def measure(runs: dict[str, Run], chunks: int, repeats: int) -> dict[str, list[float]]:
    """One warm-up request per path, then ``repeats`` measured rounds over the paths; figures named per path."""
    expected = "".join(tokens(chunks))
    metrics: dict[str, list[float]] = {}
    for round_ in range(repeats + 1):
        for name, run in runs.items():
            clock = Clock()
            await run(clock)
            if "".join(clock.pieces) != expected or clock.first is None:
                got = "".join(clock.pieces)
                raise SystemExit(f"{name}: received {len(got)} characters of {len(expected)}: {got[:80]!r}...")
            if round_:
                metrics.setdefault(f"{name}_cpu_us_per_chunk", []).append(clock.cpu / chunks * 1e6)
                metrics.setdefault(f"{name}_first_event_ms", []).append(clock.first * 1e3)
    return metrics


async def raw_floor(origin: str, formats: list[str], chunks: int, repeats: int) -> Result:
    import httpx
    from httpx_sse import aconnect_sse

    def runner(client: httpx.AsyncClient, fmt: str) -> Run:
        spec = FORMATS[fmt]

        async def run(clock: Clock) -> None:
            clock.start()
            async with aconnect_sse(client, "POST", origin + spec.path, json=spec.request) as source:
                async with contextlib.aclosing(source.aiter_sse()) as events:
                    async for event in events:
                        if event.data != "[DONE]":
                            text = spec.text_of(json.loads(event.data))
                            if text:
                                clock.piece(text)
            clock.stop()

        return run

    async with httpx.AsyncClient(timeout=60) as client:
        return await measure({fmt: runner(client, fmt) for fmt in formats}, chunks, repeats), {}


async def trio_agents(origin: str, formats: list[str], chunks: int, repeats: int) -> Result:
    import agents
    from agents import Agent, ModelRequest, TextChunk, UserMessage
    from runtime import open_runtime
    from runtime.events import ErrorEvent, TextDelta

    classes = {"chat": ("OpenAIChatModel", "/v1"), "anthropic": ("AnthropicModel", ""),
               "responses": ("OpenAIResponsesModel", "/v1"), "gemini": ("GeminiModel", "/v1beta")}  # fmt: skip

    def through_runtime(runtime: Any, agent: Agent) -> Run:
        async def run(clock: Clock) -> None:
            async with runtime.open_session(agent) as session:
                clock.start()
                async with session.run("go") as stream:
                    async for event in stream:
                        if isinstance(event, TextDelta):
                            clock.piece(event.text)
                        elif isinstance(event, ErrorEvent):
                            raise SystemExit(f"trio-agents {agent.model!r}: {event}")
                clock.stop()

        return run

    def alone(model: Any, request: ModelRequest) -> Run:
        async def run(clock: Clock) -> None:
            clock.start()
            async with model.stream(request) as stream:
                async for chunk in stream:
                    if isinstance(chunk, TextChunk):
                        clock.piece(chunk.text)
            clock.stop()

        return run

    runs: dict[str, Run] = {}
    notes: dict[str, str] = {}
    async with open_runtime() as runtime:
        request = ModelRequest(instructions="", messages=(UserMessage("go"),), http_client=runtime.http_client)
        for fmt in formats:
            name, prefix = classes[fmt]
            model_class = getattr(agents, name, None)
            if model_class is None:
                notes[fmt] = f"agents.{name} is not in this checkout"
                continue
            model = model_class(MODEL_NAMES[fmt], base_url=origin + prefix, api_key="bench")
            runs[fmt] = through_runtime(runtime, Agent(name="w6", model=model))
            runs[f"{fmt}_model"] = alone(model, request)
        return await measure(runs, chunks, repeats), notes


async def openai_agents(origin: str, formats: list[str], chunks: int, repeats: int) -> Result:
    from openai import AsyncOpenAI

    from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)
    classes: dict[str, Any] = {"chat": OpenAIChatCompletionsModel, "responses": OpenAIResponsesModel}

    def runner(agent: Agent[Any]) -> Run:
        async def run(clock: Clock) -> None:
            clock.start()
            result = Runner.run_streamed(agent, "go")
            async for event in result.stream_events():
                if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
                    clock.piece(event.data.delta)
            clock.stop()

        return run

    notes = {fmt: "openai-agents has no model of its own for this API (only through LiteLLM or any-llm)"
             for fmt in formats if fmt not in classes}  # fmt: skip
    client = AsyncOpenAI(base_url=origin + "/v1", api_key="bench")
    runs = {fmt: runner(Agent(name="w6", model=classes[fmt](MODEL_NAMES[fmt], client)))
            for fmt in formats if fmt in classes}  # fmt: skip
    try:
        return await measure(runs, chunks, repeats), notes
    finally:
        await client.close()


async def pydantic_ai(origin: str, formats: list[str], chunks: int, repeats: int) -> Result:
    from pydantic_ai import Agent, PartDeltaEvent, PartStartEvent, TextPart, TextPartDelta

    def model(fmt: str) -> Any:
        if fmt in ("chat", "responses"):
            from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
            from pydantic_ai.providers.openai import OpenAIProvider

            openai_class = OpenAIChatModel if fmt == "chat" else OpenAIResponsesModel
            return openai_class(MODEL_NAMES[fmt], provider=OpenAIProvider(base_url=origin + "/v1", api_key="bench"))
        if fmt == "anthropic":
            from pydantic_ai.models.anthropic import AnthropicModel
            from pydantic_ai.providers.anthropic import AnthropicProvider

            return AnthropicModel(MODEL_NAMES[fmt], provider=AnthropicProvider(base_url=origin, api_key="bench"))
        from pydantic_ai.models.google import GoogleModel
        from pydantic_ai.providers.google import GoogleProvider

        return GoogleModel(MODEL_NAMES[fmt], provider=GoogleProvider(api_key="bench", base_url=origin))

    def runner(agent: Agent[None, str]) -> Run:
        async def run(clock: Clock) -> None:
            clock.start()
            async with agent.run_stream_events("go") as events:
                async for event in events:
                    if isinstance(event, PartDeltaEvent):
                        if isinstance(event.delta, TextPartDelta):
                            clock.piece(event.delta.content_delta)
                    elif isinstance(event, PartStartEvent) and isinstance(event.part, TextPart) and event.part.content:
                        clock.piece(event.part.content)
            clock.stop()

        return run

    return await measure({fmt: runner(Agent(model(fmt))) for fmt in formats}, chunks, repeats), {}


CLIENTS: dict[str, tuple[str, Callable[[str, list[str], int, int], Awaitable[Result]], tuple[str, ...]]] = {
    # impl: (event loop, client, the distributions whose versions are reported)
    "raw-floor": ("trio", raw_floor, ("httpx", "httpx-sse", "trio")),
    "trio-agents": ("trio", trio_agents, ("trio-agents", "trio", "httpx")),
    "openai-agents": ("asyncio", openai_agents, ("openai-agents", "openai")),
    "pydantic-ai": ("asyncio", pydantic_ai, ("pydantic-ai-slim", "openai", "anthropic", "google-genai")),
}


@contextlib.contextmanager
def token_server(chunks: int) -> Iterator[str]:
    """bench/token_server.py in a process of its own, for the block; its origin (``http://127.0.0.1:port``)."""
    server = subprocess.Popen([sys.executable, str(BENCH / "token_server.py"), "--chunks", str(chunks)],
                              cwd=BENCH, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line:
            raise SystemExit("the token server did not start")
        yield f"http://127.0.0.1:{json.loads(line)['port']}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=IMPLS, default="trio-agents")
    parser.add_argument("--chunks", type=int, default=5000, help="one-token chunks per answer")
    parser.add_argument("--repeats", type=int, default=3, help="measured requests per path, after one warm-up")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated, of: " + ", ".join(FORMATS))
    args = parser.parse_args()
    formats = args.formats.split(",")
    loop, client, distributions = CLIENTS[args.impl]
    with token_server(args.chunks) as origin:
        if loop == "trio":
            import trio

            metrics, notes = trio.run(client, origin, formats, args.chunks, args.repeats)
        else:
            metrics, notes = asyncio.run(client(origin, formats, args.chunks, args.repeats))
    versions = {name: version(name) for name in distributions} | {"python": platform.python_version()}
    record = {"workload": "w6", "impl": args.impl, "versions": versions, "metrics": metrics, "notes": notes}
    sys.stdout.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
