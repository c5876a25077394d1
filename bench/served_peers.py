"""W5's servers on the peers' stack: FastAPI + sse-starlette + uvicorn (asyncio), in bench/.venv-peers.

    python served_peers.py --mode agent   # (a) pydantic-ai's run_stream_events, FunctionModel
    python served_peers.py --mode floor   # (b) the same routes sending pre-made events, no agent

Both serve the routes W5's client uses, shaped as trio-agents' served mode:
``POST /sessions`` (201, ``{"id": ...}``) and ``POST /sessions/{id}/runs``
(``{"input": "prompt k"}``), which answers with the run's events as SSE
(``event``, ``id`` and one ``data`` line of JSON each) and ends after the last.

(a) runs W1's agent (bench/impl_pydantic_ai.py: one sync tool, the scripted
    ``FunctionModel``) with the session's history, encodes each event with
    ``pydantic_core.to_json`` and keeps ``all_messages()`` as the session.
(b) is the plumbing floor: each run sends the same 8 messages a trio-agents
    W1 run sends (its events as trio-agents encodes them, for "prompt 0"),
    made once at start-up as ``ServerSentEvent``s that sse-starlette frames;
    no agent, no per-event JSON encoding.

Listens on 127.0.0.1 (a free port), prints ``{"port": ..., "versions": ...}`` as one line on stdout,
and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import socket
import sys
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

os.environ.setdefault("PYDANTIC_AI_NO_BANNER", "1")

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class RunBody(BaseModel):
    input: str


def _floor_events(k: int) -> list[tuple[str, str]]:
    """What a trio-agents W1 run of "prompt k" sends: (type, JSON data)."""
    events: list[dict[str, Any]] = [
        {"type": "RunStarted", "run_id": "s1-r1"},
        {"type": "Usage", "input_tokens": 2, "output_tokens": 8},
        {"type": "ToolCallStarted", "call_id": "call_1_0", "name": "add", "arguments": {"a": k, "b": 1}},
        {"type": "ToolCallFinished", "call_id": "call_1_0", "name": "add", "result": k + 1, "error": None},
        {"type": "TextDelta", "text": "done"},
        {"type": "TextDelta", "text": f" {k}"},
        {"type": "Usage", "input_tokens": 3, "output_tokens": 2},
        {"type": "RunFinished", "reason": "completed", "message": None},
    ]
    return [(event["type"], json.dumps({**event, "run_id": "s1-r1"}, separators=(",", ":"))) for event in events]


def make_app(mode: str) -> FastAPI:
    app = FastAPI()
    sessions: dict[str, list[Any]] = {}
    counter = itertools.count(1)

    @app.post("/sessions", status_code=201)
    async def create() -> dict[str, Any]:
        sid = f"s{next(counter)}"
        sessions[sid] = []
        return {"id": sid, "state": "idle", "runs": 0}

    if mode == "floor":
        premade = [
            ServerSentEvent(data=data, event=kind, id=str(i)) for i, (kind, data) in enumerate(_floor_events(0), 1)
        ]

        @app.post("/sessions/{sid}/runs")
        async def run_floor(sid: str, body: RunBody) -> EventSourceResponse:
            if sid not in sessions:
                raise HTTPException(404, "unknown session")

            async def stream() -> AsyncIterator[ServerSentEvent]:
                for message in premade:
                    yield message

            return EventSourceResponse(stream())

        return app

    from impl_pydantic_ai import make_agent
    from pydantic_ai import AgentRunResultEvent
    from pydantic_core import to_json

    agent = make_agent()

    @app.post("/sessions/{sid}/runs")
    async def run_agent(sid: str, body: RunBody) -> EventSourceResponse:
        history = sessions.get(sid)
        if history is None:
            raise HTTPException(404, "unknown session")

        async def stream() -> AsyncIterator[ServerSentEvent]:
            sent = 0
            async with agent.run_stream_events(body.input, message_history=history) as events:
                async for event in events:
                    sent += 1
                    if isinstance(event, AgentRunResultEvent):
                        sessions[sid] = event.result.all_messages()
                        data = json.dumps({"output": event.result.output})
                    else:
                        data = to_json(event, fallback=str).decode()
                    yield ServerSentEvent(data=data, event=type(event).__name__, id=str(sent))

        return EventSourceResponse(stream())

    return app


async def serve(mode: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(make_app(mode), log_level="warning", access_log=False, backlog=2048, lifespan="off")
    server = uvicorn.Server(config)
    versions = {name: version(name) for name in ("fastapi", "sse-starlette", "uvicorn")}
    if mode == "agent":
        versions["pydantic-ai-slim"] = version("pydantic-ai-slim")
    versions["python"] = platform.python_version()
    print(json.dumps({"port": sock.getsockname()[1], "versions": versions}), flush=True)
    await server.serve(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["agent", "floor"], required=True)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    asyncio.run(serve(args.mode))


if __name__ == "__main__":
    main()
