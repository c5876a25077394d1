"""Exceptions raised by :mod:`runtime`.

The tree::

    AgentRuntimeError
    ├── ClosedSessionError     the session (or its runtime) was closed
    ├── ClosedRunStreamError   a RunStream used after its block exited, or an emit after its run
    ├── ReentrantRunError      Session.run() called from inside one of its own runs
    ├── NothingToResumeError   Session.resume() with no interrupted run waiting for answers
    ├── SessionNotFoundError   open_session(..., create=False): the store has no such session
    ├── StoreError             a session store failed (runtime._store: its subclasses)
    ├── RunFailedError         Session.ask(): the run ended with "error" or "timeout"
    ├── ClosedBusError         the message bus was closed
    ├── PublishTimeoutError    no room on the bus within the publish's timeout
    ├── ElicitationResponseError   RunStream.respond() could not deliver the answer
    │   ├── UnknownElicitationError   no pending request has that id (or it was answered)
    │   └── InvalidElicitationResponse   bad action, or content that fails the schema
    └── StoreError             a session store failed (defined in _store.py)
        ├── StoreUnavailableError   the database cannot be reached, or a write failed
        ├── StoreCorruptError       the file or database is not a session store
        ├── StoreVersionError       a newer trio-agents wrote it
        ├── SessionOwnedError       another process has the session live
        ├── SessionConflictError    a checkpoint found the session changed or lost under it
        └── StoreRejectedError      the database refused what a session wrote
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._result import RunResult


class AgentRuntimeError(Exception):
    """Root of every exception :mod:`runtime` raises."""


class ClosedSessionError(AgentRuntimeError):
    """The session was closed (by its owner, by idle reaping, or by its runtime exiting)."""


class ClosedRunStreamError(AgentRuntimeError):
    """A :class:`~runtime.RunStream` was read after its ``async with`` block exited, or ``ctx.emit`` was
    called after its run (for a tool's context: its call) had ended."""


class ReentrantRunError(AgentRuntimeError):
    """``Session.run`` was called from inside one of that session's own runs.

    Runs in a session are serialized, so waiting would deadlock; use another
    session (or, later, a sub-agent) instead.
    """


class NothingToResumeError(AgentRuntimeError):
    """``Session.resume`` was called, but no interrupted run of the session waits for answers."""


class SessionNotFoundError(AgentRuntimeError):
    """``open_session``/``start_session`` with ``create=False`` found no session of that id."""


class RunFailedError(AgentRuntimeError):
    """Raised by ``Session.ask`` when the run ended with any reason but ``completed``, ``max_turns``,
    ``hook_stop`` and ``cancelled``: ``error``, ``timeout``, ``refusal``, ``usage_limit``, or one added later.

    Attributes:
        result: What the run produced before it failed (its refusal, stop reason and usage too).
        kind: The failing ``ErrorEvent``'s kind (``"refusal"`` for a refusal).
    """

    def __init__(self, message: str, *, kind: str, result: RunResult[Any]) -> None:
        super().__init__(message)
        self.kind = kind
        self.result = result


class ElicitationResponseError(AgentRuntimeError):
    """``RunStream.respond`` could not deliver the answer; the request (if any) is unchanged."""


class UnknownElicitationError(ElicitationResponseError):
    """No request with that id is pending: it never existed, was answered, or its tool ended."""


class InvalidElicitationResponse(ElicitationResponseError):
    """The answer is not acceptable (unknown action, or content not matching the schema).

    The request stays open: answer it again.
    """


class ClosedBusError(AgentRuntimeError):
    """The message bus was closed: nothing more can be published."""


class PublishTimeoutError(AgentRuntimeError):
    """A publish with a timeout found no room on the bus in time (and was asked to raise)."""
