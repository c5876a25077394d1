"""Served mode: a runtime reachable over HTTP, SSE and WebSocket, with Hypercorn in the runtime's own nursery."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import re
import secrets
import socket
from collections import OrderedDict
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
import trio
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from agents._json import loads_untrusted
from runtime import (
    ClosedSessionError,
    ElicitationResponseError,
    SessionConflictError,
    SessionNotFoundError,
    SessionOwnedError,
    StoreCorruptError,
    StoreRejectedError,
    StoreUnavailableError,
    UnknownElicitationError,
    open_runtime,
)
from runtime._runtime import single_errors
from runtime._session import new_session_id
from runtime._stream import run_waits_for_me
from runtime._tracing import attached as attached_trace, extracted as extracted_trace
from runtime.events import RunFinished

from ._broadcast import Broadcast, Dropped, Subscriber
from ._client import MAX_MESSAGE
from ._codec import content_from_json, dumps, escape_surrogates, event_to_json, utf8
from ._error_shape import JSONResponse, error_response, json_errors
from ._exceptions import (
    InvalidSessionIdError,
    MalformedMessageError,
    SessionExistsError,
    TooManySessionsError,
    WorkspaceError,
)
from ._hypercorn import serve_app
from ._inspect import Inspector
from ._requests import (
    Exposure,
    ExposureGuard,
    RequestRejected,
    bearer_token_matches,
    check_bind,
    check_positive,
    check_token,
    read_body,
)
from ._runlog import RunFollower, RunLog
from ._sse import EventStreamResponse, MessageSource, OpenSource, Refusal
from ._workspace import Workspace, WorkspaceChange
from ._ws_failures import send_close_frames_on_protocol_errors

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

    from opentelemetry.context import Context as TraceContext
    from starlette.requests import HTTPConnection
    from starlette.types import Message, Receive, Scope, Send

    from agents import Agent
    from agents._content import Content
    from runtime import RunStream, Runtime, Session, SessionHandle, SessionStore
    from runtime.events import Event

    from ._mcp import McpEndpoint

logger = logging.getLogger("streams")

KEPT_RUNS: Final = 8
"""Finished runs a client can still subscribe to, per session."""
REPLAY_LIMIT: Final = 10_000
"""Events of one run kept for clients that subscribe late (the oldest go first)."""
DEFAULT_IDLE_TIMEOUT: Final = 900.0
"""Seconds a served session may stay idle (no run, no open stream) before it is closed, by default."""
DEFAULT_MAX_SESSIONS: Final = 1000
"""Served sessions open at once, at most, by default."""
DEFAULT_MAX_QUEUED_RUNS: Final = 16
"""Runs of one served session that may wait for their turn behind its running run, at most, by default."""
DETACHED_DRAIN_TIMEOUT: Final = 5.0
"""Seconds a cancelled run (detached, with its closing session; attached, when its client left) is still read
for what it sends as it ends.

A cancelled run ends promptly; the bound is for one whose tool waits for its own session to close
(``ctx.session.aclose()``), which cannot end before the task reading the run does."""
CLOSING_WAIT: Final = 10.0
"""Seconds ``POST /sessions`` waits for a session of the id it asks for to finish closing, at most."""
SESSION_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A session id a client may choose: 1 to 128 of ``A-Z a-z 0-9 . _ -``, the first a letter or a digit.

Each goes into a URL path as it is (no ``/``, no escapes, never ``.`` or ``..``) and into logs (no
CR or LF)."""
INSPECT_COOKIE: Final = "trio_agents_inspect"
"""The cookie ``POST /inspect/login`` sets: it stands in for the bearer token (see PROTOCOL.md, *Authentication*)."""
KEPT_LOGINS: Final = 64
"""Inspector sign-ins (cookies) a server honours at once; the oldest is forgotten past it."""
_INSPECT_FILES: Final = {"inspect.js": "text/javascript; charset=utf-8", "inspect.css": "text/css; charset=utf-8"}
_INSPECT_DIR: Final = Path(__file__).resolve().parent / "inspect"
_PAGE_HEADERS: Final = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",  # its buttons act: no page may frame it (clickjacking)
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
_GOING_AWAY: Final = 1001
_UNSUPPORTED_DATA: Final = 1003


@attrs.frozen
class ServerStatistics:
    """What :meth:`Server.statistics` returns."""

    sessions: int
    """Served sessions open now (one closing is not: it is gone already)."""
    sse_streams: int
    """SSE responses streaming now (runs and feeds)."""
    websockets: int
    """WebSocket connections open now (updates and workspace)."""
    updates_dropped: int
    """Events dropped for ``updates`` clients too slow to keep up, since the server started."""


