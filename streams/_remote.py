"""RemoteSession: a local session's live link to a session of a remote runtime."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import attrs
import httpx
import trio

from agents import RetryPolicy
from agents._content import user_content
from agents.models import http_client as open_http_client
from agents.models._http import error_message
from runtime._tracing import inject as inject_trace
from runtime.events import RunFinished

from ._client import (
    JSON_TYPE,
    Update,
    WorkspaceStream,
    _error_body,
    _run_id,
    auth_headers,
    close_response,
    first_error,
    json_request_body,
    open_sse_listener,
    open_updates_stream,
    open_workspace_stream,
)
from ._codec import content_to_json, event_from_json, event_to_json
from ._exceptions import (
    ClosedRemoteSessionError,
    InvalidRequestError,
    ListenerBusyError,
    MalformedMessageError,
    PeerSilentError,
    RemoteError,
    StreamClosedError,
    StreamError,
)
from ._httpx import map_httpx_errors

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from agents import ElicitationAction, UserContent

StreamName: TypeAlias = Literal["updates", "feed", "workspace"]
"""The three streams a :class:`RemoteSession` keeps alive."""
STREAMS: Final[tuple[StreamName, ...]] = ("updates", "feed", "workspace")
_FATAL: Final = frozenset({401, 403})
"""Statuses no retry can fix: ``serve`` raises them."""
MAX_ANSWER_BODY: Final = 64 * 2**10
"""The largest body of a successful answer to one of :class:`RemoteSession`'s POSTs (creating the session,
answering an elicitation: small JSON objects) it reads (bytes); a longer one is a :class:`MalformedMessageError`."""


Backoff: TypeAlias = RetryPolicy
"""The reconnection backoff: :class:`agents.RetryPolicy` itself (``Backoff(initial=, maximum=)``)."""


class ListenerRegistry:
    """Which remote sessions have a between-run listener: at most one each."""

    def __init__(self) -> None:
        self._active: set[tuple[str, str]] = set()

    @property
    def active(self) -> frozenset[tuple[str, str]]:
        """The ``(base_url, session_id)`` pairs claimed now."""
        return frozenset(self._active)

    @contextmanager
    def claim(self, key: tuple[str, str]) -> Iterator[None]:
        """Hold ``key`` for the block; the entry goes in ``finally``, however the block ends.

        Raises:
            ListenerBusyError: someone holds it already.
        """
        if key in self._active:
            raise ListenerBusyError(f"a listener for session {key[1]!r} at {key[0]} is already running")
        self._active.add(key)
        try:
            yield
        finally:
            self._active.discard(key)


LISTENERS: Final = ListenerRegistry()
"""The process-wide registry :class:`RemoteSession` uses unless given another."""


@attrs.frozen
class RemoteEvent:
    """A message from one of the remote session's streams, as its JSON object."""

    stream: StreamName
    data: dict[str, Any]

    @property
    def type(self) -> str:
        """The message's ``type`` (``TextDelta``, ``SessionState``, ``WorkspaceChanged``, ...)."""
        return str(self.data.get("type"))


@attrs.frozen
class RemoteStatistics:
    """What :meth:`RemoteSession.statistics` returns."""

    connected: frozenset[StreamName]
    """The streams up now."""
    connects: int
    """Successful connections so far, over all three streams."""
    failures: int
    """Failed or dropped connections so far."""
    last_error: str | None
    """The latest failure, as text."""
    dropped: int
    """Messages the handler never got, its streams having fallen behind: the sum of the ``EventsDropped``
    counts it was handed, over the three streams."""


