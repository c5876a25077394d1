"""RunResult: what a finished run produced, for callers that don't stream."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
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
class RunResult:
    """The outcome of one run.

    Built from the same state the run streams, so a consumer of
    :meth:`Session.run` can read it from :attr:`RunStream.result` too.
    """

    run_id: str
    output: str
    """The text of the model's last response."""
    reason: FinishReason
    """Why the run ended, as in its ``RunFinished`` event."""
    usage: Usage
    """Tokens used by every model call of the run, summed."""
    tool_calls: tuple[ToolCallRecord, ...]
    """Every tool call made, in the order they finished."""
    error: ErrorEvent | None = None
    """The error that ended the run, if one did."""
