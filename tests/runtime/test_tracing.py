"""OpenTelemetry: spans follow the ownership tree, by the GenAI conventions; metrics; nothing without the extra.

Spans go to the SDK's in-memory exporter, metrics to its in-memory reader,
through providers given to ``open_runtime`` (the global ones are left alone).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agents import (
    TRANSFER_TOOL,
    Agent,
    Hooks,
    RunContext,
    ScriptedModel,
    Tool,
    ToolCall,
    ToolCallChunk,
    resolve_model,
    tool,
)
from runtime import RunFailedError, open_runtime
from runtime._tracing import provider_name
from runtime.events import ToolCallStarted

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from runtime import Runtime


class Traced:
    """An SDK tracer and meter provider with in-memory export, and what they recorded."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def runtime(self, *, content: bool = False) -> AbstractAsyncContextManager[Runtime]:
        return open_runtime(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, trace_content=content
        )

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.named(name)
        return span

    def metrics(self) -> dict[str, list[Any]]:
        """Data points by metric name."""
        found: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


@pytest.fixture
def traced() -> Iterator[Traced]:
    """Providers with in-memory export; shut down after the test."""
    recorder = Traced()
    yield recorder
    recorder.tracer_provider.shutdown()
    recorder.meter_provider.shutdown()


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else int(span.parent.span_id)


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def attrs_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
async def broken(reason: str) -> str:
    """Always fails."""
    raise ValueError(reason)


def calls(*items: ToolCall) -> Sequence[ToolCall]:
    return list(items)