class RemoteSession:
    """A link to a session of a remote runtime: its runs (:meth:`run`), and its ``updates``, ``workspace``
    and between-run feed streams kept alive by :meth:`serve`.

    Open it with :func:`open_remote_session`, whose block owns its HTTP
    client, and start :meth:`serve` in the session that owns the link, so
    closing (or reaping) that session closes every connection, at once, even
    during a backoff or a dial to a dead peer::

        async with open_remote_session("http://127.0.0.1:8000", "s1", handler=show) as remote:
            await session.start(remote.serve)
            await remote.wait_connected()
            async with remote.run("hello") as updates:
                async for update in updates:
                    print(update.event)

    Made directly, ``RemoteSession(...)`` (the older way, still supported),
    nothing owns a client for it: :meth:`serve` opens one for its own
    lifetime, and each :meth:`run` or :meth:`respond` uses one of its own for
    the call (the ``http_client`` given, or a new one), so the end of
    :meth:`serve` can never close a client under a live run.

    Args:
        base_url: The server (``http://host:port``).
        session_id: The remote session; created if it does not exist (again
            after a server restart). It must match :data:`~streams.SESSION_ID_PATTERN`, as the server's do.
        token: A bearer token, if the server needs one.
        handler: Awaited with each :class:`RemoteEvent`, in order per stream. Messages a stream lost, the
            handler having fallen behind, are told where they were, as the feed tells them: an ``EventsDropped``
            event (``{"type": "EventsDropped", "count": n}``) on that stream. An exception it raises ends
            :meth:`serve` with that exception, as it is, even a :class:`StreamError` or an ``OSError`` (of a
            :meth:`workspace_request` or :meth:`respond` it made): it is never taken for a broken stream.
        backoff: How long to wait between reconnection attempts (default:
            ``RetryPolicy()``, which never gives up). With ``max_attempts``
            set, a stream that fails that many times in a row (a connection
            that came up starts the count, and the waits, again) ends
            :meth:`serve` with its last error.
        heartbeat: Seconds between WebSocket pings.
        heartbeat_timeout: Seconds a ping may wait for its pong.
        read_timeout: Seconds of silence after which the feed's peer counts as gone
            (the server sends a heartbeat more often than that).
        connect_timeout: Seconds to connect; for a POST (creating the
            session, :meth:`respond`), seconds for its whole answer, body
            included.
        disconnect_timeout: Seconds a WebSocket close handshake may take.
        registry: Where the one between-run listener per remote session is
            claimed (default: :data:`LISTENERS`).
        http_client: Share this httpx client (its owner closes it).

    Raises:
        InvalidRequestError: ``base_url`` is not an ``http://`` or ``https://`` URL (the scheme in any case),
            ``session_id`` does not match :data:`~streams.SESSION_ID_PATTERN`, or ``token`` cannot be sent: no
            UTF-8 bytes (a lone surrogate; any other token is sent as UTF-8), a control character (a line end
            kept from a file) or white space at either end.
    """

    def __init__(
        self,
        base_url: str,
        session_id: str,
        *,
        token: str | None = None,
        handler: Callable[[RemoteEvent], Awaitable[object]] | None = None,
        backoff: Backoff | None = None,
        heartbeat: float = 15.0,
        heartbeat_timeout: float = 10.0,
        read_timeout: float = 45.0,
        connect_timeout: float = 10.0,
        disconnect_timeout: float = 2.0,
        registry: ListenerRegistry | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        try:
            parts = urlsplit(self.base_url)  # the scheme comes lower-cased
            valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # an unbalanced IPv6 bracket, a port that is not a number ...
            valid = False
        if not valid:
            raise InvalidRequestError(f"not an http:// or https:// URL: {base_url!r}")
        from ._server import SESSION_ID_PATTERN  # not at the top: _server imports this module (through _inspect)

        if not (isinstance(session_id, str) and SESSION_ID_PATTERN.fullmatch(session_id)):
            # Refused now: every server would answer 422 bad_session_id, and serve would retry that forever.
            raise InvalidRequestError(
                f"not a session id: {session_id!r} (1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter or a digit)"
            )
        self.session_id = session_id
        auth_headers(token)  # a token that cannot be sent is refused now, not at each retry
        self._token = token
        self._handler = handler
        self._backoff = backoff or Backoff()
        self._heartbeat = heartbeat
        self._heartbeat_timeout = heartbeat_timeout
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._disconnect_timeout = disconnect_timeout
        self._registry = registry if registry is not None else LISTENERS
        self._given_client = http_client
        self._owner: _ClientOwner | None = None  # set by open_remote_session, for its block
        self._workspace: WorkspaceStream | None = None
        self._connected: set[StreamName] = set()
        self._changed = trio.Event()
        self._connects = 0
        self._ups: dict[StreamName, int] = dict.fromkeys(STREAMS, 0)  # connections per stream
        self._failures = 0
        self._last_error: str | None = None
        self._dropped = 0
        self._running = False
        self._fatal: Exception | None = None

    def __repr__(self) -> str:
        return f"<RemoteSession {self.session_id} at {self.base_url}>"

    @property
    def _session_url(self) -> str:
        return f"{self.base_url}/sessions/{self.session_id}"

    def statistics(self) -> RemoteStatistics:
        """The counters, at any time."""
        return RemoteStatistics(
            frozenset(self._connected), self._connects, self._failures, self._last_error, self._dropped
        )

    async def wait_connected(self) -> None:
        """Wait until all three streams are up.

        Raises:
            ClosedRemoteSessionError: :meth:`serve` is not running (it ended, or never started).
        """
        while len(self._connected) < len(STREAMS):
            if not self._running:
                raise ClosedRemoteSessionError(f"{self!r} is not served (start remote.serve in a session)")
            await self._changed.wait()
        await trio.lowlevel.checkpoint()

    async def serve(self, *, task_status: trio.TaskStatus[RemoteSession] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the three streams alive until cancelled: start it with ``await session.start(remote.serve)``
        (or ``nursery.start``).

        Each stream reconnects on its own after a failure, with capped,
        jittered backoff; the waits are plain cancellable sleeps. In an
        :func:`open_remote_session` block it uses the block's client and
        ends when the block does; otherwise it opens a client for its own
        lifetime.

        Raises:
            ListenerBusyError: (from ``start``) this remote session already has a listener.
            ClosedRemoteSessionError: (from ``start``) its ``open_remote_session`` block has ended.
            RemoteError: the server refused the token (401/403): retrying cannot help.
            Exception: what the handler raised, alone (see ``handler``).
            StreamError: (or ``OSError``) a stream failed ``backoff.max_attempts`` times in a row (without
                coming up in between): the first stream's last error, alone (never in a group). When the owner
                ends ``serve`` meanwhile, it ends as the owner does (cancelled), not with the error.
        """
        with self._registry.claim((self.base_url, self.session_id)):
            async with self._http(quiet=True) as client:
                self._running = True
                self._fatal = None
                try:
                    async with first_error(), trio.open_nursery() as nursery:
                        for name in STREAMS:
                            nursery.start_soon(
                                self._keep_alive, name, client, nursery.cancel_scope, name=f"{self!r} {name}"
                            )
                        task_status.started(self)
                finally:
                    self._running = False
                    self._connected.clear()
                    self._notify()
                # Here, not after the block: if the owner ended it meanwhile, serve just ends.
                if self._fatal is not None:
                    raise self._fatal

    maintain = serve
    """The name :meth:`serve` had before (an alias, kept for existing code: ``session.start(remote.maintain)``)."""

    @asynccontextmanager
    async def _http(self, *, quiet: bool = False) -> AsyncIterator[httpx.AsyncClient]:
        """An HTTP client nobody can close under the block.

        In an :func:`open_remote_session` block: its client, leased (the block's end cancels the lease and
        waits for it). Otherwise: the client given to the constructor, or one of the block's own.

        Raises:
            ClosedRemoteSessionError: the owner's block has ended, or ended during this one (unless ``quiet``:
                then the block just ends).
        """
        if self._owner is None:
            async with open_http_client(self._given_client) as client:
                yield client
            return
        with self._owner.lease(quiet=quiet) as client:
            yield client

    async def _keep_alive(self, name: StreamName, client: httpx.AsyncClient, scope: trio.CancelScope) -> None:
        failed = 0  # tries failed in a row: a stream that came up starts the count (and the backoff) again
        while True:
            ups = self._ups[name]
            try:
                await self._ensure_session(client)
                await self._follow(name, client)
            except _HandlerFailed as handler_failed:
                # The handler's own error, as it is: ``serve`` ends with it, never retried as a failed stream.
                error, context = handler_failed.error, handler_failed.error.__context__
                try:
                    raise error
                finally:
                    error.__context__ = context
            except (StreamError, OSError) as exc:
                self._failed(name, exc)
                if self._ups[name] != ups:
                    failed = 0  # it was up: this is the first failure in a row
                if (isinstance(exc, RemoteError) and exc.status in _FATAL) or not self._backoff.allows(failed + 1):
                    # One error for the owner, not one per stream: stop them all.
                    if self._fatal is None:
                        self._fatal = exc
                    scope.cancel()
                    return
                delay = self._backoff.delay(failed)
                failed += 1
            else:
                failed = 0  # it was up and ended normally: reconnect promptly
                delay = self._backoff.delay(0)
            await trio.sleep(delay)

    def _failed(self, name: StreamName, error: Exception) -> None:
        self._failures += 1
        self._last_error = f"{name}: {error}"

    def _notify(self) -> None:
        """Wake whoever waits in :meth:`wait_connected`."""
        self._changed.set()
        self._changed = trio.Event()

    def _up(self, name: StreamName) -> None:
        self._connected.add(name)
        self._connects += 1
        self._ups[name] += 1
        self._notify()

    async def _follow(self, name: StreamName, client: httpx.AsyncClient) -> None:
        """Connect one stream and deliver what it brings until it ends."""
        try:
            if name == "feed":
                await self._follow_feed(client)
            elif name == "updates":
                await self._follow_updates()
            else:
                await self._follow_workspace()
        finally:
            self._connected.discard(name)
            self._notify()

    async def _follow_feed(self, client: httpx.AsyncClient) -> None:
        async with open_sse_listener(
            f"{self._session_url}/feed",
            token=self._token,
            client=client,
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
        ) as feed:
            self._up("feed")
            async for message in feed:
                if isinstance(message.data, dict):
                    await self._deliver("feed", message.data)

    async def _follow_updates(self) -> None:
        async with open_updates_stream(f"{self._ws_url}/updates", **self._ws_options()) as updates:
            self._up("updates")
            told = 0
            async for update in updates:
                told = await self._tell_dropped("updates", updates.dropped, told)
                await self._deliver("updates", {**event_to_json(update.event), "run_id": update.run_id})
            await self._tell_dropped("updates", updates.dropped, told)

    async def _follow_workspace(self) -> None:
        async with open_workspace_stream(f"{self._ws_url}/workspace", **self._ws_options()) as workspace:
            self._workspace = workspace
            try:
                self._up("workspace")
                told = 0
                async for change in workspace:
                    told = await self._tell_dropped("workspace", workspace.dropped, told)
                    await self._deliver("workspace", {"type": "WorkspaceChanged", **attrs.asdict(change)})
                await self._tell_dropped("workspace", workspace.dropped, told)
            finally:
                self._workspace = None

    @property
    def _ws_url(self) -> str:
        """The session's URL as ``ws://`` (``wss://`` for ``https://``, in any case)."""
        parts = urlsplit(self._session_url)
        return urlunsplit(parts._replace(scheme="wss" if parts.scheme == "https" else "ws"))

    def _ws_options(self) -> dict[str, Any]:
        return {
            "token": self._token,
            "connect_timeout": self._connect_timeout,
            "disconnect_timeout": self._disconnect_timeout,
            "heartbeat": self._heartbeat,
            "heartbeat_timeout": self._heartbeat_timeout,
        }

    async def _tell_dropped(self, name: StreamName, dropped: int, told: int) -> int:
        """Hand the handler an ``EventsDropped`` (as the feed sends one) for what ``dropped``, a stream's running
        count of lost messages, grew by since it was ``told``; the count it is told now."""
        if dropped > told:
            await self._deliver(name, {"type": "EventsDropped", "count": dropped - told})
        return dropped

    async def _deliver(self, name: StreamName, data: dict[str, Any]) -> None:
        """Await the handler with one event (an ``EventsDropped``'s count goes into :meth:`statistics`).

        Raises:
            _HandlerFailed: the handler raised (wrapped, so no ``except`` on the way mistakes a ``StreamError``
                or ``OSError`` of the handler's own for the stream's).
        """
        count = data.get("count")
        if data.get("type") == "EventsDropped" and type(count) is int and count > 0:
            self._dropped += count
        if self._handler is not None:
            try:
                await self._handler(RemoteEvent(name, data))
            except Exception as exc:
                raise _HandlerFailed(exc) from exc

    async def _ensure_session(self, client: httpx.AsyncClient) -> None:
        """Create the remote session unless it exists (after a server restart, it does not)."""
        answer = await self._post(client, f"{self.base_url}/sessions", {"id": self.session_id})
        if answer.status not in (201, 409):
            raise _remote_error(answer, "creating the session")

    async def _post(self, client: httpx.AsyncClient, url: str, body: Any) -> _Answer:
        """POST ``body`` as JSON and read the answer, head and body, within ``connect_timeout`` in all.

        The body is streamed, never read unbounded: a successful answer's whole, up to
        :data:`MAX_ANSWER_BODY` bytes; an error's, what arrives of its first :data:`~streams._client.MAX_ERROR_BODY`
        bytes by the deadline (the status is the answer; the body only says more).

        Raises:
            PeerSilentError: the head, or a successful answer's body, took over ``connect_timeout``.
            MalformedMessageError: a successful answer's body is over :data:`MAX_ANSWER_BODY` bytes.
            StreamClosedError: the connection could not be made, or broke.
        """
        headers = dict(JSON_TYPE)
        inject_trace(headers)
        timeout = httpx.Timeout(self._connect_timeout)
        deadline = trio.current_time() + self._connect_timeout
        with map_httpx_errors(url):
            try:
                with trio.fail_at(deadline):
                    request = client.build_request(
                        "POST",
                        url,
                        content=json_request_body(body),
                        headers=auth_headers(self._token, headers),
                        timeout=timeout,
                    )
                    response = await client.send(request, stream=True)
            except trio.TooSlowError:
                raise PeerSilentError(f"{url} sent no answer within {self._connect_timeout} s") from None
            # Each reader closes the response, however it ends.
            if response.status_code >= 400:
                content = await _error_body(response, max(0.0, deadline - trio.current_time()))
            else:
                try:
                    with trio.fail_at(deadline):
                        content = await _answer_body(response, url)
                except trio.TooSlowError:
                    raise PeerSilentError(f"{url} sent no whole answer within {self._connect_timeout} s") from None
        return _Answer(response.status_code, response.reason_phrase, content)

    @asynccontextmanager
    async def run(self, user_input: UserContent) -> AsyncIterator[AsyncIterator[Update]]:
        """Run the remote agent on ``user_input`` and stream its events (an attached run).

        ``user_input`` is text, or text and content parts as for ``Session.run`` (sent
        as JSON, bytes in base64: mind the server's ``max_body``).

        Leaving the block early closes the connection, which cancels the
        remote run. The HTTP client the run uses cannot be closed under it
        (see :meth:`_http`): the end of :meth:`serve` does not touch it, and
        the end of an :func:`open_remote_session` block ends the run first.

        Raises:
            RemoteError: the server refused (unknown session, bad token, a body over its ``max_body`` ...).
            StreamClosedError: (iterating) the run's stream ended, or broke, before its ``RunFinished``.
            ClosedRemoteSessionError: the ``open_remote_session`` block has ended (or ended during the run).
            TypeError, ValueError: (before sending) ``user_input`` is not text or parts, or is no parts at all.
        """
        wire_input = content_to_json(user_content(user_input))
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(self._http())
            listener = await stack.enter_async_context(
                open_sse_listener(
                    f"{self._session_url}/runs",
                    token=self._token,
                    client=client,
                    connect_timeout=self._connect_timeout,
                    read_timeout=self._read_timeout,
                    method="POST",
                    json_body={"input": wire_input},
                )
            )
            yield _RunUpdates(listener, f"{self._session_url}/runs")

    async def respond(self, request_id: str, action: ElicitationAction, content: Any = None) -> str | None:
        """Answer an elicitation of one of the remote session's runs.

        Returns:
            ``None`` when the question's run was live and goes on with the answer (204); the id of the run
            the answer resumes when the question was one of the session's ``pending`` (its run was
            interrupted, as by a server restart: 202 ``{"run_id"}``). Follow that run with
            ``GET .../runs/{run_id}/events``.

        Raises:
            RemoteError: ``status`` 404 (no such pending question) or 422 (the answer does not fit).
            MalformedMessageError: a 202 without a string ``run_id``, or an answer's body over
                :data:`MAX_ANSWER_BODY` bytes.
            PeerSilentError: the whole answer (its head, and its body but an error's) took over ``connect_timeout``.
            StreamClosedError: the connection could not be made, or broke.
            ClosedRemoteSessionError: the ``open_remote_session`` block has ended.
        """
        body = {"action": action, "content": content}
        async with self._http() as client:
            answer = await self._post(client, f"{self._session_url}/elicitations/{request_id}", body)
        if answer.status == 204:
            return None
        if answer.status != 202:
            raise _remote_error(answer, f"answering {request_id!r}")
        try:
            run_id = json.loads(answer.body)["run_id"]
        except (ValueError, TypeError, KeyError, RecursionError):
            run_id = None
        if not isinstance(run_id, str):
            raise MalformedMessageError(f"answering {request_id!r}: a 202 without a string 'run_id'")
        return run_id

    async def workspace_request(self, op: str, path: str | None = None, content: str | None = None) -> dict[str, Any]:
        """A workspace command, over the live ``workspace`` stream (see :meth:`WorkspaceStream.request`).

        Raises:
            StreamClosedError: the workspace stream is not connected now.
        """
        if self._workspace is None:
            raise StreamClosedError(f"{self!r}: the workspace stream is not connected")
        return await self._workspace.request(op, path, content)


class _HandlerFailed(Exception):
    """The handler raised ``error``: carried past the stream's own error handling (:meth:`RemoteSession._deliver`)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class _RunUpdates:
    """The events of a run streamed as SSE, as :class:`Update` objects; ends after ``RunFinished``.

    Every run's events end with exactly one ``RunFinished`` (PROTOCOL.md): a stream that ends before it, even
    cleanly, was cut short (:class:`StreamClosedError`).
    """

    def __init__(self, listener: AsyncIterator[Any], url: str) -> None:
        self._listener = listener
        self._url = url
        self._done = False

    def __aiter__(self) -> _RunUpdates:
        return self

    async def __anext__(self) -> Update:
        while not self._done:
            try:
                message = await self._listener.__anext__()
            except StopAsyncIteration:
                raise StreamClosedError(f"{self._url}: the run's stream ended before RunFinished") from None
            if not isinstance(message.data, dict) or message.data.get("type") == "EventsDropped":
                continue
            try:
                update = Update(_run_id(message.data), event_from_json(message.data))
            except MalformedMessageError as exc:
                raise MalformedMessageError(f"the server sent a malformed event: {exc}") from None
            self._done = type(update.event) is RunFinished
            return update
        raise StopAsyncIteration


@attrs.frozen
class _Answer:
    """The answer to one of :class:`RemoteSession`'s POSTs, read (see :meth:`RemoteSession._post`)."""

    status: int
    reason: str
    body: bytes
    """All of a successful answer's body; what arrived in time of an error's (to quote)."""


async def _answer_body(response: httpx.Response, url: str) -> bytes:
    """A successful answer's whole body, decoded.

    Raises:
        MalformedMessageError: it is over :data:`MAX_ANSWER_BODY` bytes (found as soon as it is: no more is read).
    """
    body = bytearray()
    chunks = response.aiter_bytes()
    try:
        async for chunk in chunks:
            body += chunk
            if len(body) > MAX_ANSWER_BODY:
                raise MalformedMessageError(f"{url} answered with a body over {MAX_ANSWER_BODY} bytes")
    finally:
        await close_response(response, chunks)
    return bytes(body)


def _remote_error(answer: _Answer, doing: str) -> RemoteError:
    message = error_message(answer.body) or answer.reason
    return RemoteError(f"{doing} failed with {answer.status}: {message}", status=answer.status)


class _ClientOwner:
    """The one owner of an :func:`open_remote_session` block's HTTP client: lends it, and on :meth:`aclose`
    takes it back from every borrower (cancelling them) before the client is closed."""

    def __init__(self, client: httpx.AsyncClient, name: str) -> None:
        self.client = client
        self._name = name
        self._closed = False
        self._leases: dict[trio.CancelScope, trio.lowlevel.Task] = {}
        self._released = trio.Event()

    @contextmanager
    def lease(self, *, quiet: bool) -> Iterator[httpx.AsyncClient]:
        """The client, for the block; :meth:`aclose` cancels the block.

        Raises:
            ClosedRemoteSessionError: closed already, or closed during the block (unless ``quiet``).
        """
        if self._closed:
            raise ClosedRemoteSessionError(f"{self._name} is closed: its open_remote_session block has ended")
        scope = trio.CancelScope()
        self._leases[scope] = trio.lowlevel.current_task()
        try:
            with scope:
                yield self.client
        finally:
            del self._leases[scope]
            self._released.set()
        if scope.cancelled_caught and not quiet:
            raise ClosedRemoteSessionError(f"{self._name} was closed during the call: its block ended")

    async def aclose(self) -> None:
        """Cancel every lease and wait until the other tasks holding one have let go (idempotent; shielded)."""
        self._closed = True
        me = trio.lowlevel.current_task()
        with trio.CancelScope(shield=True):
            while True:
                others = [scope for scope, task in self._leases.items() if task is not me]
                for scope in self._leases:
                    scope.cancel()
                if not others:
                    return
                self._released = trio.Event()
                await self._released.wait()


@asynccontextmanager
async def open_remote_session(
    base_url: str,
    session_id: str,
    *,
    token: str | None = None,
    handler: Callable[[RemoteEvent], Awaitable[object]] | None = None,
    backoff: Backoff | None = None,
    heartbeat: float = 15.0,
    heartbeat_timeout: float = 10.0,
    read_timeout: float = 45.0,
    connect_timeout: float = 10.0,
    disconnect_timeout: float = 2.0,
    registry: ListenerRegistry | None = None,
    http_client: httpx.AsyncClient | None = None,
) -> AsyncIterator[RemoteSession]:
    """A :class:`RemoteSession` whose HTTP client this block owns: every run, answer and :meth:`~RemoteSession.serve`
    of it uses that client, and none outlives the block.

    Leaving the block ends what still uses the client, in whatever task
    (a run raises :class:`ClosedRemoteSessionError`, ``serve`` just ends),
    waits for them, then closes the client (unless it was given:
    ``http_client``'s owner closes it). After the block, :meth:`~RemoteSession.run`
    raises :class:`ClosedRemoteSessionError`.

    Example::

        async with open_remote_session("http://127.0.0.1:8000", "s1", handler=show) as remote:
            await session.start(remote.serve)
            await remote.wait_connected()
            async with remote.run("hello") as updates:
                async for update in updates:
                    print(update.event)

    Args: as :class:`RemoteSession`'s.

    Raises:
        InvalidRequestError: ``base_url`` is not an ``http://`` or ``https://`` URL (the scheme in any case),
            ``session_id`` does not match :data:`~streams.SESSION_ID_PATTERN`, or ``token`` cannot be sent (as
            for :class:`RemoteSession`).
    """
    remote = RemoteSession(
        base_url,
        session_id,
        token=token,
        handler=handler,
        backoff=backoff,
        heartbeat=heartbeat,
        heartbeat_timeout=heartbeat_timeout,
        read_timeout=read_timeout,
        connect_timeout=connect_timeout,
        disconnect_timeout=disconnect_timeout,
        registry=registry,
        http_client=http_client,
    )
    async with open_http_client(http_client) as client:
        owner = remote._owner = _ClientOwner(client, repr(remote))
        try:
            yield remote
        finally:
            await owner.aclose()
