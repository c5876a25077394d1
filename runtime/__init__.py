"""The structured-concurrency core: runtimes, sessions, runs and their events.

Every task has an owner: a session owns its runs and tasks (each in the
runtime's nursery, inside a cancel scope the session holds), a runtime owns
its sessions, and leaving an ``async with`` block cancels and joins what it
owns.
"""

from . import events as events
from ._bridge import ElicitationBridge as ElicitationBridge
from ._bus import (
    BusStatistics as BusStatistics,
    DirectionStatistics as DirectionStatistics,
    InboundMessage as InboundMessage,
    MessageBus as MessageBus,
    OutboundMessage as OutboundMessage,
    Policy as Policy,
)
from ._exceptions import (
    AgentRuntimeError as AgentRuntimeError,
    ClosedBusError as ClosedBusError,
    ClosedRunStreamError as ClosedRunStreamError,
    ClosedSessionError as ClosedSessionError,
    ElicitationResponseError as ElicitationResponseError,
    InvalidElicitationResponse as InvalidElicitationResponse,
    NothingToResumeError as NothingToResumeError,
    PublishTimeoutError as PublishTimeoutError,
    ReentrantRunError as ReentrantRunError,
    RunFailedError as RunFailedError,
    SessionNotFoundError as SessionNotFoundError,
    UnknownElicitationError as UnknownElicitationError,
)
from ._gateway import (
    Channel as Channel,
    Gateway as Gateway,
    GatewayStatistics as GatewayStatistics,
    open_gateway as open_gateway,
)
from ._handlers import (
    Handler as Handler,
    HandlerStatistics as HandlerStatistics,
    Overflow as Overflow,
    StreamHandler as StreamHandler,
)
from ._postgres import PostgresStore as PostgresStore
from ._resources import SessionResource as SessionResource
from ._result import RunResult as RunResult, ToolCallRecord as ToolCallRecord
from ._runtime import Runtime as Runtime, SessionHandle as SessionHandle, open_runtime as open_runtime
from ._session import Session as Session
from ._sqlite import SQLiteStore as SQLiteStore
from ._store import (
    Checkpoint as Checkpoint,
    EventRow as EventRow,
    PendingRow as PendingRow,
    RunRow as RunRow,
    SessionConflictError as SessionConflictError,
    SessionOwnedError as SessionOwnedError,
    SessionSnapshot as SessionSnapshot,
    SessionStore as SessionStore,
    StoreCorruptError as StoreCorruptError,
    StoreError as StoreError,
    StoreRejectedError as StoreRejectedError,
    StoreUnavailableError as StoreUnavailableError,
    StoreVersionError as StoreVersionError,
)
from ._stream import RunStream as RunStream
