"""RunResult: what a finished run produced, for callers that don't stream."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic

import attrs

from agents._agent import OutputT

if TYPE_CHECKING:
    from agents._messages import StopReason

    from .events import ErrorEvent, FinishReason, Usage


@attrs.frozen
class ToolCallRecord:
    """One tool call a run made, and how it ended."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    result: Any
    error: str | None


@attrs.frozen
class RunResult(Generic[OutputT]):
    """The outcome of one run.

    Built from the same state the run streams, so a consumer of
    :meth:`Session.run` can read it from :attr:`RunStream.result` too.
    """

    run_id: str
    output: OutputT | None
    """The answer: with the default ``output_type=str``, the text of the model's last response (a
    ``hook_stop`` run's: the hook's message); with a typed output, the validated value, or ``None`` if
    the run did not complete."""
    reason: FinishReason
    """Why the run ended, as in its ``RunFinished`` event."""
    usage: Usage
    """Tokens used by every model call of the run (its sub-agents' included), summed."""
    tool_calls: tuple[ToolCallRecord, ...]
    """Every tool call made, in the order they finished."""
    error: ErrorEvent | None = None
    """The error that ended the run, if one did."""
    text: str = ""
    """The text of the model's last response (for a typed output: the raw answer, if it was text)."""
    stop_reason: StopReason | None = None
    """Why the model's last response ended (``max_tokens``: it was cut off); ``None`` before any."""
    refusal: str | None = None
    """The model's refusal, when the run ended with ``refusal``."""
    requests: int = 0
    """Model requests made (its sub-agents' included)."""
    progress_dropped: int = 0
    """``ToolProgress`` events dropped because the stream was full (progress never blocks a tool)."""
