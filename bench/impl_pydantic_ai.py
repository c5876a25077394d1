"""The workloads on pydantic-ai (see _protocol.md for the interface).

Everything runs offline: the agent's model is pydantic-ai's own test double,
``FunctionModel``, given an async ``function`` (non-streamed requests) and an
async-generator ``stream_function`` (streamed requests) that decide their answer
from the messages they are given. No API key is used.

W1 tool turn
    One ``Agent`` with one tool, ``add`` (a plain sync function, which
    pydantic-ai runs in a worker thread, as trio-agents runs sync tools). Each
    prompt ``"prompt k"`` is a fresh run with no history: the model answers
    with the tool call ``add(k, 1)``, then, once the tool result is in the
    messages, with the text ``"done k"``. Streamed: ``agent.run_stream_events``
    entered and iterated to its final ``AgentRunResultEvent``; non-streamed:
    ``agent.run``. The agent and model are built once, before the timed loop.
W2 concurrency
    ``runs`` streamed W1 runs at once: ``asyncio.gather`` over one task per run.
W3 cancel
    ``runs`` streamed runs, each consumed in its own task of one
    ``asyncio.TaskGroup``, whose stream function parks forever (awaits an
    ``asyncio.Event`` that is never set). Once every run has entered the model,
    the task that owns the TaskGroup is cancelled; ``cancel_ms`` runs from
    ``cancel()`` until that task is done, and ``tasks_alive`` counts the other
    asyncio tasks still alive then (``run_stream_events`` cancels and drains its
    background run task when its ``async with`` block exits).
W4 scale
    pydantic-ai's conversation state is the message list: each session is
    ``result.all_messages()`` of one completed W1 run, deep-copied so that
    sessions share no objects. There is nothing to close, so ``close_ms`` times
    dropping them all (``del`` + ``gc.collect()``).
"""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import os
import platform
import resource
import time
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from _harness import current_rss_kib
from pydantic_ai import (
    Agent,
    AgentRunResultEvent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# The first-run banner goes to stderr; keep the benchmark's output clean.
os.environ.setdefault("PYDANTIC_AI_NO_BANNER", "1")

VERSIONS: dict[str, str] = {
    "pydantic-ai-slim": version("pydantic-ai-slim"),
    "pydantic": version("pydantic"),
    "python": platform.python_version(),
}


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


# --- the scripted model ------------------------------------------------------------------------


def decide(messages: list[ModelMessage]) -> tuple[int, bool]:
    """``(k, tool_result_present)`` for a run of "prompt k"."""
    first = messages[0]
    assert isinstance(first, ModelRequest)
    prompt = next(part for part in first.parts if isinstance(part, UserPromptPart))
    assert isinstance(prompt.content, str)
    k = int(prompt.content.rsplit(" ", 1)[1])
    last = messages[-1]
    return k, isinstance(last, ModelRequest) and any(isinstance(part, ToolReturnPart) for part in last.parts)


async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Non-streamed: the tool call ``add(k, 1)``, then "done k"."""
    k, has_result = decide(messages)
    if has_result:
        return ModelResponse(parts=[TextPart(f"done {k}")])
    return ModelResponse(parts=[ToolCallPart("add", {"a": k, "b": 1}, tool_call_id=f"call_{k}")])


async def respond_stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    """Streamed: the same answers, as a text delta or a tool-call delta."""
    k, has_result = decide(messages)
    if has_result:
        yield f"done {k}"
    else:
        yield {0: DeltaToolCall(name="add", json_args=json.dumps({"a": k, "b": 1}), tool_call_id=f"call_{k}")}


def make_agent() -> Agent[None, str]:
    return Agent(FunctionModel(respond, stream_function=respond_stream), name="bench", tools=[add])


async def run_one(agent: Agent[None, Any], k: int, *, streamed: bool) -> str:
    """One fresh run of "prompt k"; returns its final output."""
    if not streamed:
        return (await agent.run(f"prompt {k}")).output
    async with agent.run_stream_events(f"prompt {k}") as events:
        async for event in events:
            last = event
    assert isinstance(last, AgentRunResultEvent)
    return last.result.output


# --- workloads -----------------------------------------------------------------------------------


def w1(prompts: int, *, streamed: bool) -> float:
    agent = make_agent()

    async def main() -> float:
        output = ""
        start = time.perf_counter()
        for k in range(prompts):
            output = await run_one(agent, k, streamed=streamed)
        elapsed = time.perf_counter() - start
        assert output == f"done {prompts - 1}", output
        return elapsed

    return asyncio.run(main())


def w2(runs: int) -> dict[str, float]:
    agent = make_agent()

    async def main() -> dict[str, float]:
        assert await run_one(agent, 0, streamed=True) == "done 0"
        gc.collect()
        before = current_rss_kib()
        start = time.perf_counter()
        outputs = await asyncio.gather(*(run_one(agent, k, streamed=True) for k in range(runs)))
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        assert outputs == [f"done {k}" for k in range(runs)]
        return {"wall_s": wall, "peak_rss_kib_per_run": (peak - before) / runs}

    return asyncio.run(main())


def w3(runs: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        entered = 0
        all_parked = asyncio.Event()
        never = asyncio.Event()

        async def park(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
            nonlocal entered
            entered += 1
            if entered == runs:
                all_parked.set()
            await never.wait()
            yield "unreachable"

        agent = Agent(FunctionModel(stream_function=park), name="parked", tools=[add])

        async def consume(k: int) -> None:
            async with agent.run_stream_events(f"prompt {k}") as events:
                async for _ in events:
                    pass

        async def owner() -> None:
            async with asyncio.TaskGroup() as tg:
                for k in range(runs):
                    tg.create_task(consume(k))

        owner_task = asyncio.create_task(owner())
        await all_parked.wait()
        start = time.perf_counter()
        owner_task.cancel()
        await asyncio.wait([owner_task])
        elapsed = time.perf_counter() - start
        tasks_alive = len(asyncio.all_tasks()) - 1
        assert owner_task.cancelled()
        return {"cancel_ms": elapsed * 1000, "tasks_alive": tasks_alive}

    return asyncio.run(main())


def w4(sessions: int) -> dict[str, float]:
    agent = make_agent()

    async def main() -> dict[str, float]:
        result = await agent.run("prompt 1")
        assert result.output == "done 1"
        history = result.all_messages()
        gc.collect()
        before = current_rss_kib()
        opened: list[list[ModelMessage]] = [copy.deepcopy(history) for _ in range(sessions)]
        gc.collect()
        per_session = (current_rss_kib() - before) / sessions
        assert opened[-1] == history
        assert opened[-1][0] is not history[0]
        start = time.perf_counter()
        del opened
        gc.collect()
        close_ms = (time.perf_counter() - start) * 1000
        return {"rss_kib_per_session": per_session, "close_ms": close_ms}

    return asyncio.run(main())
