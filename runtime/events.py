"""The events a run streams to its consumer, in the order they happen.

Every run's stream starts with :class:`RunStarted` and ends with exactly one
:class:`RunFinished`, on every path, including cancellation.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias, get_args

import attrs

FinishReason: TypeAlias = Literal["completed", "max_turns", "hook_stop", "timeout", "error", "cancelled"]
"""Why a run ended."""

FINISH_REASONS: Final[frozenset[str]] = frozenset(get_args(FinishReason))
"""Every :data:`FinishReason`, for checking a reason read from elsewhere (JSON, a peer)."""


@attrs.frozen
class RunStarted:
    """The run has begun; it holds the session's run slot."""

    run_id: str


@attrs.frozen
class TextDelta:
    """A piece of the model's answer."""

    text: str


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
    """Tokens used by one model call."""

    input_tokens: int
    output_tokens: int


@attrs.frozen
class ErrorEvent:
    """Something went wrong; a :class:`RunFinished` with reason ``error`` or ``timeout`` follows.

    ``kind`` is one of ``"model"`` (the model failed or reported an error),
    ``"toolset"`` (a toolset could not be opened), ``"hook"`` (a hook
    raised), ``"instructions"`` (the instructions callable raised),
    ``"timeout"`` (``run_timeout`` or ``model_idle_timeout``), or
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
    | ToolCallStarted
    | ToolCallFinished
    | Usage
    | ServerToolUse
    | ErrorEvent
    | ElicitationRequest
    | AgentSwitched
    | SubAgentEvent
    | RunFinished
)
"""Any event a :class:`~runtime.RunStream` yields."""
