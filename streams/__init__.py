"""What crosses a process boundary: served mode, its clients, and chat channels.

- :func:`open_server` serves an agent over HTTP, SSE and WebSocket, with
  Hypercorn running inside the server's own nursery.
- :func:`open_updates_stream`, :func:`open_workspace_stream` and
  :func:`open_sse_listener` are clients whose block owns its connection;
  :func:`open_remote_session` opens a :class:`RemoteSession`, whose ``serve``
  keeps all three alive for a local session.
- :mod:`streams.channels` connects chat-style channels to a message bus.

``python -m streams serve --agent module:attr --port N`` serves from the shell;
``python -m streams mcp --agent module:attr`` serves the agent as an MCP
server over stdio, as every served runtime does over HTTP at ``/mcp`` (both
with the ``mcp`` extra).
"""

from ._client import (
    SSEListener as SSEListener,
    SSEMessage as SSEMessage,
    Update as Update,
    UpdatesStream as UpdatesStream,
    WorkspaceStream as WorkspaceStream,
    open_sse_listener as open_sse_listener,
    open_updates_stream as open_updates_stream,
    open_workspace_stream as open_workspace_stream,
)
from ._codec import UnknownEvent as UnknownEvent, event_from_json as event_from_json, event_to_json as event_to_json
from ._exceptions import (
    BrokenStreamError as BrokenStreamError,
    ClosedRemoteSessionError as ClosedRemoteSessionError,
    InvalidRequestError as InvalidRequestError,
    InvalidSessionIdError as InvalidSessionIdError,
    ListenerBusyError as ListenerBusyError,
    MalformedMessageError as MalformedMessageError,
    PeerSilentError as PeerSilentError,
    RemoteError as RemoteError,
    SessionExistsError as SessionExistsError,
    StreamClosedError as StreamClosedError,
    StreamError as StreamError,
    TooManySessionsError as TooManySessionsError,
    UnsafeBindError as UnsafeBindError,
    WorkspaceError as WorkspaceError,
)
from ._remote import (
    LISTENERS as LISTENERS,
    Backoff as Backoff,
    ListenerRegistry as ListenerRegistry,
    RemoteEvent as RemoteEvent,
    RemoteSession as RemoteSession,
    RemoteStatistics as RemoteStatistics,
    open_remote_session as open_remote_session,
)
from ._server import (
    DEFAULT_IDLE_TIMEOUT as DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_QUEUED_RUNS as DEFAULT_MAX_QUEUED_RUNS,
    DEFAULT_MAX_SESSIONS as DEFAULT_MAX_SESSIONS,
    SESSION_ID_PATTERN as SESSION_ID_PATTERN,
    ServedSession as ServedSession,
    Server as Server,
    ServerStatistics as ServerStatistics,
    open_server as open_server,
)
from ._workspace import WORKSPACE_TOOLS as WORKSPACE_TOOLS, Workspace as Workspace, WorkspaceChange as WorkspaceChange
from .channels import (
    WebhookChannel as WebhookChannel,
    WebhookStatistics as WebhookStatistics,
    WebSocketChannel as WebSocketChannel,
    WebSocketChannelStatistics as WebSocketChannelStatistics,
)