async def test_tracing_parallel_tools_nest_under_the_run(traced: Traced) -> None:
    """A run is one invoke_agent span; its model requests (chat) and its two parallel tool calls
    (execute_tool) are its children, each attributed by the GenAI conventions."""
    arrived: list[str] = []
    both = trio.Event()

    @tool
    async def meet(who: str) -> str:
        """Returns once both calls have started: they run in parallel."""
        arrived.append(who)
        if len(arrived) == 2:
            both.set()
        await both.wait()
        return who

    model = ScriptedModel([calls(ToolCall("meet", {"who": "x"}), ToolCall("meet", {"who": "y"})), "done"])
    agent = Agent(name="calc", model=model, tools=[meet])
    async with traced.runtime() as runtime, runtime.open_session(agent) as session:
        result = await session.ask("add them")
    assert result.output == "done"
    run = traced.one("invoke_agent calc")
    assert run.parent is None
    assert run.kind is SpanKind.INTERNAL
    assert run.status.status_code is StatusCode.UNSET
    run_attrs = attrs_of(run)
    assert run_attrs["gen_ai.operation.name"] == "invoke_agent"
    assert run_attrs["gen_ai.agent.name"] == "calc"
    assert run_attrs["gen_ai.conversation.id"] == session.id
    assert run_attrs["gen_ai.provider.name"] == "trio_agents.scripted"
    assert run_attrs["trio_agents.run.reason"] == "completed"
    assert run_attrs["gen_ai.usage.input_tokens"] == result.usage.input_tokens
    assert run_attrs["gen_ai.usage.output_tokens"] == result.usage.output_tokens
    chats = traced.named("chat scripted")
    assert len(chats) == 2
    assert all(parent_of(chat) == span_id(run) for chat in chats)
    first = attrs_of(chats[0])
    assert chats[0].kind is SpanKind.CLIENT
    assert first["gen_ai.operation.name"] == "chat"
    assert first["gen_ai.request.model"] == first["gen_ai.response.model"] == "scripted"
    assert first["gen_ai.response.finish_reasons"] == ("tool_use",)
    assert first["gen_ai.usage.output_tokens"] == 16
    assert attrs_of(chats[1])["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert sum(attrs_of(chat)["gen_ai.usage.input_tokens"] for chat in chats) == result.usage.input_tokens
    tools = traced.named("execute_tool meet")
    assert len(tools) == 2
    assert all(parent_of(span) == span_id(run) for span in tools)
    assert {attrs_of(span)["gen_ai.tool.call.id"] for span in tools} == {"call_1_0", "call_1_1"}
    assert all(attrs_of(span)["gen_ai.tool.name"] == "meet" for span in tools)
    assert all(span.status.status_code is StatusCode.UNSET for span in tools)
    # The tools ran in parallel: both started before either ended.
    assert max(span.start_time or 0 for span in tools) < min(span.end_time or 0 for span in tools)
    assert len({span.context.trace_id for span in traced.spans if span.context is not None}) == 1


async def test_tracing_sub_agent_nests_under_its_transfer_call(traced: Traced) -> None:
    """A sub-agent's invoke_agent span is a child of the execute_tool span of the transfer call."""
    helper = Agent(name="helper", model=ScriptedModel(["helped"], name="helper-model"))
    boss = Agent(
        name="boss",
        model=ScriptedModel([ToolCall(TRANSFER_TOOL, {"agent": "helper", "task": "help"}), "done"]),
        sub_agents=[helper],
    )
    async with traced.runtime() as runtime, runtime.open_session(boss) as session:
        await session.ask("go")
    top = traced.one("invoke_agent boss")
    transfer = traced.one(f"execute_tool {TRANSFER_TOOL}")
    nested = traced.one("invoke_agent helper")
    assert parent_of(transfer) == span_id(top)
    assert parent_of(nested) == span_id(transfer)
    (helper_chat,) = [span for span in traced.named("chat helper-model")]
    assert parent_of(helper_chat) == span_id(nested)
    assert attrs_of(nested)["trio_agents.run.reason"] == "completed"


async def test_tracing_failing_tool_is_an_error_span(traced: Traced) -> None:
    """A tool that raises ends its execute_tool span with an error status and ``error.type`` (and, content
    recorded, its error result); the run goes on."""
    model = ScriptedModel([ToolCall("broken", {"reason": "no disk"}), "sorry"])
    agent = Agent(name="a", model=model, tools=[broken])
    async with traced.runtime(content=True) as runtime, runtime.open_session(agent) as session:
        assert (await session.ask("go")).output == "sorry"
    span = traced.one("execute_tool broken")
    assert span.status.status_code is StatusCode.ERROR
    assert "no disk" in (span.status.description or "")
    assert attrs_of(span)["error.type"] == "ValueError"
    assert traced.one("invoke_agent a").status.status_code is StatusCode.UNSET


async def test_tracing_cancelled_run_ends_its_spans(traced: Traced) -> None:
    """A run cancelled by its consumer leaving (its two tool calls waiting) ends its spans, none left open,
    marked cancelled."""
    started = trio.Event()

    @tool
    async def wait() -> str:
        """Waits forever."""
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    agent = Agent(name="a", model=ScriptedModel([calls(ToolCall("wait", {}), ToolCall("wait", {}))]), tools=[wait])
    async with traced.runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            async for event in stream:
                if isinstance(event, ToolCallStarted):
                    await started.wait()
                    await trio.testing.wait_all_tasks_blocked()
                    break
    run = traced.one("invoke_agent a")
    assert run.end_time is not None
    assert run.status.status_code is StatusCode.ERROR
    assert attrs_of(run)["error.type"] == "cancelled"
    assert attrs_of(run)["trio_agents.run.reason"] == "cancelled"
    tool_calls = traced.named("execute_tool wait")
    assert len(tool_calls) == 2
    assert all(attrs_of(call)["error.type"] == "cancelled" for call in tool_calls)
    assert all(parent_of(call) == span_id(run) for call in tool_calls)
    assert run.status.description == "the run was cancelled"


async def test_tracing_run_cancelled_once_it_had_ended_keeps_its_reason_in_its_span(traced: Traced) -> None:
    """Cancelled in its end hook (the consumer left at the end), the run had completed: its span says so,
    as its result does."""
    hook_running = trio.Event()

    class SlowEnd(Hooks):
        async def on_run_end(self, ctx: RunContext[None], reason: str) -> None:
            hook_running.set()
            await trio.sleep_forever()

    agent = Agent(name="a", model=ScriptedModel(["hello"]), hooks=[SlowEnd()])
    async with traced.runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            await hook_running.wait()
        assert stream.result.reason == "completed"
    run = traced.one("invoke_agent a")
    assert attrs_of(run)["trio_agents.run.reason"] == "completed"
    assert run.status.status_code is not StatusCode.ERROR


async def test_tracing_run_timeout_is_an_error(traced: Traced, autojump_clock: trio.testing.MockClock) -> None:
    """A run past ``run_timeout`` ends its invoke_agent span with an error status, ``error.type`` ``timeout``."""

    @tool
    async def slow() -> str:
        """Slow."""
        await trio.sleep(100)
        return "late"

    agent = Agent(name="a", model=ScriptedModel([ToolCall("slow", {})]), tools=[slow], run_timeout=5.0)
    async with traced.runtime() as runtime, runtime.open_session(agent) as session:
        with pytest.raises(RunFailedError):
            await session.ask("go")
    run = traced.one("invoke_agent a")
    assert run.status.status_code is StatusCode.ERROR
    assert attrs_of(run)["error.type"] == "timeout"
    assert "run_timeout=5.0s" in (run.status.description or "")
    assert attrs_of(traced.one("execute_tool slow"))["error.type"] == "cancelled"


async def test_tracing_model_error_marks_the_chat_span(traced: Traced) -> None:
    """A model request that fails ends its chat span as an error, and the run's too."""
    from agents import ErrorChunk

    agent = Agent(name="a", model=ScriptedModel([[ErrorChunk("overloaded", "the model is overloaded")]]))
    async with traced.runtime() as runtime, runtime.open_session(agent) as session:
        with pytest.raises(RunFailedError):
            await session.ask("go")
    chat = traced.one("chat scripted")
    assert attrs_of(chat)["error.type"] == "model"
    assert chat.status.status_code is StatusCode.ERROR
    assert attrs_of(traced.one("invoke_agent a"))["error.type"] == "model"
    points = traced.metrics()["gen_ai.client.operation.duration"]
    assert [dict(point.attributes)["error.type"] for point in points] == ["model"]


async def test_tracing_a_chat_that_fails_after_its_usage_still_counts_its_tokens(traced: Traced) -> None:
    """Tokens a request reported before its error are on its chat span and in the token metric, as in the
    run's usage (the per-request figures add up to the run's)."""
    from agents import ErrorChunk, ModelChunk, TextChunk, UsageChunk

    turn: list[ModelChunk] = [TextChunk("Hel"), UsageChunk(700, 500), ErrorChunk("overloaded", "overloaded")]
    agent = Agent(name="a", model=ScriptedModel([turn]))
    async with traced.runtime() as runtime, runtime.open_session(agent) as session:
        with pytest.raises(RunFailedError):
            await session.ask("go")
    chat = attrs_of(traced.one("chat scripted"))
    assert (chat["gen_ai.usage.input_tokens"], chat["gen_ai.usage.output_tokens"]) == (700, 500)
    assert chat["error.type"] == "model"
    points = traced.metrics()["gen_ai.client.token.usage"]
    tokens = {dict(point.attributes)["gen_ai.token.type"]: point.sum for point in points}
    assert tokens == {"input": 700, "output": 500}


async def test_tracing_arguments_the_schema_refuses_are_invalid_arguments(traced: Traced) -> None:
    """Arguments that are not JSON and arguments the tool's schema refuses are both error.type
    invalid_arguments; a ToolArgumentsError the tool raises itself is its own."""
    from agents import ToolArgumentsError

    @tool
    async def picky(a: int) -> int:
        """Raises its own ToolArgumentsError."""
        raise ToolArgumentsError("picky", "picky refuses")

    model = ScriptedModel(
        [
            [ToolCallChunk("c1", "add", '{"a": 1,'), ToolCallChunk("c2", "add", {"a": "x", "b": 1})],
            [ToolCallChunk("c3", "picky", {"a": 1})],
            "done",
        ]
    )
    agent = Agent(name="a", model=model, tools=[add, picky])
    async with traced.runtime() as runtime, runtime.open_session(agent) as session:
        await session.ask("go")
    tools = [attrs_of(span) for span in traced.spans if span.name.startswith("execute_tool")]
    kinds = {span["gen_ai.tool.call.id"]: span["error.type"] for span in tools}
    assert kinds == {"c1": "invalid_arguments", "c2": "invalid_arguments", "c3": "ToolArgumentsError"}


async def test_tracing_user_span_parents_the_run(traced: Traced) -> None:
    """A span the user holds around ``session.run()`` is the parent of the run's span (context is copied
    into the run's task)."""
    agent = Agent(name="a", model=ScriptedModel(["hi"]))
    tracer = traced.tracer_provider.get_tracer("test")
    async with traced.runtime() as runtime, runtime.open_session(agent) as session:
        with tracer.start_as_current_span("mine") as mine:
            async with session.run("hello") as stream:
                async for _ in stream:
                    pass
    run = traced.one("invoke_agent a")
    assert parent_of(run) == mine.get_span_context().span_id
    assert run.context is not None
    assert run.context.trace_id == mine.get_span_context().trace_id


async def test_tracing_content_is_recorded_only_when_asked(traced: Traced) -> None:
    """Messages, instructions and tool arguments and results are in the spans only with ``trace_content``."""

    def agent() -> Agent:
        model = ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "three"])
        return Agent(name="a", instructions="Be exact.", model=model, tools=[add])

    content_keys = {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.tool.definitions",
    }
    async with traced.runtime() as runtime, runtime.open_session(agent()) as session:
        await session.ask("one plus two")
    assert all(not content_keys & set(attrs_of(span)) for span in traced.spans)

    traced.exporter.clear()
    async with traced.runtime(content=True) as runtime, runtime.open_session(agent()) as session:
        await session.ask("one plus two")
    run = attrs_of(traced.one("invoke_agent a"))
    assert json.loads(run["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "one plus two"}]}
    ]
    assert json.loads(run["gen_ai.output.messages"])[0]["parts"] == [{"type": "text", "content": "three"}]
    first, second = (attrs_of(span) for span in traced.named("chat scripted"))
    assert json.loads(first["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be exact."}]
    assert json.loads(first["gen_ai.tool.definitions"])[0]["name"] == "add"
    (output,) = json.loads(first["gen_ai.output.messages"])
    assert output["finish_reason"] == "tool_use"
    assert output["parts"] == [{"type": "tool_call", "id": "call_1_0", "name": "add", "arguments": {"a": 1, "b": 2}}]
    roles = [message["role"] for message in json.loads(second["gen_ai.input.messages"])]
    assert roles == ["user", "assistant", "tool"]
    call = attrs_of(traced.one("execute_tool add"))
    assert json.loads(call["gen_ai.tool.call.arguments"]) == {"a": 1, "b": 2}
    assert call["gen_ai.tool.call.result"] == "3"


@dataclasses.dataclass
class _Dog:
    """A typed output that is a dataclass."""

    name: str


async def test_tracing_a_typed_output_is_recorded_as_its_json(traced: Traced) -> None:
    """A typed output (a dataclass) is the run span's output message as its JSON, not its repr."""
    agent = Agent(name="a", model=ScriptedModel([ToolCall("final_result", {"name": "Rex"})]), output_type=_Dog)
    async with traced.runtime(content=True) as runtime, runtime.open_session(agent) as session:
        assert (await session.ask("go")).output == _Dog("Rex")
    run = attrs_of(traced.one("invoke_agent a"))
    assert json.loads(run["gen_ai.output.messages"])[0]["parts"] == [{"type": "text", "content": '{"name":"Rex"}'}]


async def test_tracing_a_typed_output_with_no_text_form_is_said_so_and_the_run_completes(traced: Traced) -> None:
    """With content recorded, a typed output that has no JSON or text form (a computed field that raises) is
    named as such in the run's span; its conversion raised in the span's end and failed the session."""
    import pydantic

    class Out(pydantic.BaseModel):
        n: int

        @pydantic.computed_field  # type: ignore[prop-decorator]
        @property
        def label(self) -> str:
            raise KeyError("a")

    agent = Agent(name="a", model=ScriptedModel([ToolCall("final_result", {"n": 1})]), output_type=Out)
    async with traced.runtime(content=True) as runtime, runtime.open_session(agent) as session:
        output = (await session.ask("go")).output
        assert output is not None
        assert output.n == 1
        assert not session.closed
    run = attrs_of(traced.one("invoke_agent a"))
    assert json.loads(run["gen_ai.output.messages"])[0]["parts"] == [
        {"type": "text", "content": "the output (Out) has no JSON or text form: KeyError: 'a'"}
    ]


SECRET = "patient-ssn-078-05-1120"


def _mentions_secret(spans: Sequence[ReadableSpan]) -> list[str]:
    """The spans whose attributes, status or events hold SECRET."""
    return [
        span.name
        for span in spans
        if SECRET in repr(dict(span.attributes or {})) + repr(span.status.description)
        or any(SECRET in repr(dict(event.attributes or {})) for event in span.events)
    ]


@pytest.mark.parametrize("mode", ["tool", "prompted"])
async def test_tracing_invalid_typed_output_keeps_the_answer_out_of_spans(traced: Traced, mode: str) -> None:
    """Typed output that never validates: the run's span says so without the answer (pydantic's errors quote
    it) unless content is recorded; the run's ErrorEvent keeps the detail."""
    import pydantic

    class Out(pydantic.BaseModel):
        n: int

    answer = ToolCall("final_result", {"n": SECRET}) if mode == "tool" else json.dumps({"n": SECRET})
    for content in (False, True):
        traced.exporter.clear()
        agent = Agent(name="a", model=ScriptedModel([answer] * 2), output_type=Out, output_mode=mode)  # type: ignore[arg-type]
        async with traced.runtime(content=content) as runtime, runtime.open_session(agent) as session:
            with pytest.raises(RunFailedError) as failed:
                await session.ask("go")
        assert SECRET in str(failed.value)
        run = traced.one("invoke_agent a")
        assert attrs_of(run)["error.type"] == "output"
        if content:
            assert SECRET in (run.status.description or "")
        else:
            assert run.status.description == "the output was not valid after 2 attempt(s)"
            assert _mentions_secret(traced.spans) == []


async def test_tracing_failed_tool_and_malformed_stream_keep_content_out_of_spans(traced: Traced) -> None:
    """A tool's error result (its exception's words, a sub-agent's failure quoting its answer) and a
    malformed chunk quoted by the model's error stay out of spans unless content is recorded."""
    import pydantic

    from agents import MalformedStreamError

    class Out(pydantic.BaseModel):
        n: int

    def malformed(request: object) -> str:
        raise MalformedStreamError("openai: a chunk is not JSON", f'{{"text": "{SECRET}"')

    child_model = ScriptedModel([ToolCall("final_result", {"n": SECRET})])
    child = Agent(name="child", model=child_model, output_type=Out, output_retries=0)
    model = ScriptedModel(
        [[ToolCall("broken", {"reason": SECRET}), ToolCall(TRANSFER_TOOL, {"agent": "child", "task": "t"})], malformed]
    )
    agent = Agent(name="a", model=model, tools=[broken], sub_agents=[child])
    async with traced.runtime() as runtime, runtime.open_session(agent) as session:
        with pytest.raises(RunFailedError) as failed:
            await session.ask("go")
    assert SECRET in str(failed.value)
    assert _mentions_secret(traced.spans) == []
    assert traced.one("execute_tool broken").status.description == "ValueError"
    assert traced.one("invoke_agent child").status.description == "the output was not valid after 1 attempt(s)"
    assert traced.named("chat scripted")[-1].status.description == "openai: a chunk is not JSON"


async def test_tracing_invalid_tool_arguments_keep_the_call_out_of_spans(traced: Traced) -> None:
    """Invalid arguments (a dict key, an extra key the model sent) are quoted by pydantic's locations: the
    tool span says only "invalid arguments" unless content is recorded; the model still gets the detail."""

    @tool
    async def scores(d: dict[str, int]) -> str:
        """Scores."""
        return "ok"

    from agents import ModelRequest, ToolResultMessage

    errors: list[str] = []

    def done(request: ModelRequest) -> str:
        errors.extend(str(m.content) for m in request.messages if isinstance(m, ToolResultMessage))
        return "done"

    for content in (False, True):
        traced.exporter.clear()
        errors.clear()
        batch = [ToolCall("scores", {"d": {SECRET: "x"}}), ToolCall("add", {"a": 1, "b": 2, SECRET: 1})]
        agent = Agent(name="a", model=ScriptedModel([batch, done]), tools=[scores, add])
        async with traced.runtime(content=content) as runtime, runtime.open_session(agent) as session:
            await session.ask("go")
        assert len(errors) == 2
        assert all(SECRET in error for error in errors)
        for name in ("execute_tool scores", "execute_tool add"):
            span = traced.one(name)
            assert attrs_of(span)["error.type"] == "invalid_arguments"
            if content:
                assert SECRET in (span.status.description or "")
            else:
                assert span.status.description == "invalid arguments"
        if not content:
            assert _mentions_secret(traced.spans) == []


@pytest.mark.parametrize("failing", ["on_user_prompt", "instructions"])
async def test_tracing_a_failing_prompt_hook_or_instructions_keeps_its_words_out_of_spans(
    traced: Traced, failing: str
) -> None:
    """An on_user_prompt hook or instructions callable that raises: the run's span names only the
    exception's class (its words may quote the prompt) unless content is recorded; the error keeps them."""

    class PromptCheck(Hooks):
        async def on_user_prompt(self, ctx: RunContext[Any], prompt: str) -> None:
            raise ValueError(f"prompt not allowed: {prompt}")

    def instructions(ctx: RunContext[Any]) -> str:
        raise KeyError(f"no profile for {SECRET}")

    for content in (False, True):
        traced.exporter.clear()
        if failing == "on_user_prompt":
            agent = Agent(name="a", model=ScriptedModel(["done"]), hooks=[PromptCheck()])
            expected = "on_user_prompt hook failed: ValueError"
        else:
            agent = Agent(name="a", model=ScriptedModel(["done"]), instructions=instructions)
            expected = "the instructions callable failed: KeyError"
        async with traced.runtime(content=content) as runtime, runtime.open_session(agent) as session:
            with pytest.raises(RunFailedError) as failed:
                await session.ask(f"hello {SECRET}")
        assert SECRET in str(failed.value)
        run = traced.one("invoke_agent a")
        if content:
            assert SECRET in (run.status.description or "")
        else:
            assert run.status.description == expected
            assert _mentions_secret(traced.spans) == []


async def test_tracing_a_toolset_that_fails_to_open_keeps_its_words_out_of_spans(traced: Traced) -> None:
    """A toolset whose opening raises: the run's span names the toolset and the exception's class only (its
    words may quote an MCP server's stderr or a URL) unless content is recorded; the error keeps them."""

    class Broken:
        name = "files"

        @contextlib.asynccontextmanager
        async def open_tools(self, ctx: RunContext[Any]) -> AsyncIterator[Sequence[Tool]]:
            raise OSError(f"cannot reach {SECRET}")
            yield ()  # pragma: no cover - an async generator

    for content in (False, True):
        traced.exporter.clear()
        agent = Agent(name="a", model=ScriptedModel(["done"]), tools=[Broken()])
        async with traced.runtime(content=content) as runtime, runtime.open_session(agent) as session:
            with pytest.raises(RunFailedError) as failed:
                await session.ask("hello")
        assert SECRET in str(failed.value)
        run = traced.one("invoke_agent a")
        if content:
            assert SECRET in (run.status.description or "")
        else:
            assert run.status.description == "toolset 'files' failed to open: OSError"
            assert _mentions_secret(traced.spans) == []


async def test_tracing_metrics_token_usage_duration_and_gauges(traced: Traced) -> None:
    """Each model request records its tokens (input and output) and its duration; the gauges count the
    runtime's open sessions and live runs."""
    release = trio.Event()

    @tool
    async def hold() -> str:
        """Waits for the test."""
        await release.wait()
        return "ok"

    model = ScriptedModel([ToolCall("hold", {}), "done"])
    agent = Agent(name="a", model=model, tools=[hold])
    async with traced.runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            async for event in stream:
                if isinstance(event, ToolCallStarted):
                    await trio.testing.wait_all_tasks_blocked()
                    gauges = {
                        name: [point.value for point in points]
                        for name, points in traced.metrics().items()
                        if name.startswith("trio_agents.")
                    }
                    assert gauges["trio_agents.sessions"] == [1]
                    assert gauges["trio_agents.runs"] == [1]
                    assert gauges["trio_agents.events.buffered"] == [0]
                    assert gauges["trio_agents.events.dropped"] == [0]
                    release.set()
        result = stream.result
    found = traced.metrics()
    tokens = {dict(point.attributes)["gen_ai.token.type"]: point for point in found["gen_ai.client.token.usage"]}
    assert tokens["input"].sum == result.usage.input_tokens
    assert tokens["output"].sum == result.usage.output_tokens
    assert tokens["input"].count == 2
    attributes = dict(tokens["input"].attributes)
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "trio_agents.scripted"
    assert attributes["gen_ai.request.model"] == "scripted"
    (duration,) = found["gen_ai.client.operation.duration"]
    assert duration.count == 2
    assert "error.type" not in dict(duration.attributes)
    # The runtime has exited: the gauges count nothing.
    assert [point.value for point in found["trio_agents.sessions"]] == [0]


async def test_tracing_absent_opentelemetry_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``opentelemetry-api`` a runtime runs as ever, and asking for a provider is a clear error."""
    from runtime import _tracing

    monkeypatch.setattr(_tracing, "_otel", [None])
    assert _tracing.open_tracing(None, None, content=False) is None
    headers: dict[str, str] = {}
    _tracing.inject(headers)
    assert headers == {}
    assert _tracing.extracted({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) is None
    agent = Agent(name="a", model=ScriptedModel(["hi"]))
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        assert runtime._tracing is None
        assert (await session.ask("hello")).output == "hi"
    with pytest.raises(ImportError, match="otel"):
        async with open_runtime(tracer_provider=TracerProvider()):
            pass


async def test_tracing_global_proxy_providers_trace_nothing() -> None:
    """With the global providers and no SDK configured, runs are not traced at all (not even no-op spans)."""
    agent = Agent(name="a", model=ScriptedModel(["hi"]))
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        assert runtime._tracing is not None
        assert not runtime._tracing.active()
        assert (await session.ask("hello")).output == "hi"


def test_tracing_provider_names_follow_the_conventions() -> None:
    """Models name their provider as the GenAI conventions spell it."""
    from agents.models import AnthropicModel, GeminiModel, OpenAIChatModel

    assert provider_name(OpenAIChatModel("gpt-4o-mini", api_key="k")) == "openai"
    assert provider_name(AnthropicModel("claude-sonnet-4-5", api_key="k")) == "anthropic"
    assert provider_name(GeminiModel("gemini-2.5-flash", api_key="k")) == "gcp.gemini"
    assert provider_name(ScriptedModel([])) == "trio_agents.scripted"
    assert provider_name(resolve_model("openai-responses:gpt-4o-mini")) == "openai"
    assert provider_name(resolve_model("mistral:mistral-large-latest")) == "mistral_ai"


async def test_tracing_global_provider_set_later_is_used(traced: Traced, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime on the global providers traces the runs that start once a global SDK provider is set."""
    from opentelemetry import trace

    agent = Agent(name="a", model=ScriptedModel(["one", "two"]))
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        await session.ask("first")
        # What trace.set_tracer_provider() does, undone after the test (it can be called once per process).
        monkeypatch.setattr(trace, "_TRACER_PROVIDER", traced.tracer_provider)
        await session.ask("second")
    run = traced.one("invoke_agent a")
    assert attrs_of(run)["trio_agents.run.id"] == f"{session.id}-r2"
    assert [span.name for span in traced.spans] == ["chat scripted", "invoke_agent a"]


def test_tracing_without_opentelemetry_installed_imports_nothing() -> None:
    """In a process where ``opentelemetry`` cannot be imported, runs work, served-mode clients too, and the
    runtime tried the import once only."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
sys.modules["opentelemetry"] = None  # what an environment without the extra looks like to an import
import trio
from agents import Agent, ScriptedModel
from runtime import open_runtime, _tracing


async def main() -> None:
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=ScriptedModel(["hi"]))) as session:
        assert runtime._tracing is None
        print((await session.ask("hello")).output)
    headers = {}
    _tracing.inject(headers)
    assert headers == {} and _tracing._otel == [None]


trio.run(main)
print(sorted(name for name in sys.modules if name.startswith("opentelemetry.")))
"""
    root = Path(__file__).resolve().parent.parent.parent
    env = {**os.environ, "PYTHONWARNINGS": "error", "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hi\n[]\n"


async def test_tracing_sync_tool_spans_nest_under_execute_tool(traced: Traced) -> None:
    """A span a sync tool opens in its worker thread is a child of the tool call's span (Trio copies the
    context into the thread)."""
    tracer = traced.tracer_provider.get_tracer("tool")

    @tool
    def lookup(key: str) -> str:
        """Looks a key up."""
        with tracer.start_as_current_span("database query"):
            return key.upper()

    agent = Agent(name="a", model=ScriptedModel([ToolCall("lookup", {"key": "k"}), "K"]), tools=[lookup])
    async with traced.runtime() as runtime, runtime.open_session(agent) as session:
        await session.ask("go")
    assert parent_of(traced.one("database query")) == span_id(traced.one("execute_tool lookup"))


async def test_tracing_durable_run_is_traced_as_any(traced: Traced, tmp_path: Path) -> None:
    """A run of a session in a store has the same spans (its tool calls go through the journal)."""
    from runtime import SQLiteStore

    agent = Agent(name="a", model=ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "3"]), tools=[add])
    async with (
        open_runtime(store=SQLiteStore(tmp_path / "s.db"), tracer_provider=traced.tracer_provider) as runtime,
        runtime.open_session(agent, session_id="s1") as session,
    ):
        assert (await session.ask("go")).output == "3"
    run = traced.one("invoke_agent a")
    assert attrs_of(run)["gen_ai.conversation.id"] == "s1"
    assert parent_of(traced.one("execute_tool add")) == span_id(run)
    assert len(traced.named("chat scripted")) == 2


