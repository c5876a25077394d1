"""The events a run streams to its consumer, in the order they happen.

Every run's stream starts with :class:`RunStarted` and ends with exactly one
:class:`RunFinished`, on every path, including cancellation. A run cancelled
while it waited for its turn (behind another run of its session) never
started: its stream is that one ``RunFinished("cancelled")``.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias, get_args

import attrs

from agents._messages import FinishReason as FinishReason, StopReason as StopReason, text_init as _text_init

FINISH_REASONS: Final[frozenset[str]] = frozenset(get_args(FinishReason))
"""Every :data:`FinishReason`, for checking a reason read from elsewhere (JSON, a peer)."""


STOP_REASONS: Final[frozenset[str]] = frozenset(get_args(StopReason))
"""Every :data:`StopReason`."""


@attrs.frozen
class RunStarted:
    """The run has begun; it holds the session's run slot."""

    run_id: str
    resumes: str | None = None
    """The run this one continues (``Session.resume``: an interrupted run waiting for an answer), if any."""


@_text_init
@attrs.frozen
class TextDelta:
    """A piece of the model's answer."""

    text: str


@_text_init
@attrs.frozen
class ReasoningDelta:
    """A piece of the model's reasoning."""

    text: str


@attrs.frozen
class ToolCallStarted:
    """A tool call is about to run (all calls of a turn are announced in call order)."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    """The arguments as the model sent them (``{}`` if they were not a JSON object)."""


@attrs.frozen
class ToolCallDelta:
    """A piece of a tool call's arguments, as the model writes them (JSON text, not yet valid).

    ``ToolCallStarted`` follows with the whole, parsed arguments. ``name``
    is what the model has sent of the name so far (usually all of it).
    """

    call_id: str
    name: str
    arguments_delta: str


@attrs.frozen
class ToolProgress:
    """A running tool reports how far it got (``ToolContext.report_progress``).

    Best-effort: when the stream is full it is dropped (and counted in
    ``RunResult.progress_dropped``), never blocking the tool.
    """

    call_id: str
    progress: float
    total: float | None = None
    """What ``progress`` counts up to, if known."""
    message: str | None = None


@attrs.frozen
class ToolCallFinished:
    """A tool call ended: ``result`` is set on success, ``error`` on failure."""

    call_id: str
    name: str
    result: Any
    """What the tool returned (``None`` on failure)."""
    error: str | None = None
    """What went wrong, as the model will see it; ``None`` on success."""


@attrs.frozen
class ServerToolUse:
    """A tool the provider ran itself (e.g. web search); the runtime does not run it."""

    call_id: str
    name: str
    input: dict[str, Any]


@attrs.frozen
class Usage:
    """Tokens used by one model call, as its provider counts them."""

    input_tokens: int
    """The provider's own input count: OpenAI's ``prompt_tokens`` includes cached tokens, Anthropic's
    ``input_tokens`` excludes cache reads and writes (the cache counts are beside it)."""
    output_tokens: int
    cache_read_tokens: int = 0
    """Input tokens read from the provider's prompt cache."""
    cache_write_tokens: int = 0
    """Input tokens written to the provider's prompt cache (Anthropic)."""
    reasoning_tokens: int = 0
    """Output tokens spent reasoning, when the provider says; part of ``output_tokens``."""


@attrs.frozen
class ModelStopped:
    """One model response ended, and why: ``max_tokens`` means the answer was cut off."""

    reason: StopReason
    raw: str | None = None
    """The provider's own value (``"length"``, ``"stop_sequence"`` ...), if it sent one."""


@attrs.frozen
class ModelFallback:
    """A :class:`~agents.FallbackModel`'s model was unavailable before it answered; the next one is tried.

    The ``next`` of the last one in a model call is the model that answered
    (no ``ModelFallback``: its first model did). When the last model fails
    too, the run ends with an ``ErrorEvent`` of kind ``"model"``.
    """

    failed: str
    """The model that failed, by name (``"openai:gpt-4o-mini"``)."""
    error: str
    """Why it failed."""
    next: str
    """The model tried now, by name."""


