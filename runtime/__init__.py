"""The structured-concurrency core: runtimes, sessions, runs and their events.

Every task has an owner: a run lives in its session's nursery, a session in
its runtime's, and leaving an ``async with`` block cancels and joins what it
owns.
"""

from . import events as events
from ._bridge import ElicitationBridge as ElicitationBridge
from ._exceptions import (
    AgentRuntimeError as AgentRuntimeError,
    ClosedRunStreamError as ClosedRunStreamError,
    ClosedSessionError as ClosedSessionError,
    ElicitationResponseError as ElicitationResponseError,
    InvalidElicitationResponse as InvalidElicitationResponse,
    ReentrantRunError as ReentrantRunError,
    RunFailedError as RunFailedError,
    UnknownElicitationError as UnknownElicitationError,
)
from ._result import RunResult as RunResult, ToolCallRecord as ToolCallRecord
from ._runtime import Runtime as Runtime, SessionHandle as SessionHandle, open_runtime as open_runtime
from ._session import Session as Session
from ._stream import RunStream as RunStream
