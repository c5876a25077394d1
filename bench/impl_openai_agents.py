"""The workloads on openai-agents (see _protocol.md for the interface).

Everything runs offline: the agent's model is :class:`AddModel`, a ``Model``
subclass that decides its answer from the request it is given, the way
openai-agents' own test ``FakeModel`` does (non-streamed: a ``ModelResponse``;
streamed: the Responses API event sequence ``response.created`` ...
``response.completed``, the last event carrying the whole ``Response``).
Tracing is disabled and no API key is used.

W1 tool turn
    One ``Agent`` with one tool, ``add`` (a sync ``@function_tool``, which
    openai-agents runs with ``asyncio.to_thread``, as trio-agents runs sync
    tools in a worker thread). Each prompt ``"prompt k"`` is a fresh run with
    no history: the model answers with the tool call ``add(k, 1)``, then,
    once the tool result is in its input, with the text ``"done k"``.
    Streamed: ``Runner.run_streamed`` with ``result.stream_events()`` consumed
    to the end; non-streamed: ``Runner.run``. The agent and model are built
    once, before the timed loop.
W2 concurrency
    ``runs`` streamed W1 runs at once: ``asyncio.gather`` over one task per run.
W3 cancel
    ``runs`` streamed runs, each consumed in its own task of one
    ``asyncio.TaskGroup``, whose model parks forever (awaits an
    ``asyncio.Event`` that is never set). Once every run has entered the model,
    the task that owns the TaskGroup is cancelled; ``cancel_ms`` runs from
    ``cancel()`` until that task is done, and ``tasks_alive`` counts the other
    asyncio tasks still alive then (``RunResultStreaming`` cancels its
    background run task when its consumer is cancelled, but does not wait for
    it, so those tasks may still be finishing).
W4 scale
    openai-agents offers no plain in-memory ``Session``; the simplest one is
    ``SQLiteSession(session_id)``, whose default database is ``":memory:"``
    (one SQLite in-memory database per session). Each of the ``sessions``
    sessions is given the items one completed W1 run stores in a session
    (read back from a session the W1 run used). ``close_ms`` times
    ``close()`` on each session and dropping them.
W1 durable
    W1 streamed with ``SQLiteSession(session_id, db_path=FILE)``: a database
    file, not ``:memory:`` (the durable sessions openai-agents ships). Each
    prompt in a fresh session (a new id; the ``SQLiteSession`` made and
    closed in the timed loop), or all prompts in one session (its history
    read back and sent to the model on every run). The model answers the
    latest prompt (:func:`answer_latest`).
"""

from __future__ import annotations

import asyncio
import gc
import platform
import resource
import time
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from _harness import current_rss_kib
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

# `agents` is openai-agents' package (ruff files it as first-party, like this repo's own `agents`).
from agents import (
    Agent,
    Model,
    ModelResponse,
    ModelTracing,
    Runner,
    SQLiteSession,
    Usage,
    function_tool,
    set_tracing_disabled,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from agents.agent_output import AgentOutputSchemaBase
    from agents.handoffs import Handoff
    from agents.items import TResponseOutputItem, TResponseStreamEvent
    from openai.types.responses.response_prompt_param import ResponsePromptParam

    from agents import ModelSettings, Tool, TResponseInputItem

set_tracing_disabled(True)

VERSIONS: dict[str, str] = {
    "openai-agents": version("openai-agents"),
    "openai": version("openai"),
    "python": platform.python_version(),
}


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


# --- the scripted model ------------------------------------------------------------------------


def _text(item: Any) -> str:
    """The text of a user input item (a plain string or a list of input_text parts)."""
    content = item["content"]
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part.get("type") == "input_text")


def answer(input: str | list[TResponseInputItem]) -> list[TResponseOutputItem]:
    """The model's decision: ``add(k, 1)`` for "prompt k", then "done k" once the tool result is in."""
    items: list[Any] = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
    prompt = next(item for item in items if item.get("role") == "user")
    k = int(_text(prompt).rsplit(" ", 1)[1])
    if any(item.get("type") == "function_call_output" for item in items):
        text = ResponseOutputText(type="output_text", text=f"done {k}", annotations=[], logprobs=[])
        return [
            ResponseOutputMessage(id=f"msg_{k}", type="message", role="assistant", status="completed", content=[text])
        ]
    return [
        ResponseFunctionToolCall(
            id=f"fc_{k}", call_id=f"call_{k}", type="function_call", name="add", arguments=f'{{"a": {k}, "b": 1}}'
        )
    ]