@attrs.frozen
class Refusal:
    """The model refused to answer; the run ends with ``RunFinished("refusal")``."""

    text: str
    """The refusal as the model wrote it (may be empty when the provider gives no text)."""


@attrs.frozen
class OutputDelta:
    """The typed output as parsed so far, while the model writes it (``Agent(output_type=...)``).

    ``partial`` is plain JSON data (dicts, lists, strings ...) from partial
    parsing: fields still missing are absent, the last string may be cut
    short, and a number shows only once it is whole (``1`` of ``1999`` is
    never sent). Sent at a bounded rate, and only when it changed; the validated
    value follows in :class:`FinalOutput`.
    """

    partial: Any


@attrs.frozen
class FinalOutput:
    """The run's validated typed output (also ``RunResult.output``), just before ``RunFinished("completed")``."""

    output: Any


@attrs.frozen
class CustomEvent:
    """Base class of events a tool or hook sends with ``await ctx.emit(event)``.

    Subclass it as a frozen attrs class; its fields must not be named
    ``type`` or ``name`` (the wire form uses those). Served, it travels as
    ``{"type": "CustomEvent", "name": <class name>, <fields>...}``, so a
    user's class is never mistaken for a built-in event.

    Example::

        @attrs.frozen
        class Deployed(CustomEvent):
            url: str

        await ctx.emit(Deployed("https://example.com"))
    """


@attrs.frozen
class ErrorEvent:
    """Something went wrong; a :class:`RunFinished` with reason ``error``, ``timeout`` or ``usage_limit`` follows.

    ``kind`` is one of ``"model"`` (the model failed or reported an error),
    ``"toolset"`` (a toolset could not be opened), ``"hook"`` (a hook
    raised), ``"instructions"`` (the instructions callable raised),
    ``"output"`` (the typed output failed validation after every retry),
    ``"usage_limit"`` (a :class:`~agents.UsageLimits` limit was crossed),
    ``"timeout"`` (``run_timeout`` or ``model_idle_timeout``), ``"store"``
    (a durable session's store could not write the run's checkpoint), or
    ``"internal"`` (a bug in trio-agents; please report it).
    """

    kind: str
    message: str


@attrs.frozen
class ElicitationRequest:
    """A tool asks the human; answer with ``await stream.respond(id, action, content)``."""

    id: str
    message: str
    schema: dict[str, Any] | None
    """The JSON schema an accepted answer must match (``None``: anything)."""
    agent: str
    """The agent whose tool asks."""


@attrs.frozen
class AgentSwitched:
    """Work moved from one agent to another: a sub-agent started (or ended, and back)."""

    from_agent: str
    to_agent: str


@attrs.frozen
class SubAgentEvent:
    """An event of a sub-agent's nested run, forwarded into its parent's stream.

    Its own ``RunFinished`` arrives wrapped too, so the consumer sees exactly
    one top-level ``RunFinished``. Nested sub-agents nest the wrapping.
    """

    agent: str
    event: Event

    def innermost(self) -> tuple[tuple[str, ...], Event]:
        """The chain of agent names down to the wrapped event, and that event."""
        path = [self.agent]
        event = self.event
        while isinstance(event, SubAgentEvent):
            path.append(event.agent)
            event = event.event
        return tuple(path), event


@attrs.frozen
class RunFinished:
    """The run is over; always the last event, exactly once."""

    reason: FinishReason
    message: str | None = None
    """Extra detail, e.g. the :class:`~agents.StopRun` message for ``hook_stop``."""


Event: TypeAlias = (
    RunStarted
    | TextDelta
    | ReasoningDelta
    | ToolCallDelta
    | ToolCallStarted
    | ToolProgress
    | ToolCallFinished
    | Usage
    | ServerToolUse
    | ModelStopped
    | ModelFallback
    | Refusal
    | OutputDelta
    | FinalOutput
    | CustomEvent
    | ErrorEvent
    | ElicitationRequest
    | AgentSwitched
    | SubAgentEvent
    | RunFinished
)
"""Any event a :class:`~runtime.RunStream` yields."""