class _HTTPError(Refusal):
    def __init__(self, status: int, kind: str, message: str, **extra: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.extra = extra

    def response(self) -> JSONResponse:
        return error_response(self.status, self.kind, str(self), extra=self.extra)


class _BinaryFrame(Exception):
    """A client sent a binary frame where the protocol has text (JSON) only."""


async def _error_response(request: Request, error: Exception) -> Response:
    assert isinstance(error, _HTTPError)
    return error.response()


class ServedSession:
    """A session the server serves: the runtime session, its workspace, its feeds and its runs."""

    def __init__(self, handle: SessionHandle, *, buffer: int, inspector: Inspector | None = None) -> None:
        self.handle = handle
        self._inspector = inspector
        self.workspace = Workspace()
        """The files its runs (``ctx.deps``) and its ``workspace`` clients share."""
        self.updates: Broadcast[dict[str, Any]] = Broadcast(buffer=buffer)
        self.feed: Broadcast[dict[str, Any]] = Broadcast(buffer=buffer)
        self.changes: Broadcast[dict[str, Any]] = Broadcast(buffer=buffer)
        self.runs: OrderedDict[str, RunLog] = OrderedDict()
        self.live: dict[str, RunStream] = {}
        self.state: dict[str, Any] = self._state("idle")
        self._ended: Callable[[ServedSession], None] | None = None  # set while its streams wait for attached runs
        self.workspace.listen(self._workspace_changed)

    @property
    def session(self) -> Session[Any]:
        """The runtime session."""
        return self.handle.session

    @property
    def id(self) -> str:
        """The session's id: its key in :attr:`Server.sessions` and its ``/sessions/{id}`` in URLs."""
        return self.session.id

    @property
    def run_count(self) -> int:
        """Runs started in the session (the ``n`` of its last run id ``<session>-r<n>``), a stored session's
        earlier processes' included; a run cancelled while it waited for its turn counts too."""
        return self.session.run_count

    def notify(self, message: str) -> None:
        """Post ``{"type": "Notice", "message": message}`` on the session's between-run feed.

        The only producer of ``Notice``: the server itself never posts one;
        the program that serves does, to tell whoever watches the session
        something (``examples/serve.py`` announces its shutdown with it).
        Every feed subscriber gets it, even if the session closes right
        after; one too slow to keep up loses its oldest messages instead.

        Example::

            for served in server.sessions.values():
                served.notify("maintenance in 5 minutes")
        """
        self.feed.publish({"type": "Notice", "message": message})

    def describe(self) -> dict[str, Any]:
        """``{"id", "state", "runs", "pending"}``: ``pending`` holds the questions an interrupted run of a
        durable session waits on (``ElicitationRequest`` events); answering one resumes that run."""
        return {
            "id": self.id,
            "state": self.state["state"],
            "runs": self.run_count,
            "pending": [event_to_json(request) for request in self.session.pending],
        }

    def _workspace_changed(self, change: WorkspaceChange) -> None:
        message = {"type": "WorkspaceChanged", "op": change.op, "path": change.path, "source": change.source}
        self.changes.publish(message)
        self.feed.publish(message)

    def _state(self, state: Literal["idle", "running", "closed"], run_id: str | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "SessionState", "state": state}
        if run_id is not None:
            message["run_id"] = run_id
        pending = self.session.pending if state != "closed" else ()
        if pending:  # a durable session's interrupted run waits for these answers
            message["pending"] = [event_to_json(request) for request in pending]
        return message

    def _set_state(self, state: Literal["idle", "running", "closed"], run_id: str | None = None) -> None:
        self.state = self._state(state, run_id)
        self.feed.publish(self.state)
        if self._inspector is not None:
            self._inspector.state(self.id, state)

    def record(self, run_id: str, event: Event) -> dict[str, Any]:
        """Note an event of a run that began: its log, the updates stream, the run count."""
        data = event_to_json(event)
        data["run_id"] = run_id
        log = self.runs[run_id]  # a live run's log is never dropped
        log.append(data)
        self.updates.publish(data)
        if type(event) is RunFinished:
            log.finish()
        if self._inspector is not None:
            self._inspector.record(self.id, run_id, data)
        return data

    def run_begins(self, run_id: str, stream: RunStream) -> None:
        """A run was started: keep its events (forgetting the oldest finished runs past
        :data:`KEPT_RUNS`) and, if no other run is under way, say so on the feed. Call it
        before the next checkpoint, so that nothing the run does comes first, and in the
        order the session's runs were started (their turns come in that order)."""
        self.runs[run_id] = RunLog(run_id, limit=REPLAY_LIMIT)
        self._forget_finished()
        self.live[run_id] = stream
        if self._inspector is not None:
            self._inspector.run_begins(self.id, run_id)
        if len(self.live) == 1:  # a run behind others is named when its turn comes (run_ends)
            self._set_state("running", run_id)

    def run_ends(self, run_id: str) -> None:
        """A run begun with :meth:`run_begins` is over: call it once the run's block has been left and its
        ``RunFinished`` recorded (one that ended early: ``RunFinished("cancelled")``). It is no longer
        live; the feed names the next run waiting its turn, or says the session is idle, or, the session
        having closed meanwhile, its streams end now."""
        del self.live[run_id]
        self._forget_finished()  # runs that waited behind others, kept meanwhile, go once finished
        if self.live:
            if self.state.get("run_id") == run_id and not self.session.closed:
                self._set_state("running", next(iter(self.live)))  # the next run's turn has come
            return
        if self._ended is not None:  # closed while this run's client still read it: now its streams end
            self._end_streams()
        elif not self.session.closed:  # a closing session says "closed" next
            self._set_state("idle")

    def _forget_finished(self) -> None:
        """Forget the oldest finished runs while more than :data:`KEPT_RUNS` are kept (never one in flight)."""
        excess = len(self.runs) - KEPT_RUNS
        if excess > 0:
            for run_id in [run_id for run_id, log in self.runs.items() if log.finished][:excess]:
                del self.runs[run_id]

    def closed(self, ended: Callable[[ServedSession], None]) -> None:
        """The session has closed and its runs' tasks have ended (``Session.call_when_closed``): end every
        stream of it, then call ``ended(self)``.

        An attached run's events are recorded by its client's request as that client reads them, so
        they may still come after the run's task has ended: the streams end once the last such run has
        (:meth:`run_ends`), its ``RunFinished`` included.
        """
        self._ended = ended
        self._inspector = None  # it has forgotten this session: a new one may have its id
        if not self.live:
            self._end_streams()

    def _end_streams(self) -> None:
        for log in self.runs.values():
            log.finish()
        self._set_state("closed")
        self.updates.close()
        self.changes.close()
        self.feed.close()
        ended, self._ended = self._ended, None
        if ended is not None:
            ended(self)


class Server:
    """A served runtime; made by :func:`open_server`."""

    def __init__(
        self,
        runtime: Runtime,
        agent: Agent[Any, Any],
        *,
        token: str | None,
        idle_timeout: float | None,
        heartbeat: float,
        subscriber_buffer: int,
        max_body: int,
        body_timeout: float = 10.0,
        max_sessions: int | None = DEFAULT_MAX_SESSIONS,
        max_queued_runs: int | None = DEFAULT_MAX_QUEUED_RUNS,
    ) -> None:
        self.runtime = runtime
        """The runtime whose sessions are served."""
        self.agent = agent
        """What every served session runs."""
        self.port = 0
        """The port listened on (once the server has started)."""
        self.host = "127.0.0.1"
        self._token = token.encode() if token is not None else None
        self._idle_timeout = idle_timeout
        self._heartbeat = heartbeat
        self._buffer = subscriber_buffer
        self._max_body = max_body
        self._body_timeout = body_timeout
        self._max_sessions = max_sessions
        self._max_queued_runs = max_queued_runs
        self._sessions: dict[str, ServedSession] = {}
        self._closing = False
        self._streaming = 0
        self._websockets = 0
        self._dropped = 0  # by sessions that have closed
        self._ending: set[ServedSession] = set()  # closed, their streams waiting for attached runs to end
        self._mcp: McpEndpoint | None = None  # made at the first request to /mcp: only then is the SDK imported
        self._opening: dict[str, trio.Event] = {}  # sessions being opened here (open_session), by id
        self.inspector = Inspector(kept_runs=KEPT_RUNS)
        """The live tree of the served sessions, that ``/inspect`` shows (``GET /inspect/events``)."""
        self._logins: OrderedDict[str, None] = OrderedDict()  # inspector cookies honoured, oldest first
        self.app = Starlette(
            routes=[
                Route("/health", self._health, methods=["GET"]),
                # One route per path, so that a 405 names every method the path takes (``Allow``).
                Route("/sessions", self._on_sessions, methods=["GET", "POST"]),
                Route("/sessions/{sid}", self._on_session, methods=["GET", "DELETE"]),
                Route("/sessions/{sid}/runs", self._run, methods=["POST"]),
                Route("/sessions/{sid}/runs/{rid}/events", self._follow_run, methods=["GET"]),
                Route("/sessions/{sid}/elicitations/{eid}", self._answer, methods=["POST"]),
                Route("/sessions/{sid}/feed", self._feed, methods=["GET"]),
                WebSocketRoute("/sessions/{sid}/updates", self._updates),
                WebSocketRoute("/sessions/{sid}/workspace", self._workspace),
                Route("/mcp", _McpRoute(self), methods=["GET", "POST", "DELETE"]),
                Route("/sessions/{sid}/runs/{rid}/cancel", self._cancel_run, methods=["POST"]),
                Route("/inspect", self._inspect_page, methods=["GET"]),
                Route("/inspect/static/{file}", self._inspect_static, methods=["GET"]),
                Route("/inspect/login", self._inspect_login, methods=["POST"]),
                Route("/inspect/events", self._inspect_events, methods=["GET"]),
            ],
            exception_handlers={_HTTPError: _error_response},
        )
        """The ASGI app."""
        self.app.router.redirect_slashes = False  # a path with a slash too many is a 404, not a redirect
        json_errors(self.app)

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def sessions(self) -> dict[str, ServedSession]:
        """The served sessions open now, by id (one closing is gone already)."""
        return {sid: served for sid, served in self._sessions.items() if not served.session.closed}

    def statistics(self) -> ServerStatistics:
        """The counters, at any time."""
        open_or_ending = itertools.chain(self._sessions.values(), self._ending)
        dropped = self._dropped + sum(served.updates.dropped for served in open_or_ending)
        return ServerStatistics(len(self.sessions), self._streaming, self._websockets, dropped)

    async def open_session(self, session_id: str | None = None, *, create: bool = True) -> ServedSession:
        """Start a served session (what ``POST /sessions`` does); with a store, open it from there if it has it.

        Raises:
            InvalidSessionIdError: ``session_id`` does not match :data:`SESSION_ID_PATTERN`.
            SessionExistsError: a served session has that id (one closing is waited for, up to
                :data:`CLOSING_WAIT` seconds, then the id is free; one being opened, until it is open).
            TooManySessionsError: ``max_sessions`` are open (one closing does not count).
            ClosedSessionError: the server is shutting down.
            SessionOwnedError: (with a store) another process serves it.
            SessionNotFoundError: (with a store) ``create`` is false and the store has no such session.
            StoreUnavailableError: (with a store) the store cannot be reached.
        """
        if session_id is not None and not (isinstance(session_id, str) and SESSION_ID_PATTERN.fullmatch(session_id)):
            raise InvalidSessionIdError(
                "a session id is 1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter or a digit"
            )
        if self._closing:
            raise ClosedSessionError("the server is shutting down")
        while session_id is not None:
            if (opening := self._opening.get(session_id)) is not None:
                # Another request opens it here (its store claim would refuse us as if another process had
                # it): once it is done, the id is served (a conflict) or free again.
                await opening.wait()
            elif (closing := self._sessions.get(session_id)) is None:
                break
            else:
                # A closing session is gone (404, not listed), but holds its id until its tasks have ended.
                if not closing.session.closed:  # a conflict, whether or not there is room
                    raise SessionExistsError(f"session {session_id!r} exists")
                with trio.move_on_after(CLOSING_WAIT):
                    await closing.session.wait_closed()  # it is forgotten (_forget) before this returns
                    await closing.session.wait_released()  # with a store: free to open here again
                if self._sessions.get(session_id) is closing:
                    raise SessionExistsError(f"session {session_id!r} is still closing")
            if self._closing:
                raise ClosedSessionError("the server is shutting down")
        self._check_room()
        # The id is made here, not by the runtime: with a store, a session the runtime names is only made
        # there by its first run, and a served session exists (in the store too) once it is answered 201.
        session_id = session_id or new_session_id()
        opening = self._opening[session_id] = trio.Event()
        try:
            return await self._start_served(session_id, create)
        finally:
            del self._opening[session_id]
            opening.set()

    async def _start_served(self, session_id: str, create: bool) -> ServedSession:
        handle = await self.runtime.start_session(
            self.agent, session_id=session_id, idle_timeout=self._idle_timeout, create=create
        )
        # Checked again after the await (no other open of this id can have slipped in: _opening).
        try:
            self._check_room()
        except TooManySessionsError:
            await handle.aclose()
            raise
        if self._closing:  # the server began shutting down meanwhile: it would close only those it had
            await handle.aclose()
            raise ClosedSessionError("the server is shutting down")
        if handle.session.closed:  # closed meanwhile (the runtime is exiting)
            await handle.aclose()
            raise ClosedSessionError(f"session {handle.session.id!r} was closed as it opened")
        served = ServedSession(handle, buffer=self._buffer, inspector=self.inspector)
        self._sessions[served.id] = served
        self.inspector.session_opened(served)
        # No task per served session: its streams end when it has closed.
        handle.session.call_when_closed(functools.partial(self._forget, served))
        return served

    def _check_room(self) -> None:
        # A closing session holds its id (in _sessions) until its tasks end, but no longer its room.
        if self._max_sessions is not None and len(self.sessions) >= self._max_sessions:
            raise TooManySessionsError(f"the server has {self._max_sessions} sessions open, its most")

    def _queue_full(self, served: ServedSession) -> str | None:
        """Why a new run of ``served`` is refused: it would wait behind more than ``max_queued_runs`` others
        (one runs, the rest wait); ``None`` if it may wait its turn.

        Call it with no checkpoint before the run's :meth:`ServedSession.run_begins`, so that concurrent
        requests cannot all pass it. An MCP call (``streams._mcp``) is checked with it too.
        """
        if self._max_queued_runs is not None and len(served.live) > self._max_queued_runs:
            return f"session {served.id!r} is busy: {len(served.live) - 1} runs already wait for their turn"
        return None

    def _check_queue(self, served: ServedSession) -> None:
        """Refuse a run that :meth:`_queue_full` refuses: 503 ``too_many_runs``."""
        refusal = self._queue_full(served)
        if refusal is not None:
            raise _HTTPError(503, "too_many_runs", refusal)

    def _forget(self, served: ServedSession) -> None:
        del self._sessions[served.id]
        self.inspector.session_closed(served.id)
        self._ending.add(served)
        served.closed(self._ended)

    def _ended(self, served: ServedSession) -> None:
        self._ending.discard(served)
        self._dropped += served.updates.dropped

    async def _close_sessions(self) -> None:
        self._closing = True
        async with trio.open_nursery() as nursery:
            for served in list(self._sessions.values()):
                nursery.start_soon(served.handle.aclose)

    # -- requests --------------------------------------------------------------

    def _authorized(self, connection: HTTPConnection) -> bool:
        """The bearer token, or (HTTP only) the cookie of an inspector sign-in (``POST /inspect/login``)."""
        if bearer_token_matches(connection, self._token):
            return True
        if connection.scope["type"] != "http":
            return False
        cookie = connection.cookies.get(INSPECT_COOKIE)
        return cookie is not None and cookie in self._logins

    async def _served(self, connection: HTTPConnection) -> ServedSession:
        if not self._authorized(connection):
            raise _HTTPError(401, "unauthorized", "a valid bearer token is required")
        sid = connection.path_params["sid"]
        served = self._sessions.get(sid)
        if served is None and self.runtime.store is not None and SESSION_ID_PATTERN.fullmatch(sid):
            served = await self._open_stored(sid)
        if served is None or served.session.closed:
            raise _HTTPError(404, "unknown_session", f"no session {sid!r}")
        return served

    async def _open_stored(self, sid: str) -> ServedSession | None:
        """The session ``sid`` from the store, now served here (``None`` if the store has none)."""
        try:
            return await self._open_session_answering(sid, create=False)
        except _HTTPError as error:
            if error.kind == "unknown_session":
                return None
            if error.kind == "conflict":  # opened meanwhile by another request
                return self._sessions.get(sid)
            raise

    async def _raw_body(self, request: Request) -> bytes:
        try:
            return await read_body(request, limit=self._max_body, timeout=self._body_timeout)
        except RequestRejected as rejected:
            raise _HTTPError(rejected.status, rejected.kind, str(rejected)) from None

    async def _body(self, request: Request) -> dict[str, Any]:
        body = await self._raw_body(request)
        if not body:
            return {}
        try:
            data = loads_untrusted(body)
        except ValueError as exc:
            raise _HTTPError(422, "bad_json", f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise _HTTPError(422, "bad_json", "the body must be a JSON object")
        return data

    async def _on_sessions(self, request: Request) -> Response:
        return await (self._create if request.method == "POST" else self._list)(request)

    async def _on_session(self, request: Request) -> Response:
        return await (self._delete if request.method == "DELETE" else self._get)(request)

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def _create(self, request: Request) -> Response:
        if not self._authorized(request):
            raise _HTTPError(401, "unauthorized", "a valid bearer token is required")
        body = await self._body(request)
        session_id = body.get("id")
        if session_id is None and "id" in body:  # null is no string: not "no id"
            raise _HTTPError(422, "bad_session_id", "'id' must be a string, or left out for one made up")
        served = await self._open_session_answering(session_id)
        if served.session.run_count:  # a stored session, opened here again: it existed
            raise _HTTPError(409, "conflict", f"session {served.id!r} exists")
        return JSONResponse(served.describe(), status_code=201)

    async def _open_session_answering(self, session_id: str | None, *, create: bool = True) -> ServedSession:
        """:meth:`open_session`, its errors raised as the answers to give."""
        try:
            return await self.open_session(session_id, create=create)
        except InvalidSessionIdError as exc:
            raise _HTTPError(422, "bad_session_id", f"'id': {exc}") from None
        except ClosedSessionError:
            raise _HTTPError(503, "shutting_down", "the server is shutting down") from None
        except SessionExistsError as exc:
            raise _HTTPError(409, "conflict", str(exc)) from None
        except TooManySessionsError as exc:
            raise _HTTPError(503, "too_many_sessions", str(exc)) from None
        except SessionOwnedError as exc:
            # Not 409, which a client reads as "it exists, go on": this request is for another process.
            raise _HTTPError(421, "session_elsewhere", str(exc), owner=exc.owner) from None
        except SessionNotFoundError:
            raise _HTTPError(404, "unknown_session", f"no session {session_id!r}") from None
        except StoreUnavailableError as exc:
            raise _HTTPError(503, "store_unavailable", str(exc)) from None
        except StoreCorruptError as exc:
            raise _HTTPError(500, "store_corrupt", str(exc)) from None

    async def _list(self, request: Request) -> Response:
        if not self._authorized(request):
            raise _HTTPError(401, "unauthorized", "a valid bearer token is required")
        return JSONResponse({"sessions": [served.describe() for served in self.sessions.values()]})

    async def _get(self, request: Request) -> Response:
        return JSONResponse((await self._served(request)).describe())

    async def _delete(self, request: Request) -> Response:
        served = await self._served(request)
        await served.handle.aclose()
        # Let go in the store too, so that the 204 means any process may open it again at once.
        with trio.CancelScope(shield=True):
            await served.session.wait_released()
        return Response(status_code=204)

    async def _run(self, request: Request) -> Response:
        served = await self._served(request)
        body = await self._body(request)
        try:
            user_input = content_from_json(body.get("input"))
        except MalformedMessageError as exc:
            raise _HTTPError(422, "bad_request", str(exc)) from None
        detach = body.get("detach", False)
        if not isinstance(detach, bool):  # "false" and [0] are true in Python
            raise _HTTPError(422, "bad_request", "'detach' must be true or false")
        # The client's trace (its W3C traceparent), if it sent one: the run's span continues it.
        parent = extracted_trace(request.headers)
        if detach:
            try:
                with attached_trace(parent):  # the run's task copies the current context as it starts
                    run_id = await served.session.start(self._drive_detached, served, served.session.run, user_input)
            except ClosedSessionError:
                raise _HTTPError(404, "unknown_session", f"session {served.id!r} is closed") from None
            return JSONResponse({"run_id": run_id}, status_code=202)
        return self._event_stream(functools.partial(self._attached_run, served, user_input, parent))

    @asynccontextmanager
    async def _attached_run(
        self, served: ServedSession, user_input: Content, parent: TraceContext | None = None
    ) -> AsyncIterator[MessageSource]:
        """An attached run's whole life, in the response's task: ``async with session.run()`` around the stream.

        Raises:
            _HTTPError: (before the ``200``) a 404: the session closed before the run could start; the 503 of
                :meth:`_check_queue`.
        """
        source: _AttachedRun | None = None
        try:
            # The run's task copies the context current as it starts (entered and left in the response's task).
            with attached_trace(parent):
                self._check_queue(served)
                async with served.session.run(user_input, deps=served.workspace) as stream:
                    source = _AttachedRun(served, stream)
                    served.run_begins(source.run_id, stream)
                    try:
                        yield source
                    except BaseException:
                        # The client left: its followers still get what the run sends as it ends.
                        await source.drain()
                        raise
        except ClosedSessionError:
            if source is not None:
                raise
            raise _HTTPError(404, "unknown_session", f"session {served.id!r} is closed") from None
        finally:
            if source is not None:
                if not source.finished:  # followers see it end as this client did
                    served.record(source.run_id, RunFinished("cancelled"))
                served.run_ends(source.run_id)

    async def _drive_detached(
        self,
        served: ServedSession,
        start: Callable[..., RunStream],
        what: Any,
        *,
        task_status: trio.TaskStatus[str],
    ) -> None:
        """A run no client is attached to (``detach``, or an answer that resumes a run): followed by its log.

        Raises:
            _HTTPError: (before ``started``) the 503 of :meth:`_check_queue`; if the store cannot write the
                run's row, a 503 (unreachable), a 409 (another writer changed the session: it is lost here)
                or a 500 (the store refused the session's rows).
        """
        self._check_queue(served)
        async with start(what, deps=served.workspace) as stream:
            run_id = stream.run_id
            served.run_begins(run_id, stream)
            try:
                # Its row is written before its id is answered (a queued run's too): a 202's id survives a
                # restart, never given to another run.
                try:
                    await served.session._runs_stored()
                except StoreUnavailableError as exc:
                    raise _HTTPError(503, "store_unavailable", str(exc)) from None
                except SessionConflictError as exc:  # lost here: retrying cannot help, as with a rejection
                    raise _HTTPError(409, "session_conflict", str(exc)) from None
                except StoreRejectedError as exc:
                    raise _HTTPError(500, "store_rejected", str(exc)) from None
                task_status.started(run_id)
                try:
                    async for event in stream:
                        served.record(run_id, event)
                except trio.Cancelled:  # cancelled with its session, as the run is
                    await _drain(stream, functools.partial(served.record, run_id))
                    raise
            finally:
                if not served.runs[run_id].finished:  # cancelled with its session: followers see it end
                    served.record(run_id, RunFinished("cancelled"))
                served.run_ends(run_id)

    async def _follow_run(self, request: Request) -> Response:
        served = await self._served(request)
        rid = request.path_params["rid"]
        log = served.runs.get(rid)
        store = self.runtime.store
        if log is None and store is not None:  # a run of an earlier process: its log is in the store
            try:
                stored = await store.events(served.id, rid)
            except StoreUnavailableError as exc:
                raise _HTTPError(503, "store_unavailable", str(exc)) from None
            if stored:
                log = RunLog(rid, limit=REPLAY_LIMIT)
                for text in stored:
                    log.append({**json.loads(text), "run_id": rid})
                log.finish()
        if log is None:
            raise _HTTPError(404, "unknown_run", f"no run {rid!r} in session {served.id!r}")

        @asynccontextmanager
        async def follow() -> AsyncIterator[MessageSource]:
            yield _Following(log.follow())

        return self._event_stream(follow)

    async def _feed(self, request: Request) -> Response:
        served = await self._served(request)

        @asynccontextmanager
        async def subscribe() -> AsyncIterator[MessageSource]:
            subscriber = served.feed.add()
            try:
                subscriber.put(served.state)  # where things stand, first
                with served.session.in_use():  # a client watching counts as activity: no idle reaping
                    yield _Subscribed(subscriber)
            finally:
                served.feed.remove(subscriber)

        return self._event_stream(subscribe)

    def _event_stream(self, open_source: OpenSource) -> Response:
        """An SSE response reading ``open_source``, counted in ``sse_streams`` while it streams."""

        @asynccontextmanager
        async def counted() -> AsyncIterator[MessageSource]:
            async with open_source() as source:
                self._streaming += 1
                try:
                    yield source
                finally:
                    self._streaming -= 1

        return EventStreamResponse(counted, heartbeat=self._heartbeat)

    async def _answer(self, request: Request) -> Response:
        served = await self._served(request)
        eid = request.path_params["eid"]
        body = await self._body(request)
        action = body.get("action")
        if action not in ("accept", "decline", "cancel"):
            raise _HTTPError(422, "bad_request", "'action' must be accept, decline or cancel")
        for stream in list(served.live.values()):
            if eid in stream.pending_elicitations:
                try:
                    await stream.respond(eid, action, body.get("content"))
                except UnknownElicitationError:
                    break
                except ElicitationResponseError as exc:
                    raise _HTTPError(422, "invalid_answer", str(exc)) from None
                self.inspector.answered(served.id)
                return Response(status_code=204)
        if any(request.id == eid for request in served.session.pending):
            # A question an interrupted run waited on: the answer resumes that run, detached.
            resume = functools.partial(served.session.resume, {eid: (action, body.get("content"))})
            try:
                with attached_trace(extracted_trace(request.headers)):  # the run's task copies the context
                    run_id = await served.session.start(
                        self._drive_detached, served, lambda _, deps: resume(deps=deps), None
                    )
            except ElicitationResponseError as exc:
                raise _HTTPError(422, "invalid_answer", str(exc)) from None
            except ClosedSessionError:
                raise _HTTPError(404, "unknown_session", f"session {served.id!r} is closed") from None
            return JSONResponse({"run_id": run_id}, status_code=202)
        raise _HTTPError(404, "unknown_elicitation", f"no pending elicitation {eid!r} in session {served.id!r}")

    async def _cancel_run(self, request: Request) -> Response:
        """``POST /sessions/{sid}/runs/{rid}/cancel``: the run in flight ends with ``RunFinished`` ``cancelled``."""
        served = await self._served(request)
        rid = request.path_params["rid"]
        stream = served.live.get(rid)
        if stream is None:
            raise _HTTPError(404, "unknown_run", f"no run {rid!r} in flight in session {served.id!r}")
        stream.cancel()
        return Response(status_code=204)

    # -- the inspector ---------------------------------------------------------

    async def _inspect_page(self, request: Request) -> Response:
        """``GET /inspect``: the page (it holds no data: no token needed; it signs in itself)."""
        return _inspect_file("index.html", "text/html; charset=utf-8")

    async def _inspect_static(self, request: Request) -> Response:
        name = request.path_params["file"]
        kind = _INSPECT_FILES.get(name)
        if kind is None:
            raise _HTTPError(404, "not_found", f"no file {name!r} in the inspector")
        return _inspect_file(name, kind)

    async def _inspect_login(self, request: Request) -> Response:
        """``POST /inspect/login``: 204 if the request may watch (no token needed, or it signed in), and with
        ``{"token"}`` matching, a cookie that stands in for the token from then on; else 401."""
        if self._authorized(request):
            await self._raw_body(request)
            return Response(status_code=204)
        body = await self._body(request)
        token = body.get("token")
        # surrogatepass: "\ud800" is valid JSON, which plain UTF-8 cannot encode (that was a 500); a string
        # holding one never encodes to a real token's bytes this way.
        if (
            self._token is None
            or not isinstance(token, str)
            or not secrets.compare_digest(token.encode("utf-8", "surrogatepass"), self._token)
        ):
            raise _HTTPError(401, "unauthorized", "a valid bearer token is required")
        secret = secrets.token_urlsafe(32)
        self._logins[secret] = None
        while len(self._logins) > KEPT_LOGINS:
            self._logins.popitem(last=False)
        response = Response(status_code=204)
        response.set_cookie(INSPECT_COOKIE, secret, httponly=True, samesite="strict", path="/")
        return response

    async def _inspect_events(self, request: Request) -> Response:
        """``GET /inspect/events``: the whole tree, then its changes (coalesced), over one SSE stream."""
        if not self._authorized(request):
            raise _HTTPError(401, "unauthorized", "a valid bearer token is required")
        inspector = self.inspector

        @asynccontextmanager
        async def subscribe() -> AsyncIterator[MessageSource]:
            subscriber = inspector.subscribe()
            try:
                yield subscriber
            finally:
                inspector.unsubscribe(subscriber)

        return self._event_stream(subscribe)

    # -- MCP -------------------------------------------------------------------

    async def _serve_mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/mcp``: the checks of every route, then MCP's streamable HTTP transport (``streams._mcp``)."""
        request = Request(scope, receive)
        if not self._authorized(request):
            raise _HTTPError(401, "unauthorized", "a valid bearer token is required")
        endpoint = self._mcp_endpoint()
        body = b""
        if request.method == "POST":
            body = await self._raw_body(request)
            receive = _replaying(body, receive)
        await endpoint.handle(scope, receive, send, body=body)

    def _mcp_endpoint(self) -> McpEndpoint:
        if self._mcp is None:
            try:
                from ._mcp import McpEndpoint
            except ImportError as exc:
                raise _HTTPError(
                    501, "mcp_unavailable", f"serving MCP needs the mcp package (trio-agents[mcp]): {exc}"
                ) from None
            self._mcp = McpEndpoint(self.agent, self._open_session_answering, queue_full=self._queue_full)
        return self._mcp

    # -- WebSockets ------------------------------------------------------------

    async def _accept(self, websocket: WebSocket) -> ServedSession | None:
        try:
            served = await self._served(websocket)
        except _HTTPError as error:
            await websocket.send_denial_response(error.response())
            return None
        await websocket.accept()
        self._websockets += 1
        return served

    async def _updates(self, websocket: WebSocket) -> None:
        served = await self._accept(websocket)
        if served is None:
            return
        try:
            with served.updates.subscribe() as subscriber, served.session.in_use():

                async def receive() -> None:
                    while True:
                        await _receive_text(websocket)  # nothing to read; this notices the client leaving

                await self._pump_ws(websocket, subscriber.get, receive)
        finally:
            self._websockets -= 1

    async def _workspace(self, websocket: WebSocket) -> None:
        served = await self._accept(websocket)
        if served is None:
            return
        try:
            # Changes and answers share the connection's buffer: an answer
            # follows the change its command caused. Changes may be dropped,
            # answers never: a command is read only when there is room for its
            # answer, so a client that sends faster than it reads is slowed down.
            room = trio.Semaphore(max(self._buffer, 1))
            with served.changes.subscribe() as subscriber, served.session.in_use():

                async def receive() -> None:
                    while True:
                        await room.acquire()
                        text = await _receive_text(websocket)
                        subscriber.put(_answer_command(served.workspace, text), keep=True)

                async def get() -> dict[str, Any] | Dropped:
                    message = await subscriber.get()
                    if not isinstance(message, Dropped) and message["type"] == "result":
                        room.release()
                    return message

                await self._pump_ws(websocket, get, receive)
        finally:
            self._websockets -= 1

    async def _pump_ws(
        self,
        websocket: WebSocket,
        get: Callable[[], Awaitable[dict[str, Any] | Dropped]],
        receive: Callable[[], Awaitable[None]],
    ) -> None:
        """Send what ``get`` gives until it ends (the session closed) or the client leaves (``receive`` returns).

        A binary frame from the client closes the connection with 1003 (unsupported data).
        """
        close: tuple[int, str] | None = None
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                nonlocal close
                try:
                    await receive()
                except _BinaryFrame as exc:
                    close = (_UNSUPPORTED_DATA, str(exc))
                except (WebSocketDisconnect, RuntimeError):
                    pass  # the client left
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            try:
                while True:
                    message = await get()
                    if isinstance(message, Dropped):
                        message = {"type": "EventsDropped", "count": message.count}
                    await websocket.send_text(escape_surrogates(dumps(message)))
            except trio.EndOfChannel:
                close = (_GOING_AWAY if self._closing else 1000, "")
            except (WebSocketDisconnect, OSError, RuntimeError):
                pass  # the client left
            nursery.cancel_scope.cancel()
        if close is not None:
            with trio.move_on_after(self._heartbeat):
                await websocket.close(*close)


class _McpRoute:
    """The ASGI app of ``/mcp``: an object, not a function, so that Starlette hands it the raw ASGI call."""

    def __init__(self, server: Server) -> None:
        self._server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._server._serve_mcp(scope, receive, send)


def _inspect_file(name: str, media_type: str) -> Response:
    """A file of the inspector's page (``streams/inspect/``), with headers that keep it from being framed."""
    return Response(_inspect_bytes(name), media_type=media_type, headers=_PAGE_HEADERS)


@functools.cache
def _inspect_bytes(name: str) -> bytes:
    """A file of the page, read once (a few KiB: the blocking read happens once per process)."""
    return (_INSPECT_DIR / name).read_bytes()


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive``, giving the body already read first (then what comes after it: a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _receive_text(websocket: WebSocket) -> str:
    """The next text frame from the client.

    Raises:
        WebSocketDisconnect: the client left.
        _BinaryFrame: it sent a binary frame.
    """
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if not isinstance(text, str):
        raise _BinaryFrame("binary frames are not part of this protocol: send JSON text")
    return text


class _AttachedRun:
    """The messages of an attached run, each recorded (run log, ``updates``) as it is read."""

    __slots__ = ("_served", "_stream", "finished", "run_id")

    def __init__(self, served: ServedSession, stream: RunStream) -> None:
        self._served = served
        self._stream = stream
        self.run_id = stream.run_id
        self.finished = False
        """Whether its ``RunFinished`` was read."""

    def next_nowait(self) -> tuple[str, dict[str, Any]] | None:
        if self.finished:
            return None
        return self._record(self._stream.next_nowait())

    async def next(self) -> tuple[str, dict[str, Any]] | None:
        if self.finished:
            return None
        return self._record(await self._stream.__anext__())

    def _record(self, event: Event) -> tuple[str, dict[str, Any]]:
        self.finished = type(event) is RunFinished
        data = self._served.record(self.run_id, event)
        return data["type"], data

    async def drain(self) -> None:
        """Its client left: cancel the run, and record what it still sends as it ends (:func:`_drain`)."""
        if not self.finished:
            await _drain(self._stream, self._record)


async def _drain(stream: RunStream, record: Callable[[Event], object]) -> None:
    """Cancel a run whose reader is leaving, and read what the run still sends as it ends (its cancelled calls'
    ``ToolCallFinished``, its ``RunFinished``) into ``record``, for its followers: shielded, for up to
    :data:`DETACHED_DRAIN_TIMEOUT` seconds."""
    stream.cancel()
    if not run_waits_for_me(stream):  # (a tool closing its own session waits for this task)
        with trio.CancelScope(shield=True, deadline=trio.current_time() + DETACHED_DRAIN_TIMEOUT):
            async for event in stream:
                record(event)


class _Following:
    """The messages of a run's log, from its start."""

    __slots__ = ("_follower",)

    def __init__(self, follower: RunFollower) -> None:
        self._follower = follower

    def next_nowait(self) -> tuple[str, dict[str, Any]] | Dropped | None:
        return _message(self._follower.next_nowait())

    async def next(self) -> tuple[str, dict[str, Any]] | Dropped | None:
        return _message(await self._follower.next())


class _Subscribed:
    """The messages of a session's feed."""

    __slots__ = ("_subscriber",)

    def __init__(self, subscriber: Subscriber[dict[str, Any]]) -> None:
        self._subscriber = subscriber

    def next_nowait(self) -> tuple[str, dict[str, Any]] | Dropped | None:
        try:
            return _message(self._subscriber.get_nowait())
        except trio.EndOfChannel:
            return None

    async def next(self) -> tuple[str, dict[str, Any]] | Dropped | None:
        try:
            return _message(await self._subscriber.get())
        except trio.EndOfChannel:
            return None


def _message(item: dict[str, Any] | Dropped | None) -> tuple[str, dict[str, Any]] | Dropped | None:
    if item is None or isinstance(item, Dropped):
        return item
    return item["type"], item


def _answer_command(workspace: Workspace, text: str) -> dict[str, Any]:
    """The ``result`` message answering a client's command (PROTOCOL.md): never an exception."""
    try:
        command = loads_untrusted(text)
    except ValueError as exc:
        return _failed(None, "bad_json", f"a command is a JSON object: {exc}")
    command_id = command.get("id") if isinstance(command, dict) else None
    try:
        fields = workspace.command(command)
    except WorkspaceError as exc:
        answer = _failed(command_id, exc.kind, str(exc))
    else:
        answer = {"type": "result", "id": command_id, "ok": True, **fields}
    # Any answer may be more than a client takes in one message (open_workspace_stream would close the
    # connection with 1009): a read's or a list's JSON escapes, or the echoed id of a command near the limit.
    if len(utf8(dumps(answer))) > MAX_MESSAGE:
        message = f"the answer would be over {MAX_MESSAGE} bytes as JSON, more than a client takes in one message"
        answer = _failed(command_id, "too_large", message)
        if len(utf8(dumps(answer))) > MAX_MESSAGE:
            answer = _failed(None, "too_large", message)  # the id alone is too large to send back
    return answer


def _failed(command_id: Any, kind: str, message: str) -> dict[str, Any]:
    return {"type": "result", "id": command_id, "ok": False, "error": {"type": kind, "message": message}}


def _owner(public_url: str | None, host: str, port: int) -> str | None:
    """How a served runtime names itself to the other servers of its store (``None``: ``hostname:pid``)."""
    if public_url is not None:
        return public_url
    if port == 0:
        return None
    name = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
    return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"


@asynccontextmanager
async def open_server(
    agent: Agent[Any, Any],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    runtime: Runtime | None = None,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    max_sessions: int | None = DEFAULT_MAX_SESSIONS,
    max_queued_runs: int | None = DEFAULT_MAX_QUEUED_RUNS,
    heartbeat: float = 15.0,
    subscriber_buffer: int = 256,
    max_body: int = 2**20,
    graceful_timeout: float = 2.0,
    allowed_origins: Iterable[str] = (),
    allowed_hosts: Iterable[str] | None = None,
    write_timeout: float = 10.0,
    body_timeout: float = 10.0,
    backlog: int = 1024,
    allow_unauthenticated_remote: bool = False,
    store: SessionStore | None = None,
    public_url: str | None = None,
) -> AsyncIterator[Server]:
    """Serve ``agent`` over HTTP, SSE and WebSocket until the block exits.

    Hypercorn's Trio worker runs in this block's own nursery: the runtime
    owns the server, never the reverse. Leaving the block closes every
    served session first (ending every SSE stream with its last event and
    every WebSocket with code 1001), then stops Hypercorn.

    ``/inspect`` is the live inspector, a page fed by ``GET /inspect/events``
    (see :attr:`Server.inspector`).

    Example::

        async with open_server(agent, port=8000) as server:
            print("serving on", server.url)
            await trio.sleep_forever()

    Args:
        agent: What every served session runs.
        host: The interface to listen on.
        port: The port (0: any free one; see ``server.port``).
        token: If given, every endpoint but ``/health`` and the inspector's page
            (``/inspect`` and its static files) requires ``Authorization: Bearer
            <token>``, or (HTTP only) the cookie of a sign-in at ``POST /inspect/login``.
        runtime: Serve sessions of this runtime (default: a runtime of its own).
        idle_timeout: Close a served session after this many seconds idle: no run,
            and no feed, ``updates`` or ``workspace`` connection open (above zero); ``None``:
            never. 15 minutes by default.
        max_sessions: The most served sessions open at once (above zero); past it, ``POST
            /sessions`` is 503 ``too_many_sessions`` (``None``: no limit).
        max_queued_runs: The most runs of one session that may wait for their turn
            behind its running run (runs of a session go one at a time); past it,
            a new run (``POST .../runs``, or an answer that resumes one) is 503
            ``too_many_runs``, and an MCP call an ``isError`` result saying so.
            0: none may wait; ``None``: no limit. 16 by default.
        heartbeat: Seconds between ``: ping`` comments on a quiet SSE stream.
        subscriber_buffer: Messages buffered per ``updates``/``workspace``/feed
            client; a slower client loses the oldest (and is told how many), but
            never a workspace command's answer: past this many answers unsent,
            the server reads no further commands until the client reads.
        max_body: The largest request body accepted (bytes).
        graceful_timeout: Seconds Hypercorn gives open connections to finish on shutdown.
        allowed_origins: Origins (``http://host:port``) whose web pages may call
            the server; a request or handshake with any other ``Origin``, but
            the server's own, is 403. The default, none, lets in non-browser
            clients (which send no ``Origin``) only. ``"*"``: any.
        allowed_hosts: Host names (any port) the server answers to; any other
            ``Host`` is 403 (DNS rebinding). Default: ``localhost``,
            ``127.0.0.1`` and ``::1`` when ``host`` is loopback, else any.
        write_timeout: Seconds any one send to a client may take; past it the
            connection is closed (a client that stopped reading), which cancels
            an attached run and frees what it held.
        body_timeout: Seconds a request's whole body may take to arrive (else 408).
        backlog: The listen backlog: connections the kernel queues before
            they are accepted (capped by ``net.core.somaxconn``).
        allow_unauthenticated_remote: Serve on a non-loopback ``host`` with no
            ``token``. Without it, that raises :class:`UnsafeBindError`.
        store: Keep the served sessions in it (for the runtime the server opens;
            give ``runtime`` one of its own otherwise): a request for a session
            this process does not serve opens it from the store, one that another
            process serves is answered 421 ``session_elsewhere`` naming it.
        public_url: Where clients and the other servers on ``store`` reach this one
            (``https://agents-2.internal``): the owner a 421 from another server
            names for the sessions served here. Default: ``http://HOST:PORT``,
            with this machine's name for a wildcard ``host``; with ``port`` 0 (not
            known until listening), ``hostname:pid``. It matters only with ``store``.

    Raises:
        UnsafeBindError: ``host`` is not loopback, there is no ``token``, and
            ``allow_unauthenticated_remote`` is false.
        ValueError: ``write_timeout``, ``body_timeout``, ``backlog``, ``heartbeat``, ``subscriber_buffer``,
            ``max_body``, ``idle_timeout`` or ``max_sessions`` is not above zero (NaN included),
            ``max_queued_runs`` or ``graceful_timeout`` is below zero, ``port`` is not 0 to 65535, or ``token``
            is empty or holds spaces.
    """
    limits = {"idle_timeout": idle_timeout, "max_sessions": max_sessions}  # None: none
    check_positive(
        write_timeout=write_timeout,
        body_timeout=body_timeout,
        backlog=backlog,
        heartbeat=heartbeat,
        subscriber_buffer=subscriber_buffer,
        max_body=max_body,
        **{name: value for name, value in limits.items() if value is not None},
    )
    if max_queued_runs is not None and not max_queued_runs >= 0:
        raise ValueError(f"max_queued_runs must be 0 or more, not {max_queued_runs!r}")
    if not graceful_timeout >= 0:
        raise ValueError(f"graceful_timeout must be 0 or more, not {graceful_timeout!r}")
    if not 0 <= port <= 65535:  # bind() would raise OverflowError
        raise ValueError(f"port must be 0 (any free one) to 65535, not {port!r}")
    check_token(token, "the token")
    check_bind(
        host, authenticated=token is not None, allow_unauthenticated_remote=allow_unauthenticated_remote, what="a token"
    )
    exposure = Exposure(host, allowed_origins=allowed_origins, allowed_hosts=allowed_hosts)
    # The block's own error comes out as itself, not in a group (as open_runtime's do).
    async with single_errors(), AsyncExitStack() as stack:
        if runtime is None:
            owner = None if store is None else _owner(public_url, host, port)
            runtime = await stack.enter_async_context(open_runtime(store=store, owner=owner))
        elif store is not None or public_url is not None:
            raise ValueError(
                "give the store and the owner to the runtime you pass (open_runtime(store=..., owner=...)), "
                "not to open_server"
            )
        server = Server(
            runtime,
            agent,
            token=token,
            idle_timeout=idle_timeout,
            heartbeat=heartbeat,
            subscriber_buffer=subscriber_buffer,
            max_body=max_body,
            body_timeout=body_timeout,
            max_sessions=max_sessions,
            max_queued_runs=max_queued_runs,
        )
        app = ExposureGuard(server.app, exposure)
        config = Config()
        config.bind = [f"{host}:{port}"]
        config.graceful_timeout = graceful_timeout
        config.backlog = backlog
        config.errorlog = logger
        config.accesslog = None
        shutdown = trio.Event()
        send_close_frames_on_protocol_errors()  # 1007 for a text frame that is not UTF-8, not a dropped TCP
        async with trio.open_nursery() as nursery:
            serving = functools.partial(serve_app, app, config, shutdown, write_timeout=write_timeout)
            binds: list[str] = await nursery.start(serving)
            server.host, _, bound_port = binds[0].removeprefix("http://").rpartition(":")
            server.port = int(bound_port)
            try:
                yield server
            finally:
                with trio.CancelScope(shield=True):
                    await server._close_sessions()  # ends every stream from our side
                    server.inspector.close()  # and the inspector's, once they have read the last changes
                shutdown.set()
