"""A finished run is freed by reference counting alone: it leaves no reference cycle for the collector.

Python's cyclic collector scans every live object in a generation-2
collection, so 50,000 runs in flight pay for each cycle a run leaves behind
(DESIGN.md, "Known sharp edges"). Each test runs a scenario once to warm up
caches (a sub-agent's transfer-tool schema, the worker threads), then again
with the collector off and ``DEBUG_SAVEALL`` on, leaves every block, and
asserts that ``gc.collect()`` finds nothing at all: not our objects, and not
trio's or a library's either (a foreign cycle holding one of our frames
would keep the run alive just the same). On failure the message draws each
cycle it found.
"""

from __future__ import annotations

import gc
import itertools
import types
from collections import deque
from typing import TYPE_CHECKING, Any

import attrs
import pydantic
import trio
import trio.testing

from agents import (
    Agent,
    RefusalChunk,
    ScriptedModel,
    StopChunk,
    TextChunk,
    ToolCall,
    ToolContext,
    UsageLimits,
    tool,
)
from runtime import SQLiteStore, StoreUnavailableError, open_runtime
from runtime.events import CustomEvent, ElicitationRequest, ErrorEvent, RunFinished, ToolCallStarted

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from agents import ModelChunk
    from agents.models import Turn
    from runtime import Runtime, SessionStore

_PROJECT = ("runtime", "agents", "streams")


# -- the check ----------------------------------------------------------------