def _response(output: list[TResponseOutputItem]) -> Response:
    return Response(
        id="resp_bench",
        created_at=0,
        model="add-model",
        object="response",
        output=output,
        tool_choice="auto",
        tools=[],
        top_p=None,
        parallel_tool_calls=False,
        status="completed",
        usage=ResponseUsage(
            input_tokens=0,
            output_tokens=0,
            total_tokens=0,
            input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
        ),
    )


def _stream_events(output: list[TResponseOutputItem]) -> list[TResponseStreamEvent]:
    """The Responses API event sequence that streams ``output`` (as the SDK's test FakeModel emits it)."""
    response = _response(output)
    in_progress = response.model_copy(update={"status": "in_progress", "output": []})
    events: list[Any] = [
        ResponseCreatedEvent(type="response.created", response=in_progress, sequence_number=0),
        ResponseInProgressEvent(type="response.in_progress", response=in_progress, sequence_number=1),
    ]
    for index, item in enumerate(output):
        seq = len(events)
        if isinstance(item, ResponseFunctionToolCall):
            events += [
                ResponseOutputItemAddedEvent(
                    type="response.output_item.added",
                    item=item.model_copy(update={"arguments": "", "status": "in_progress"}),
                    output_index=index,
                    sequence_number=seq,
                ),
                ResponseFunctionCallArgumentsDeltaEvent(
                    type="response.function_call_arguments.delta",
                    item_id=item.id or "",
                    output_index=index,
                    delta=item.arguments,
                    sequence_number=seq + 1,
                ),
                ResponseFunctionCallArgumentsDoneEvent(
                    type="response.function_call_arguments.done",
                    item_id=item.id or "",
                    output_index=index,
                    name=item.name,
                    arguments=item.arguments,
                    sequence_number=seq + 2,
                ),
            ]
        elif isinstance(item, ResponseOutputMessage):
            part = item.content[0]
            assert isinstance(part, ResponseOutputText)
            empty = part.model_copy(update={"text": ""})
            common = {"item_id": item.id, "output_index": index, "content_index": 0}
            events += [
                ResponseOutputItemAddedEvent(
                    type="response.output_item.added",
                    item=item.model_copy(update={"content": [], "status": "in_progress"}),
                    output_index=index,
                    sequence_number=seq,
                ),
                ResponseContentPartAddedEvent(
                    type="response.content_part.added", part=empty, sequence_number=seq + 1, **common
                ),
                ResponseTextDeltaEvent(
                    type="response.output_text.delta", delta=part.text, logprobs=[], sequence_number=seq + 2, **common
                ),
                ResponseTextDoneEvent(
                    type="response.output_text.done", text=part.text, logprobs=[], sequence_number=seq + 3, **common
                ),
                ResponseContentPartDoneEvent(
                    type="response.content_part.done", part=part, sequence_number=seq + 4, **common
                ),
            ]
        events.append(
            ResponseOutputItemDoneEvent(
                type="response.output_item.done", item=item, output_index=index, sequence_number=len(events)
            )
        )
    events.append(ResponseCompletedEvent(type="response.completed", response=response, sequence_number=len(events)))
    return events


class AddModel(Model):
    """An offline model answering with :func:`answer`.

    With ``park_runs=n`` (W3) it never answers: each call parks on an event that is never set,
    and ``all_parked`` is set once ``n`` calls have entered.
    """

    def __init__(self, *, park_runs: int | None = None) -> None:
        self.park_runs = park_runs
        self.entered = 0
        self.all_parked = asyncio.Event()
        self._never = asyncio.Event()

    async def _maybe_park(self) -> None:
        if self.park_runs is not None:
            self.entered += 1
            if self.entered == self.park_runs:
                self.all_parked.set()
            await self._never.wait()

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        await self._maybe_park()
        return ModelResponse(output=answer(input), usage=Usage(requests=1), response_id=None)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        await self._maybe_park()
        for event in _stream_events(answer(input)):
            yield event


