"""The workloads on trio-agents (see _protocol.md for the interface and the workload definitions).

W1 runs each prompt in a fresh session, since the peers' runs start with no
history too; session creation is included in the measured time.

W1 durable (``durable_w1``, ``durable_concurrent``) runs W1 with the runtime's
sessions in a store (``open_runtime(store=...)``), or in memory for the same
run's reference, each prompt in a fresh session or all prompts in one.
"""

from __future__ import annotations

import gc
import itertools
import logging
import platform
import resource
import time
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import trio
from _harness import Gen2Timer, current_rss_kib

from agents import Agent, ModelRequest, ScriptedModel, ToolCall, ToolResultMessage, UserMessage, tool
from runtime import open_runtime
from runtime.events import ErrorEvent, RunFinished

if TYPE_CHECKING:
    from collections.abc import Callable

    from runtime import SessionStore

VERSIONS = {"trio-agents": version("trio-agents"), "trio": trio.__version__, "python": platform.python_version()}


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool(name="add")
async def add_async(a: int, b: int) -> int:
    """Add two numbers (an async tool: no worker thread)."""
    return a + b


def answer(request: ModelRequest) -> str | ToolCall:
    """First the tool call add(k, 1), then, after its result, "done k"."""
    first = request.messages[0]
    assert isinstance(first, UserMessage)
    k = int(first.content.rsplit(" ", 1)[1])
    if isinstance(request.messages[-1], ToolResultMessage):
        return f"done {k}"
    return ToolCall("add", {"a": k, "b": 1})


def make_agent(*, async_tool: bool = False) -> Agent:
    model = ScriptedModel(itertools.repeat(answer), record_requests=False)
    return Agent(name="bench", model=model, tools=[add_async if async_tool else add])


async def run_one(runtime: Any, agent: Agent, k: int, *, streamed: bool) -> str:
    async with runtime.open_session(agent) as session:
        if not streamed:
            return (await session.ask(f"prompt {k}")).output
        async with session.run(f"prompt {k}") as stream:
            async for event in stream:
                last = event
        assert last == RunFinished("completed")
        return stream.result.output


def w1(prompts: int, *, streamed: bool) -> float:
    agent = make_agent()

    async def main() -> float:
        async with open_runtime() as runtime:
            start = time.perf_counter()
            for k in range(prompts):
                output = await run_one(runtime, agent, k, streamed=streamed)
            elapsed = time.perf_counter() - start
        assert output == f"done {prompts - 1}", output
        return elapsed

    return trio.run(main)


def w2(runs: int, *, async_tool: bool = False) -> dict[str, float]:
    agent = make_agent(async_tool=async_tool)

    async def main() -> dict[str, float]:
        async with open_runtime() as runtime:
            await run_one(runtime, agent, 0, streamed=True)
            gc.collect()
            before = current_rss_kib()
            outputs: list[str] = []

            async def one(k: int) -> None:
                outputs.append(await run_one(runtime, agent, k, streamed=True))

            with Gen2Timer() as gen2:
                start = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for k in range(runs):
                        nursery.start_soon(one, k)
                wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert sorted(outputs) == sorted(f"done {k}" for k in range(runs))
        return {
            "wall_s": wall,
            "peak_rss_kib_per_run": (peak - before) / runs,
            "gen2_collections": gen2.collections,
            "gen2_share": gen2.seconds / wall,
        }

    return trio.run(main)


class _Parked:
    """A model that never answers; counts the runs parked in it."""

    def __init__(self, runs: int) -> None:
        self.parked = 0
        self.all_parked = trio.Event()
        self.runs = runs

    def stream(self, request: ModelRequest) -> Any:
        return self

    async def __aenter__(self) -> Any:
        self.parked += 1
        if self.parked == self.runs:
            self.all_parked.set()
        await trio.sleep_forever()

    async def __aexit__(self, *exc: object) -> None:
        return None


class _TaskCounter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.alive = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.alive += 1

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.alive -= 1


def w3(runs: int) -> dict[str, float]:
    model = _Parked(runs)
    agent = Agent(name="parked", model=model)  # type: ignore[arg-type]
    counter = _TaskCounter()

    async def main() -> dict[str, float]:
        baseline = counter.alive  # trio's own tasks and this one
        with trio.CancelScope() as owner:
            async with open_runtime() as runtime, trio.open_nursery() as consumers:

                async def consume() -> None:
                    async with runtime.open_session(agent) as session, session.run("hi") as stream:
                        async for _ in stream:
                            pass

                for _ in range(runs):
                    consumers.start_soon(consume)
                await model.all_parked.wait()
                start = time.perf_counter()
                owner.cancel()
        elapsed = time.perf_counter() - start
        return {"cancel_ms": elapsed * 1000, "tasks_alive": counter.alive - baseline}

    return trio.run(main, instruments=[counter])


