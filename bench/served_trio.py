"""W5's servers on trio-agents' stack: Hypercorn's Trio worker and Starlette, in trio-agents' virtualenv.

    python served_trio.py --mode agent        # streams.open_server serving W1's agent (sync tool)
    python served_trio.py --mode async-tool   # the same with an async tool: no worker thread per run
    python served_trio.py --mode floor        # the same plumbing sending pre-made events, no runtime

``agent`` is what W5 measures. The other two take it apart: ``async-tool``
is the cost without the sync tool's hop to a worker thread and back;
``floor`` is trio-agents' own plumbing floor, ``streams._hypercorn.serve_app``
+ Starlette + ``EventStreamResponse`` sending the 8 messages a W1 run sends
(made once at start-up), with sessions that are one dict entry each.

Listens on 127.0.0.1 (a free port), prints ``{"port": ..., "versions": ...}``
as one line on stdout, and serves until SIGTERM or SIGINT. Run with
trio-agents' interpreter, the checkout to measure on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio
from impl_trio_agents import VERSIONS, answer, make_agent

from agents import Agent, ScriptedModel, tool
from streams import open_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def make_async_agent() -> Agent:
    return Agent(name="bench", model=ScriptedModel(itertools.repeat(answer), record_requests=False), tools=[add])


# What a trio-agents W1 run of "prompt 0" sends, as (type, data).
PREMADE: list[tuple[str, dict[str, Any]]] = [
    (event["type"], {**event, "run_id": "s1-r1"})
    for event in [
        {"type": "RunStarted", "run_id": "s1-r1"},
        {"type": "Usage", "input_tokens": 2, "output_tokens": 8},
        {"type": "ToolCallStarted", "call_id": "call_1_0", "name": "add", "arguments": {"a": 0, "b": 1}},
        {"type": "ToolCallFinished", "call_id": "call_1_0", "name": "add", "result": 1, "error": None},
        {"type": "TextDelta", "text": "done"},
        {"type": "TextDelta", "text": " 0"},
        {"type": "Usage", "input_tokens": 3, "output_tokens": 2},
        {"type": "RunFinished", "reason": "completed", "message": None},
    ]
]


class _Premade:
    """A message source that has every message ready."""

    def __init__(self) -> None:
        self._next = 0

    def next_nowait(self) -> tuple[str, dict[str, Any]] | None:
        if self._next == len(PREMADE):
            return None
        self._next += 1
        return PREMADE[self._next - 1]

    async def next(self) -> tuple[str, dict[str, Any]] | None:
        await trio.lowlevel.checkpoint()
        return self.next_nowait()


def floor_app() -> Starlette:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from streams._sse import EventStreamResponse

    counter = itertools.count(1)
    sessions: dict[str, list[Any]] = {}

    async def create(request: Request) -> Response:
        await request.body()
        sid = f"s{next(counter)}"
        sessions[sid] = []
        return JSONResponse({"id": sid, "state": "idle", "runs": 0}, status_code=201)

    async def run(request: Request) -> Response:
        await request.body()

        @asynccontextmanager
        async def open_source() -> AsyncIterator[_Premade]:
            yield _Premade()

        return EventStreamResponse(open_source, heartbeat=15.0)

    return Starlette(
        routes=[Route("/sessions", create, methods=["POST"]), Route("/sessions/{sid}/runs", run, methods=["POST"])]
    )


async def main(mode: str) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        if mode == "floor":
            from hypercorn.config import Config

            from streams._hypercorn import serve_app

            config = Config()
            config.bind = ["127.0.0.1:0"]
            config.accesslog = None
            shutdown = trio.Event()
            async with trio.open_nursery() as nursery:
                binds: list[str] = await nursery.start(serve_app, floor_app(), config, shutdown)
                print(json.dumps({"port": int(binds[0].rpartition(":")[2]), "versions": VERSIONS}), flush=True)
                async for _ in signals:
                    break
                shutdown.set()
            return
        agent = make_agent() if mode == "agent" else make_async_agent()
        # The load client creates a session per run and leaves it, as the peers' servers let it:
        # no cap on open sessions, so the 1,000 default does not refuse the measured runs.
        async with open_server(agent, port=0, max_sessions=None) as server:
            print(json.dumps({"port": server.port, "versions": VERSIONS}), flush=True)
            async for _ in signals:
                break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["agent", "async-tool", "floor"], default="agent")
    trio.run(main, parser.parse_args().mode)