def make_agent(model: Model | None = None) -> Agent[Any]:
    return Agent(name="bench", model=model or AddModel(), tools=[add])


async def run_one(agent: Agent[Any], k: int, *, streamed: bool, session: SQLiteSession | None = None) -> str:
    """One fresh run of "prompt k"; returns its final output."""
    if not streamed:
        return (await Runner.run(agent, f"prompt {k}", session=session)).final_output
    result = Runner.run_streamed(agent, f"prompt {k}", session=session)
    async for _ in result.stream_events():
        pass
    return result.final_output


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
        model = AddModel(park_runs=runs)
        agent = make_agent(model)

        async def consume(k: int) -> None:
            result = Runner.run_streamed(agent, f"prompt {k}")
            async for _ in result.stream_events():
                pass

        async def owner() -> None:
            async with asyncio.TaskGroup() as tg:
                for k in range(runs):
                    tg.create_task(consume(k))

        owner_task = asyncio.create_task(owner())
        await model.all_parked.wait()
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
        # What one completed W1 run leaves in a session (this also warms up the SDK and to_thread's pool).
        template = SQLiteSession("template")
        assert await run_one(agent, 1, streamed=False, session=template) == "done 1"
        items = await template.get_items()
        template.close()
        gc.collect()
        before = current_rss_kib()
        opened: list[SQLiteSession] = []
        for i in range(sessions):
            session = SQLiteSession(f"session-{i}")
            await session.add_items(items)
            opened.append(session)
        gc.collect()
        per_session = (current_rss_kib() - before) / sessions
        assert await opened[-1].get_items() == items
        start = time.perf_counter()
        for session in opened:
            session.close()
        del opened, session
        close_ms = (time.perf_counter() - start) * 1000
        return {"rss_kib_per_session": per_session, "close_ms": close_ms}

    return asyncio.run(main())


# --- W1 durable ---------------------------------------------------------------------------------


def answer_latest(input: str | list[TResponseInputItem]) -> list[TResponseOutputItem]:
    """:func:`answer` for the latest prompt: a shared session's history holds the earlier ones."""
    items: list[Any] = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
    prompt = next(item for item in reversed(items) if item.get("role") == "user")
    k = int(_text(prompt).rsplit(" ", 1)[1])
    if items[-1].get("type") == "function_call_output":
        text = ResponseOutputText(type="output_text", text=f"done {k}", annotations=[], logprobs=[])
        return [
            ResponseOutputMessage(id=f"msg_{k}", type="message", role="assistant", status="completed", content=[text])
        ]
    return [
        ResponseFunctionToolCall(
            id=f"fc_{k}", call_id=f"call_{k}", type="function_call", name="add", arguments=f'{{"a": {k}, "b": 1}}'
        )
    ]


class LatestModel(AddModel):
    """:class:`AddModel` answering the latest prompt (streamed only: W1 durable streams)."""

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        for event in _stream_events(answer_latest(input)):
            yield event


_durable_sessions = 0


def durable_w1(prompts: int, *, db_path: str, shared: bool) -> float:
    """W1 streamed with ``SQLiteSession`` on the file ``db_path``, ``prompts`` runs one after another;
    seconds. Each prompt in a fresh session, or all in one."""
    agent = make_agent(LatestModel())

    def new_session() -> SQLiteSession:
        global _durable_sessions
        _durable_sessions += 1
        return SQLiteSession(f"s{_durable_sessions}", db_path=db_path)

    async def main() -> float:
        output = ""
        start = time.perf_counter()
        if shared:
            session = new_session()
            try:
                for k in range(prompts):
                    output = await run_one(agent, k, streamed=True, session=session)
            finally:
                session.close()
        else:
            for k in range(prompts):
                session = new_session()
                try:
                    output = await run_one(agent, k, streamed=True, session=session)
                finally:
                    session.close()
        elapsed = time.perf_counter() - start
        assert output == f"done {prompts - 1}", output
        return elapsed

    return asyncio.run(main())