def w4(sessions: int) -> dict[str, float]:
    agent = Agent(
        name="idle", model=ScriptedModel(itertools.cycle([ToolCall("add", {"a": 1, "b": 1}), "done 1"])), tools=[add]
    )

    async def main() -> dict[str, float]:
        async with open_runtime() as runtime:
            warm = await runtime.start_session(agent)
            await warm.session.ask("prompt 1")
            await warm.aclose()
            gc.collect()
            before = current_rss_kib()
            handles = []
            for _ in range(sessions):
                handle = await runtime.start_session(agent)
                await handle.session.ask("prompt 1")
                handles.append(handle)
            gc.collect()
            per_session = (current_rss_kib() - before) / sessions
            start = time.perf_counter()
        close_ms = (time.perf_counter() - start) * 1000
        return {"rss_kib_per_session": per_session, "close_ms": close_ms}

    return trio.run(main)


# --- W1 durable -------------------------------------------------------------------------------------


def answer_latest(request: ModelRequest) -> str | ToolCall:
    """W1's answer to the latest prompt (a shared session's history holds the earlier ones)."""
    last = request.messages[-1]
    prompt = next(m for m in reversed(request.messages) if isinstance(m, UserMessage))
    k = int(prompt.content.rsplit(" ", 1)[1])
    if isinstance(last, ToolResultMessage):
        return f"done {k}"
    return ToolCall("add", {"a": k, "b": 1})


def make_durable_agent() -> Agent:
    return Agent(name="bench", model=ScriptedModel(itertools.repeat(answer_latest), record_requests=False), tools=[add])


async def _streamed(session: Any, k: int) -> str:
    async with session.run(f"prompt {k}") as stream:
        async for event in stream:
            last = event
    assert last == RunFinished("completed"), last
    return stream.result.output


def durable_w1(prompts: int, *, store: Callable[[], SessionStore | None], shared: bool) -> float:
    """W1 streamed, ``prompts`` runs one after another; seconds. ``store()`` makes the runtime's store
    (``None``: in memory). Each prompt in a fresh session (its claim, load and release included), or all
    in one session opened for the block (its history growing by 4 messages a run)."""
    agent = make_durable_agent()

    async def main() -> float:
        async with open_runtime(store=store()) as runtime:
            start = time.perf_counter()
            if shared:
                async with runtime.open_session(agent) as session:
                    for k in range(prompts):
                        output = await _streamed(session, k)
            else:
                for k in range(prompts):
                    async with runtime.open_session(agent) as session:
                        output = await _streamed(session, k)
            elapsed = time.perf_counter() - start
        assert output == f"done {prompts - 1}", output
        return elapsed

    return trio.run(main)


class _LockedCounter(logging.Handler):
    """Counts the runtime's log records that say "database is locked" (the writer logs a failed commit)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.locked = 0
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        if "locked" in record.getMessage().lower():
            self.locked += 1


def durable_concurrent(runs: int, *, store: Callable[[], SessionStore | None], sessions: int) -> dict[str, float]:
    """``runs`` streamed W1 runs at once across ``sessions`` fresh sessions of one store (``runs //
    sessions`` each, queued in their session's run slot); wall time, how many completed, and every
    "database is locked" seen (an error raised, an ``ErrorEvent``, a log record)."""
    agent = make_durable_agent()
    counter = _LockedCounter()
    logger = logging.getLogger("runtime")
    logger.addHandler(counter)

    async def main() -> dict[str, float]:
        reasons: dict[str, int] = {}
        errors: list[str] = []

        async def one(session: Any, k: int) -> None:
            async with session.run(f"prompt {k}") as stream:
                async for event in stream:
                    if isinstance(event, ErrorEvent):
                        errors.append(event.message)
            reasons[stream.result.reason] = reasons.get(stream.result.reason, 0) + 1

        async def serve(s: int) -> None:
            try:
                async with runtime.open_session(agent) as session, trio.open_nursery() as nursery:
                    for k in range(s, runs, sessions):
                        nursery.start_soon(one, session, k)
            except Exception as exc:  # counted, not raised: the other sessions go on
                errors.append(repr(exc))

        async with open_runtime(store=store()) as runtime:
            writer = runtime._writer  # diagnostics: transactions committed
            commits = 0 if writer is None else writer.commits
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for s in range(sessions):
                    nursery.start_soon(serve, s)
            wall = time.perf_counter() - start
            commits = (0 if writer is None else writer.commits) - commits
        locked = counter.locked + sum("locked" in error.lower() for error in errors)
        return {
            "wall_s": wall,
            "runs_per_s": runs / wall,
            "completed": reasons.get("completed", 0),
            "not_completed": runs - reasons.get("completed", 0),
            "errors": len(errors) + counter.records,
            "locked_errors": locked,
            "commits": commits,
        }

    try:
        return trio.run(main)
    finally:
        logger.removeHandler(counter)