async def assert_freed_by_refcount(
    scenario: Callable[[Runtime], Awaitable[None]], store: Callable[[], SessionStore] | None = None
) -> None:
    """Run ``scenario`` in a fresh runtime twice (on a new ``store()``, if given); the second time, nothing may
    be left for the collector."""
    await _in_runtime(scenario, store)  # warm-up: first-use caches are not the run's garbage
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        await _in_runtime(scenario, store)
        gc.collect()
        garbage = list(gc.garbage)
        assert not garbage, _explain(garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()


async def _in_runtime(scenario: Callable[[Runtime], Awaitable[None]], store: Callable[[], SessionStore] | None) -> None:
    # A frame of its own, so no local of the caller keeps anything of the run reachable.
    async with open_runtime(store=None if store is None else store()) as runtime:
        await scenario(runtime)


def _is_ours(obj: object) -> bool:
    code = getattr(obj, "f_code", None) or getattr(obj, "cr_code", None) or getattr(obj, "__code__", None)
    if isinstance(code, types.CodeType):
        return any(f"/{package}/" in code.co_filename for package in _PROJECT)
    return type(obj).__module__.split(".")[0] in _PROJECT


def _describe(obj: object) -> str:
    if isinstance(obj, types.FrameType):
        return f"frame of {obj.f_code.co_qualname} ({obj.f_code.co_filename}:{obj.f_lineno})"
    if isinstance(obj, types.CoroutineType):
        return f"coroutine {obj.__qualname__}"
    if isinstance(obj, types.MethodType):
        return f"bound method {obj.__func__.__qualname__}"
    if isinstance(obj, types.FunctionType):
        return f"function {obj.__qualname__}"
    if isinstance(obj, BaseException):
        return f"{type(obj).__qualname__}({obj!s:.60})"
    if isinstance(obj, dict | list | tuple | set):
        return f"{type(obj).__name__} of {len(obj)}"
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _explain(garbage: list[Any]) -> str:
    """Name what the collector found, ours first, and draw a shortest cycle through each of ours."""
    ours = [obj for obj in garbage if _is_ours(obj)]
    members = {id(obj) for obj in garbage}
    edges = {id(obj): [ref for ref in gc.get_referents(obj) if id(ref) in members] for obj in garbage}
    lines = [f"gc.collect() found {len(garbage)} objects, {len(ours)} of trio-agents:"]
    drawn: set[int] = set()
    for start in ours or garbage[:5]:
        if id(start) in drawn:
            continue
        cycle = _shortest_cycle(start, edges)
        if cycle is None:
            continue  # only reachable from a cycle: that cycle is drawn from its own members
        drawn.update(id(obj) for obj in cycle)
        lines.append("  cycle: " + " -> ".join(_describe(obj) for obj in cycle))
    others = sorted({_describe(obj) for obj in garbage if not _is_ours(obj)})
    lines.append(f"  not ours: {', '.join(others[:20]) or 'nothing'}")
    return "\n".join(lines)


def _shortest_cycle(start: object, edges: dict[int, list[Any]]) -> list[Any] | None:
    came_from: dict[int, Any] = {id(start): None}
    queue = deque([start])
    while queue:
        obj = queue.popleft()
        for ref in edges[id(obj)]:
            if ref is start:
                path = [obj]
                while came_from[id(path[-1])] is not None:
                    path.append(came_from[id(path[-1])])
                return [*reversed(path), start]
            if id(ref) not in came_from:
                came_from[id(ref)] = obj
                queue.append(ref)
    return None


# -- what runs ----------------------------------------------------------------


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers, after a checkpoint."""
    await trio.lowlevel.checkpoint()
    return a + b


@tool
def add_in_thread(a: int, b: int) -> int:
    """Add two numbers (a sync tool: it runs in a worker thread)."""
    return a + b


@tool
async def fail(a: int) -> int:
    """Raise, after a checkpoint."""
    await trio.lowlevel.checkpoint()
    raise ValueError(f"no {a}")


@tool
async def hang() -> int:
    """Never return."""
    await trio.sleep_forever()
    raise AssertionError("unreachable")


@tool
async def ask(ctx: ToolContext[Any]) -> int:
    """Ask the human how many."""
    answer = await ctx.elicit("How many?", schema=int)
    return int(answer.content)


@tool(requires_approval=True)
async def guarded(a: int) -> int:
    """A tool that needs approval."""
    return a


@attrs.frozen
class Counted(CustomEvent):
    """A custom event a tool emits."""

    n: int


@tool
async def report(ctx: ToolContext[Any], count: int, emit: bool = True) -> int:
    """Report progress (best-effort: never waits) and emit custom events (these wait for room)."""
    for i in range(count):
        await ctx.report_progress(i, total=count, message="counting")
        if emit:
            await ctx.emit(Counted(i))
    return count


class Tally(pydantic.BaseModel):
    """A typed answer."""

    total: int
    note: str


def agent(*script: Turn, **options: Any) -> Agent:
    """An agent answering with ``script``, again and again (the warm-up and the checked run each use it once)."""
    options.setdefault("name", "gc")
    options.setdefault("tools", [add, add_in_thread, fail, hang, ask, guarded, report])
    return Agent(model=ScriptedModel(itertools.cycle(script)), **options)


def streamed(agent: Agent) -> Callable[[Runtime], Awaitable[None]]:
    """A scenario: one streamed run of ``agent`` in a session opened for it, read to the end."""

    async def scenario(runtime: Runtime) -> None:
        async with runtime.open_session(agent) as session, session.run("go") as stream:
            async for event in stream:
                if isinstance(event, ElicitationRequest):
                    await stream.respond(event.id, "accept", 3)

    return scenario


# -- the tests ----------------------------------------------------------------


async def test_gc_run_with_an_async_tool_is_freed_by_refcount() -> None:
    """A streamed run calling an async tool, then answering, leaves no cycle."""
    await assert_freed_by_refcount(streamed(agent(ToolCall("add", {"a": 1, "b": 2}), "done")))


async def test_gc_asked_run_with_a_sync_tool_is_freed_by_refcount() -> None:
    """Session.ask with a sync tool (a worker thread) leaves no cycle."""
    answering = agent(ToolCall("add_in_thread", {"a": 1, "b": 2}), "done")

    async def scenario(runtime: Runtime) -> None:
        async with runtime.open_session(answering) as session:
            await session.ask("go")

    await assert_freed_by_refcount(scenario)


async def test_gc_durable_runs_are_freed_by_refcount(tmp_path: Path) -> None:
    """Durable runs (a tool turn; a run its store could not write, its events held until then) leave no cycle:
    nor does the store, its writer and its threads."""
    answering = agent(ToolCall("add_in_thread", {"a": 1, "b": 2}), "done", "again")
    failing: list[bool] = []

    class FailingOnce(SQLiteStore):
        async def commit(self, checkpoints: Any) -> None:
            if failing:
                failing.clear()
                raise StoreUnavailableError("disk I/O error (once)")
            await super().commit(checkpoints)

    async def scenario(runtime: Runtime) -> None:
        async with runtime.open_session(answering) as session:
            await session.ask("go")
            failing.append(True)
            async with session.run("fails") as stream:
                assert [type(event) async for event in stream][-2:] == [ErrorEvent, RunFinished]

    paths = (tmp_path / f"s{k}.db" for k in itertools.count())
    await assert_freed_by_refcount(scenario, lambda: FailingOnce(next(paths)))


async def test_gc_run_whose_tool_raises_is_freed_by_refcount() -> None:
    """A tool's exception becomes an error result; neither it nor its traceback is left in a cycle."""
    await assert_freed_by_refcount(streamed(agent(ToolCall("fail", {"a": 1}), "done")))


async def test_gc_run_left_mid_tool_is_freed_by_refcount() -> None:
    """A consumer breaking out while a tool runs cancels the run; the Cancelled leaves no cycle."""
    hanging = agent(ToolCall("hang"))
    reasons: list[str] = []

    async def scenario(runtime: Runtime) -> None:
        async with runtime.open_session(hanging) as session, session.run("go") as stream:
            async for event in stream:
                if isinstance(event, ToolCallStarted):
                    break
        reasons.append(stream.result.reason)

    await assert_freed_by_refcount(scenario)
    assert reasons == ["cancelled", "cancelled"]  # the checked run left mid-tool too


async def test_gc_run_ending_in_timeouts_is_freed_by_refcount(autojump_clock: trio.testing.MockClock) -> None:
    """A tool timing out, then the run timing out, leaves no cycle."""
    timing_out = agent(ToolCall("hang"), ToolCall("hang"), tool_timeout=1, run_timeout=1.5)
    results: list[tuple[str, tuple[str | None, ...]]] = []

    async def scenario(runtime: Runtime) -> None:
        async with runtime.open_session(timing_out) as session, session.run("go") as stream:
            async for _ in stream:
                pass
        results.append((stream.result.reason, tuple(call.error for call in stream.result.tool_calls)))

    await assert_freed_by_refcount(scenario)
    tool_timeout = "tool 'hang' took longer than tool_timeout=1s"
    cancelled = "the tool call was cancelled"  # the second call, cut off by run_timeout
    assert results == [("timeout", (tool_timeout, cancelled))] * 2  # the checked run timed out both ways too


async def test_gc_run_asking_the_human_is_freed_by_refcount() -> None:
    """A tool's question, an approval, and their answers leave no cycle."""
    await assert_freed_by_refcount(
        streamed(agent(ToolCall("ask"), ToolCall("guarded", {"a": 1}), "done", model_idle_timeout=60))
    )


async def test_gc_sub_agent_run_is_freed_by_refcount() -> None:
    """A run handing a task to a sub-agent, which calls a tool itself, leaves no cycle."""
    helper = agent(ToolCall("add", {"a": 1, "b": 2}), "helped", name="helper")
    boss = agent(ToolCall("transfer_task", {"agent": "helper", "task": "add"}), "done", tools=[], sub_agents=[helper])
    await assert_freed_by_refcount(streamed(boss))


async def test_gc_session_opened_and_closed_is_freed_by_refcount() -> None:
    """A session without a run, opened and closed, leaves no cycle."""
    idle = agent("done")

    async def scenario(runtime: Runtime) -> None:
        async with runtime.open_session(idle):
            pass

    await assert_freed_by_refcount(scenario)


async def test_gc_started_session_closed_or_reaped_is_freed_by_refcount(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A started session that ran, closed by its handle or by its idle reaper, leaves no cycle."""
    answering = agent(ToolCall("add", {"a": 1, "b": 2}), "done")

    async def scenario(runtime: Runtime) -> None:
        closed = await runtime.start_session(answering)
        await closed.session.ask("go")
        await closed.aclose()
        reaped = await runtime.start_session(answering, idle_timeout=1)
        await reaped.session.ask("go")
        await reaped.wait_closed()

    await assert_freed_by_refcount(scenario)


async def test_gc_session_with_a_stream_handler_is_freed_by_refcount() -> None:
    """A run whose events are copied to a stream handler leaves no cycle."""
    answering = agent(ToolCall("add", {"a": 1, "b": 2}), "done")
    seen: list[object] = []

    async def scenario(runtime: Runtime) -> None:
        seen.clear()  # what the checked run's handler saw, only
        async with runtime.open_session(answering) as session:
            session.add_handler(_append_to(seen))
            await session.ask("go")

    await assert_freed_by_refcount(scenario)
    assert [type(event).__name__ for event in seen].count("ToolCallFinished") == 1


def _append_to(seen: list[object]) -> Callable[[object], Awaitable[None]]:
    async def handler(event: object) -> None:
        seen.append(event)

    return handler


async def test_gc_typed_output_run_with_progress_and_custom_events_is_freed_by_refcount() -> None:
    """A typed run whose tool reports progress and emits events, whose first answer fails validation (a retry with
    pydantic's errors) and whose output streams as OutputDelta, leaves no cycle."""
    script = [
        ToolCall("report", {"count": 3}),
        ToolCall("final_result", {"total": "three"}),
        ToolCall("final_result", {"total": 3, "note": "counted"}),
    ]
    # Arguments streamed as deltas: the answer is parsed as it comes, into OutputDelta events.
    model = ScriptedModel(itertools.cycle(script), stream_arguments=True)
    typed = Agent(name="gc", model=model, tools=[report], output_type=Tally)
    seen: list[object] = []

    async def scenario(runtime: Runtime) -> None:
        seen.clear()  # what the checked run streamed, only
        async with runtime.open_session(typed) as session, session.run("go") as stream:
            seen.extend([type(event).__name__ async for event in stream])

    await assert_freed_by_refcount(scenario)
    for kind in ("ToolProgress", "Counted", "ToolCallDelta", "OutputDelta", "FinalOutput"):
        assert kind in seen


async def test_gc_typed_output_with_progress_dropped_on_a_full_stream_is_freed_by_refcount() -> None:
    """Progress dropped for want of room (more reports than the stream holds, and the tool never waits) leaves no
    cycle."""
    typed = agent(
        ToolCall("report", {"count": 500, "emit": False}),
        '{"total": 500, "note": "many"}',
        output_type=Tally,
        output_mode="prompted",
    )

    async def scenario(runtime: Runtime) -> None:
        async with runtime.open_session(typed) as session:
            result = await session.ask("go")
            assert result.progress_dropped > 0

    await assert_freed_by_refcount(scenario)


async def test_gc_runs_ended_by_output_error_refusal_and_usage_limit_are_freed_by_refcount() -> None:
    """Runs ending with an output error, a refusal, or a usage limit (each an early way out) leave no cycle."""
    failing = agent("not json", output_type=Tally, output_mode="prompted", output_retries=0)
    anthropic_refusal: list[ModelChunk] = [TextChunk("I won't"), StopChunk("refusal", "refusal")]
    openai_refusal: list[ModelChunk] = [RefusalChunk("no")]
    refusing = agent(anthropic_refusal, openai_refusal)
    limited = agent(ToolCall("add", {"a": 1, "b": 2}), usage_limits=UsageLimits(requests=1))
    reasons: list[str] = []

    async def scenario(runtime: Runtime) -> None:
        for each in (failing, refusing, refusing, limited):
            async with runtime.open_session(each) as session, session.run("go") as stream:
                async for _ in stream:
                    pass
            reasons.append(stream.result.reason)

    await assert_freed_by_refcount(scenario)
    assert reasons == ["error", "refusal", "refusal", "usage_limit"] * 2  # the checked runs ended so too
