"""OpenTelemetry spans and metrics of runs, by the GenAI semantic conventions (an optional extra).

The runtime holds one :class:`Tracing` when ``opentelemetry-api`` can be
imported (``pip install 'trio-agents[otel]'``), else ``None``: without it
nothing is imported and the loop pays one attribute check per run. A run
asks :meth:`Tracing.active` once, as it starts: with the global providers and
no SDK configured (OpenTelemetry's proxy providers, which record nothing) the
run is not traced at all, so an unconfigured process pays next to nothing.

Spans follow the ownership tree: ``invoke_agent {agent}`` per run, ``chat
{model}`` per model request and ``execute_tool {tool}`` per tool call inside
it, a sub-agent's ``invoke_agent`` inside the ``execute_tool`` of the transfer
call that started it. Each span is made current (an OpenTelemetry context
attached for its lifetime, in the task that runs it); Trio copies context
variables into the tasks a task starts, so a tool's task, a worker thread of a
sync tool, and a run started from inside a user's own span all nest where
they belong.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any, Final

from agents._content import content_text
from agents.models._fallback import model_name

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
    from types import ModuleType

    from opentelemetry.context import Context
    from opentelemetry.metrics import Histogram, Meter, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from agents import Message, ToolCallChunk
    from agents._content import Content
    from agents.models import Model

    from ._runtime import Runtime

INSTRUMENTATION_NAME: Final = "trio-agents"
"""The instrumentation scope of every span and metric (its tracer's and meter's name)."""

TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
"""``gen_ai.client.token.usage`` buckets, as the GenAI metric conventions advise."""

DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
"""``gen_ai.client.operation.duration`` buckets (seconds), as the GenAI metric conventions advise."""

# The GenAI conventions' provider names, for the providers trio-agents' models name themselves.
_PROVIDERS: Final = {
    "openai-responses": "openai",
    "mistral": "mistral_ai",
    "gemini": "gcp.gemini",
    "google": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
}

_MODEL: Final = "trio_agents.model"  # the model of a chat's measured attributes, between start_chat and end_chat

_ENDED_WELL: Final = frozenset({"completed", "max_turns", "hook_stop"})
"""Run reasons that are not an error of the ``invoke_agent`` span."""

_TOOL_ERRORS_WITHOUT_CONTENT: Final = frozenset({"timeout", "cancelled"})
"""The ``error.type`` of tool failures whose message the loop writes quoting nothing of the call; any
other's is the tool's own (an exception's message, a sub-agent's failure): its result, content.
Invalid arguments' message quotes the call (pydantic's locations hold the model's keys, a validator's
message its values): without content, the span only says they were invalid."""

_otel: list[ModuleType | None] = []  # the cached result of the first import attempt

logger = logging.getLogger("runtime")


def _opentelemetry() -> ModuleType | None:
    """``opentelemetry.trace`` if ``opentelemetry-api`` is installed, else ``None`` (tried once)."""
    if not _otel:
        try:
            from opentelemetry import trace
        except ImportError:
            _otel.append(None)
        else:
            _otel.append(trace)
    return _otel[0]


def open_tracing(
    tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None, *, content: bool
) -> Tracing | None:
    """What a runtime traces with: ``None`` when ``opentelemetry-api`` is not installed.

    Raises:
        ImportError: a provider was given, but ``opentelemetry-api`` cannot be imported.
    """
    if _opentelemetry() is None:
        if tracer_provider is not None or meter_provider is not None:
            raise ImportError("tracer_provider/meter_provider need opentelemetry-api: pip install 'trio-agents[otel]'")
        return None
    return Tracing(tracer_provider, meter_provider, content=content)


class Tracing:
    """A runtime's tracer, meter and instruments; the loop calls it only for a run that is traced."""

    __slots__ = (
        "_duration",
        "_explicit",
        "_instruments",
        "_tokens",
        "_tracer",
        "content",
    )

    def __init__(
        self, tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None, *, content: bool
    ) -> None:
        from opentelemetry import metrics, trace

        self.content = content
        """Whether messages, instructions, tool arguments and results are recorded (they can hold secrets)."""
        # A provider given explicitly is always used; the global ones only once an SDK stands behind them.
        self._explicit = tracer_provider is not None or meter_provider is not None
        tracer_source = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        meter_source = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        self._tracer: Tracer = tracer_source.get_tracer(INSTRUMENTATION_NAME)
        self._instruments = _instruments_of(meter_source)
        self._tokens = self._instruments.tokens
        self._duration = self._instruments.duration

    def active(self) -> bool:
        """Whether a run starting now is traced: a provider was given, or a global one is an SDK's (set
        since, maybe: the runtime's tracer and meter then forward to it)."""
        return self._explicit or _global_provider_set()

    def watch(self, runtime: Runtime) -> None:
        """Count the runtime in the gauges until :meth:`unwatch` (they are read when a metric reader collects)."""
        self._instruments.runtimes.add(runtime)

    def unwatch(self, runtime: Runtime) -> None:
        """The runtime has exited: the gauges forget it."""
        self._instruments.runtimes.discard(runtime)

    # -- spans --------------------------------------------------------------

    def start(self, name: str, attributes: Mapping[str, Any], *, client: bool = False) -> tuple[Span, object]:
        """Start a span as a child of the current one and make it current: ``(span, token)`` for :meth:`end`."""
        from opentelemetry import context, trace

        kind = trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL
        span: Span = trace.INVALID_SPAN
        with _telemetry_errors(f"starting span {name!r}"):
            span = self._tracer.start_span(name, kind=kind, attributes=attributes)
        return span, context.attach(trace.set_span_in_context(span))

    def end(self, span: Span, token: object, error: str | None = None, description: str | None = None) -> None:
        """Make the span's parent current again (same task) and end it, as an error if ``error`` is given."""
        from opentelemetry import context, trace

        context.detach(token)  # type: ignore[arg-type]
        with _telemetry_errors("ending a span"):
            if error is not None:
                span.set_attribute("error.type", error)
                span.set_status(trace.Status(trace.StatusCode.ERROR, description or error))
            span.end()

    # -- invoke_agent -------------------------------------------------------

    def start_agent(
        self, agent: str, model: Model, run_id: str, conversation: str | None, user_input: Content | None
    ) -> tuple[Span, object]:
        """The ``invoke_agent {agent}`` span of a run (a sub-agent's: inside its transfer call's span)."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "gen_ai.provider.name": provider_name(model),
            "gen_ai.request.model": request_model(model),
            "trio_agents.run.id": run_id,
        }
        if conversation is not None:
            attributes["gen_ai.conversation.id"] = conversation
        if self.content and user_input is not None:
            attributes["gen_ai.input.messages"] = _dumps([_message("user", _parts(user_input))])
        return self.start(f"invoke_agent {agent}", attributes)

    def end_agent(
        self,
        span: Span,
        token: object,
        *,
        reason: str,
        error: str | None,
        message: str | None,
        input_tokens: int,
        output_tokens: int,
        output: str | None,
    ) -> None:
        """End a run's span: its reason, its usage, an error status unless it ended well."""
        with _telemetry_errors("recording a run's span"):
            span.set_attribute("trio_agents.run.reason", reason)
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
            if self.content and output is not None:
                span.set_attribute("gen_ai.output.messages", _dumps([_message("assistant", _parts(output))]))
        if reason in _ENDED_WELL:
            self.end(span, token)
        else:
            self.end(span, token, error or reason, message)

    # -- chat ---------------------------------------------------------------

    def start_chat(
        self, model: Model, instructions: str, history: Iterable[Message], tools: Iterable[Any]
    ) -> tuple[Span, object, dict[str, Any], float]:
        """The ``chat {model}`` span of one model request: ``(span, token, metric attributes, start time)``."""
        provider, name = provider_name(model), request_model(model)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": name,
        }
        if self.content:
            if instructions:
                attributes["gen_ai.system_instructions"] = _dumps([{"type": "text", "content": instructions}])
            attributes["gen_ai.input.messages"] = _dumps([_history_message(message) for message in history])
            attributes["gen_ai.tool.definitions"] = _dumps(
                [{"type": "function", "name": spec.name, "description": spec.description} for spec in tools]
            )
        span, token = self.start(f"chat {name}", attributes, client=True)
        measured: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": name,
        }
        measured[_MODEL] = model  # taken out by end_chat
        return span, token, measured, time.perf_counter()

    def end_chat(
        self,
        span: Span,
        token: object,
        measured: dict[str, Any],
        started: float,
        *,
        stop: str | None,
        input_tokens: int,
        output_tokens: int,
        answered_by: str | None = None,
        text: str | None = None,
        calls: Iterable[ToolCallChunk] = (),
        error: str | None = None,
        description: str | None = None,
    ) -> None:
        """End a model request's span, and record its duration and tokens.

        ``answered_by``: the name of the model a :class:`~agents.FallbackModel` moved on to last (its
        provider and model name are then the response's).
        """
        with _telemetry_errors("recording a model request's span"):
            self._record_chat(
                span, measured, started, stop, input_tokens, output_tokens, answered_by, text, calls, error
            )
        self.end(span, token, error, description)

    def _record_chat(
        self,
        span: Span,
        measured: dict[str, Any],
        started: float,
        stop: str | None,
        input_tokens: int,
        output_tokens: int,
        answered_by: str | None,
        text: str | None,
        calls: Iterable[ToolCallChunk],
        error: str | None,
    ) -> None:
        model = measured.pop(_MODEL)
        response_model = measured["gen_ai.request.model"]
        if answered_by is not None:
            for candidate in getattr(model, "models", ()):
                if model_name(candidate) == answered_by:
                    response_model = request_model(candidate)
                    measured["gen_ai.provider.name"] = provider_name(candidate)
                    span.set_attribute("gen_ai.provider.name", measured["gen_ai.provider.name"])
                    break
        span.set_attribute("gen_ai.response.model", response_model)
        measured["gen_ai.response.model"] = response_model
        if stop is not None:
            span.set_attribute("gen_ai.response.finish_reasons", (stop,))
        if error is None or input_tokens or output_tokens:  # tokens spent before an error still count
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
            self._tokens.record(input_tokens, {**measured, "gen_ai.token.type": "input"})
            self._tokens.record(output_tokens, {**measured, "gen_ai.token.type": "output"})
        if error is None:
            if self.content:
                parts: list[dict[str, Any]] = _parts(text) if text else []
                parts.extend(_call_part(call) for call in calls)
                output = _message("assistant", parts)
                if stop is not None:
                    output["finish_reason"] = stop
                span.set_attribute("gen_ai.output.messages", _dumps([output]))
        else:
            measured["error.type"] = error
        self._duration.record(time.perf_counter() - started, measured)

    # -- execute_tool -------------------------------------------------------

    def start_tool(self, name: str, call_id: str, arguments: Any) -> tuple[Span, object]:
        """The ``execute_tool {tool}`` span of one tool call."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.type": "function",
        }
        if self.content:
            attributes["gen_ai.tool.call.arguments"] = _dumps(arguments)
        return self.start(f"execute_tool {name}", attributes)

    def end_tool(
        self, span: Span, token: object, *, error: str | None, description: str | None, result: Content | None
    ) -> None:
        """End a tool call's span: an error status (``error.type``) if it failed, described by the error
        result only if it quotes nothing of the call or content is recorded."""
        if self.content and result is not None and error is None:
            with _telemetry_errors("recording a tool call's span"):
                span.set_attribute("gen_ai.tool.call.result", content_text(result))
        if not self.content and error == "invalid_arguments":
            description = "invalid arguments"
        elif not self.content and error not in _TOOL_ERRORS_WITHOUT_CONTENT:
            description = None
        self.end(span, token, error, description)


_GAUGES: Final = (
    ("trio_agents.sessions", "{session}", "Sessions open in the runtime."),
    ("trio_agents.runs", "{run}", "Runs started and not yet finished (waiting for their session or running)."),
    ("trio_agents.events.buffered", "{event}", "Events buffered for the stream handlers of open sessions."),
    ("trio_agents.events.dropped", "{event}", "Events the stream handlers of open sessions dropped (their overflow)."),
)


def _global_provider_set() -> bool:
    """Whether a global tracer or meter provider was set (else OpenTelemetry's proxies, which record nothing).

    Asked once per run, so it reads the module globals that the API's getters
    read (they would look the environment up each time); the getters were
    called once already (``Tracing()``), which sets a provider that the
    environment names.
    """
    if _globals:
        trace, metrics = _globals
        return trace._TRACER_PROVIDER is not None or metrics._METER_PROVIDER is not None
    from opentelemetry import trace as trace_api
    from opentelemetry.metrics import _internal as metrics_api

    if hasattr(trace_api, "_TRACER_PROVIDER") and hasattr(metrics_api, "_METER_PROVIDER"):
        _globals.extend((trace_api, metrics_api))
        return _global_provider_set()
    # An API that moved them: the public way.
    return not isinstance(trace_api.get_tracer_provider(), trace_api.ProxyTracerProvider) or (
        type(metrics_api.get_meter_provider()).__name__ != "_ProxyMeterProvider"
    )


_globals: list[Any] = []  # opentelemetry.trace and opentelemetry.metrics._internal, once found to hold them


class _Instruments:
    """A meter's instruments: made once per meter provider (the SDK keeps the first of a name), shared by
    every runtime tracing to it; its gauges add up the runtimes alive."""

    __slots__ = ("__weakref__", "duration", "gauges", "runtimes", "tokens")

    def __init__(self, meter: Meter) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        self.runtimes: set[Runtime] = set()
        """The runtimes open now that trace to this provider."""
        self.tokens: Histogram = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )
        self.duration: Histogram = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        runtimes = self.runtimes  # not self: the callbacks would keep the instruments alive in a cycle

        def observe(index: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
            def callback(options: CallbackOptions) -> Iterable[Observation]:
                # An SDK's periodic reader calls this from a thread of its own: tuple() copies the set in
                # one step (iterating it would fail if a runtime opened meanwhile).
                total = 0
                for runtime in tuple(runtimes):
                    if not runtime._closed:
                        total += runtime_load(runtime)[index]
                return (Observation(total),)

            return callback

        self.gauges = [
            meter.create_observable_gauge(name, callbacks=[observe(index)], unit=unit, description=description)
            for index, (name, unit, description) in enumerate(_GAUGES)
        ]


_instruments: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()


def _instruments_of(provider: MeterProvider) -> _Instruments:
    instruments = _instruments.get(provider)
    if instruments is None:
        instruments = _instruments[provider] = _Instruments(provider.get_meter(INSTRUMENTATION_NAME))
    return instruments


def runtime_load(runtime: Runtime) -> tuple[int, int, int, int]:
    """``(sessions, runs, buffered events, dropped events)`` of a runtime now, the gauges' values."""
    runs = buffered = dropped = 0
    sessions = runtime.sessions
    for session in sessions:
        session_runs, session_buffered, session_dropped = session._load()
        runs += session_runs
        buffered += session_buffered
        dropped += session_dropped
    return len(sessions), runs, buffered, dropped


def failure(exc: BaseException, what: str) -> tuple[str, str]:
    """The ``error.type`` and description of what ended ``what`` (``"the run"``): ``cancelled`` for a
    cancellation, even one a nursery's group carries, else the exception's class."""
    import trio

    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(trio.Cancelled)
        if rest is None:
            return "cancelled", f"{what} was cancelled"
    elif isinstance(exc, trio.Cancelled):
        return "cancelled", f"{what} was cancelled"
    return type(exc).__qualname__, str(exc) or type(exc).__qualname__


def provider_name(model: Model) -> str:
    """The ``gen_ai.provider.name`` of a model: its ``provider`` (``openai``, ``anthropic`` ...), as the
    conventions spell it, or ``trio_agents.<kind>`` for a model of no provider (``ScriptedModel``)."""
    provider = getattr(model, "provider", None)
    if isinstance(provider, str):
        return _PROVIDERS.get(provider, provider)
    models = getattr(model, "models", None)
    if isinstance(models, tuple | list) and models:  # a FallbackModel: its first model's
        return provider_name(models[0])
    return f"trio_agents.{type(model).__name__.removesuffix('Model').lower() or 'model'}"


def request_model(model: Model) -> str:
    """The ``gen_ai.request.model`` of a model: the provider's model name, else the model's name (a
    :class:`~agents.FallbackModel`'s first model's)."""
    name = getattr(model, "model", None)
    if isinstance(name, str):
        return name
    models = getattr(model, "models", None)
    if isinstance(models, tuple | list) and models:
        return request_model(models[0])
    name = getattr(model, "name", None)
    return name if isinstance(name, str) else type(model).__name__


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context to ``headers`` (W3C ``traceparent``, ``tracestate``), if
    ``opentelemetry-api`` is installed and a span is current."""
    if _opentelemetry() is None:
        return
    from opentelemetry import propagate

    propagate.inject(headers)


def extracted(headers: Mapping[str, str]) -> Context | None:
    """The W3C trace context ``headers`` carry (``traceparent``, ``tracestate``), or ``None`` (none, or no
    ``opentelemetry-api``).

    Only those two, whatever the global propagators: a client's ``baggage`` would become the run's, passed on
    to every call it makes (an MCP server's, a provider's) and readable as the run's own.
    """
    if _opentelemetry() is None or "traceparent" not in headers:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(headers)


class attached:
    """``with attached(context):`` makes ``context`` current for the block (nothing if it is ``None``)."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: Context | None) -> None:
        self._context = context
        self._token: object = None

    def __enter__(self) -> None:
        if self._context is not None:
            from opentelemetry import context

            self._token = context.attach(self._context)

    def __exit__(self, *exc_info: object) -> None:
        if self._context is not None:
            from opentelemetry import context

            context.detach(self._token)  # type: ignore[arg-type]


@contextlib.contextmanager
def _telemetry_errors(what: str) -> Iterator[None]:
    """Telemetry never breaks a run: an error of the SDK's (a span processor's ``on_start`` or ``on_end``, a
    metric view's) is logged, and the run goes on (untraced where it failed)."""
    try:
        yield
    except Exception:
        logger.exception("trio-agents: the telemetry failed %s; the run goes on", what)


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (ValueError, RecursionError):
        return json.dumps(str(value))


def _message(role: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": role, "parts": parts}


def _parts(content: Content) -> list[dict[str, Any]]:
    """Content as the conventions' message parts: text parts (other parts by their kind only)."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    return [
        {"type": "text", "content": part.text} if hasattr(part, "text") else {"type": type(part).__name__}
        for part in content
    ]


def _call_part(call: ToolCallChunk) -> dict[str, Any]:
    arguments = call.arguments
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            pass
    return {"type": "tool_call", "id": call.call_id, "name": call.name, "arguments": arguments}


def _history_message(message: Message) -> dict[str, Any]:
    from agents import AssistantMessage, ToolResultMessage

    if isinstance(message, AssistantMessage):
        parts = _parts(message.text) if message.text else []
        parts.extend(_call_part(call) for call in message.tool_calls)
        return _message("assistant", parts)
    if isinstance(message, ToolResultMessage):
        return _message(
            "tool", [{"type": "tool_call_response", "id": message.call_id, "response": content_text(message.content)}]
        )
    return _message("user", _parts(message.content))