async def test_tracing_fallback_model_names_the_model_that_answered(traced: Traced) -> None:
    """With a FallbackModel, a chat span's ``gen_ai.request.model`` is the first model's and its
    ``gen_ai.response.model`` the one that answered."""
    from agents import FallbackModel, ModelConnectionError

    def unreachable(request: object) -> str:
        raise ModelConnectionError("first: cannot reach it")

    model = FallbackModel(ScriptedModel([unreachable], name="first"), ScriptedModel(["hi"], name="second"))
    async with traced.runtime() as runtime, runtime.open_session(Agent(name="a", model=model)) as session:
        assert (await session.ask("go")).output == "hi"
    chat = attrs_of(traced.one("chat first"))
    assert chat["gen_ai.request.model"] == "first"
    assert chat["gen_ai.response.model"] == "second"
    (duration,) = traced.metrics()["gen_ai.client.operation.duration"]
    assert dict(duration.attributes)["gen_ai.response.model"] == "second"


class _RaisingProcessor(SpanProcessor):
    """A span processor with a bug: it raises in ``on_start`` or ``on_end`` of spans whose name starts with
    ``prefix``."""

    def __init__(self, hook: str, prefix: str) -> None:
        self.hook = hook
        self.prefix = prefix

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.hook == "on_start" and span.name.startswith(self.prefix):
            raise RuntimeError(f"span processor bug in on_start of {span.name!r}")

    def on_end(self, span: ReadableSpan) -> None:
        if self.hook == "on_end" and span.name.startswith(self.prefix):
            raise RuntimeError(f"span processor bug in on_end of {span.name!r}")


@pytest.mark.parametrize("prefix", ["invoke_agent", "chat", "execute_tool"])
@pytest.mark.parametrize("hook", ["on_start", "on_end"])
async def test_tracing_a_span_processor_that_raises_never_breaks_a_run_or_its_session(
    traced: Traced, hook: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenTelemetry's SDK does not guard its processors: one that raises was a run's failure (a chat's or a
    tool's span), or, on a run's own span, the session's and the runtime's. It is logged; runs go on."""
    traced.tracer_provider.add_span_processor(_RaisingProcessor(hook, prefix))
    agent = Agent(name="calc", model=ScriptedModel([ToolCall("add", {"a": 2, "b": 3}), "5"]), tools=[add])
    async with traced.runtime() as runtime, runtime.open_session(agent) as session:
        assert (await session.ask("2 + 3?")).output == "5"
        assert not session.closed
    assert f"span processor bug in {hook}" in caplog.text
    assert "the telemetry failed" in caplog.text
