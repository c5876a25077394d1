"""One connection to an MCP server: the SDK's client, its tool list, and the calls in flight on it."""

from __future__ import annotations

import contextvars
import functools
import logging
import math
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import anyio
import attrs
import mcp_types as types
import pydantic
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from agents._exceptions import ElicitationTimeout, ElicitationUnavailable

from ._exceptions import BrokenMCPServerError, MCPConnectionError, MCPServerError, MCPToolError
from ._results import to_value

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    from mcp.client import ClientRequestContext, IncomingMessage
    from mcp.shared._stream_protocols import ReadStream, WriteStream

    from agents._context import ToolContext

    from ._stdio import ServerProcess

logger = logging.getLogger("agents.mcp")

T = TypeVar("T")
M = TypeVar("M")

CLIENT_INFO: Final = types.Implementation(name="trio-agents", version="0.1.0")
MAX_TOOL_PAGES: Final = 100
"""Pages of ``tools/list`` read at most: a server paginating forever can't hang a run."""

# The call the current task makes: how a server's question finds its call when
# the SDK asks it in the caller's task (2026-07-28's input-required rounds).
_CURRENT_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("trio_agents_mcp_call", default=None)


@attrs.define(eq=False)
class RemoteSession:
    """What a streamable-HTTP connection knows of its session on the server."""

    forgotten: bool = False
    """The server answered 404 to a request naming the session: it no longer knows it (it restarted, or
    ended an idle session), and the protocol says to start a new one. The SDK passes on the server's error
    body, whatever its code, so only the transport, which sees the status, can tell."""
    network_errors: int = 0
    """How many answers the network cut off (the server went away mid-stream, or a proxy cut it): the SDK
    then ends the request with its "connection closed" error, whose code (-32000) servers use too."""

    def describe_end(self) -> str:
        """Why the connection can no longer serve, for an error."""
        return "it no longer knows our session (HTTP 404 for its Mcp-Session-Id)"


@asynccontextmanager
async def open_connection(
    server: str,
    transport: AbstractAsyncContextManager[Any],
    *,
    connect_timeout: float,
    process: ServerProcess | None = None,
    remote: RemoteSession | None = None,
) -> AsyncIterator[Connection]:
    """Connect (start the transport, then the protocol's handshake) and yield the connection.

    Entered and exited by the session resource's owner task: the SDK's client
    and transport hold anyio task groups that must be left in the task that
    entered them.

    Raises:
        MCPConnectionError: the transport failed, the handshake failed, or it
            took longer than ``connect_timeout`` seconds.
    """
    # This task owns the connection; it makes no call, even if a call's task started it.
    _CURRENT_CALL.set(None)
    connection = Connection(server, process, remote)
    client = Client(
        _watched(transport, connection),  # entered by the client, in this task
        cache=None,  # tools/list is read once per connection and on list changes, never from a cache
        client_info=CLIENT_INFO,
        elicitation_callback=connection.on_elicitation,
        message_handler=connection.on_message,
    )
    connected = False
    # The deadline covers the handshake only; the scope is the one around the
    # whole connection (a scope left while the client's task groups are open
    # would corrupt Trio's scope stack).
    with trio.CancelScope(deadline=trio.current_time() + connect_timeout) as connecting:
        try:
            async with client:
                connecting.deadline = math.inf
                connected = True
                connection.client = client
                async with trio.open_nursery() as nursery:
                    if _lists_changes(client):
                        nursery.start_soon(connection.listen_for_changes)
                    yield connection
                    nursery.cancel_scope.cancel()
        except Exception as exc:
            if connected:
                raise
            if (process is not None and process.returncode is not None) or isinstance(exc, MCPError):
                detail = connection.describe_end(exc)
            else:
                detail = describe_error(exc)
            raise MCPConnectionError(server, f"could not connect to MCP server {server!r}: {detail}") from exc
    if connecting.cancelled_caught:
        raise MCPConnectionError(
            server, f"MCP server {server!r} did not answer initialize within connect_timeout={connect_timeout}s"
        )


@asynccontextmanager
async def _watched(
    transport: AbstractAsyncContextManager[Any], connection: Connection
) -> AsyncIterator[tuple[_ReadEnd[Any], _WriteEnd[Any]]]:
    """The transport, with its streams telling ``connection`` when they end."""
    async with transport as (read, write):
        yield _ReadEnd(read, connection), _WriteEnd(write, connection)


class _ReadEnd(Generic[M]):
    """The transport's read stream, noting its end: the one sure sign that the connection is gone.

    The SDK's "connection closed" error has code -32000, which servers also use for their own errors.
    """

    __slots__ = ("_connection", "_stream")

    def __init__(self, stream: ReadStream[M], connection: Connection) -> None:
        self._stream = stream
        self._connection = connection

    @property
    def last_context(self) -> contextvars.Context | None:
        """The sender's context (the SDK's HTTP transport has one: the caller's, so a question finds its call)."""
        context: contextvars.Context | None = getattr(self._stream, "last_context", None)
        return context

    async def receive(self) -> M:
        try:
            return await self._stream.receive()
        except BaseException:
            # Its end, or the reader cancelled: the transport failed (its task group cancels it) or we close.
            self._connection.transport_ended()
            raise

    def __aiter__(self) -> _ReadEnd[M]:
        return self

    async def __anext__(self) -> M:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> _ReadEnd[M]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class _WriteEnd(Generic[M]):
    """The transport's write stream, noting its end (a request sent then fails at once, before the read end sees it)."""

    __slots__ = ("_connection", "_stream")

    def __init__(self, stream: WriteStream[M], connection: Connection) -> None:
        self._stream = stream
        self._connection = connection

    async def send(self, item: M, /) -> None:
        try:
            await self._stream.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._connection.transport_ended()
            raise

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> _WriteEnd[M]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _lists_changes(client: Client) -> bool:
    """Whether list changes come only to a ``subscriptions/listen`` stream (2026-07-28), and the server has them."""
    tools = client.server_capabilities.tools
    return client.protocol_version in MODERN_PROTOCOL_VERSIONS and tools is not None and bool(tools.list_changed)


class Connection:
    """A live connection to one MCP server, shared by a session's runs and their concurrent tool calls.

    The SDK's client multiplexes the requests; this keeps the tool list (read
    once, again after a list change) and the calls in flight, so that a
    server's question reaches the run of the call it belongs to.
    """

    __slots__ = (
        "_broken",
        "_calls",
        "_changed",
        "_changes",
        "_ended",
        "_listed_at",
        "_tools",
        "client",
        "process",
        "remote",
        "server",
        "tool_cache",
    )

    def __init__(self, server: str, process: ServerProcess | None, remote: RemoteSession | None = None) -> None:
        self.server = server
        self.process = process
        self.remote = remote
        self.client: Client | None = None
        self._broken: str | None = None
        self._ended = False
        self.tool_cache: tuple[int, Any] | None = None
        """What the toolset built of the last listing, with that listing's number."""
        self._tools: list[types.Tool] | None = None
        self._changes = 0
        self._changed = trio.Event()
        self._listed_at = -1
        self._calls: list[_Call] = []

    @property
    def broken(self) -> str | None:
        """Why it can no longer serve (``None`` while it can): the transport ended, its process did, or the
        server forgot its session."""
        process = self.process
        if self._broken is None and process is not None and (process.returncode is not None or process.problem):
            self._broken = process.describe_end()
        if self._broken is None and self.remote is not None and self.remote.forgotten:
            self._broken = self.remote.describe_end()
        if self._broken is None and self._ended:
            self._broken = self.describe_end()
        return self._broken

    def transport_ended(self) -> None:
        """The transport's streams ended: nothing more can come or go (the server went away, or we closed)."""
        self._ended = True

    def _tools_changed(self) -> None:
        self._changes += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_tool_change(self, seen: int = 0) -> int:
        """Wait until the server has said its tool list changed more than ``seen`` times; how many times.

        The notice travels apart from the answer of the call that made the change, so it may come after it.
        """
        while self._changes <= seen:
            await self._changed.wait()
        return self._changes

    async def tools(self) -> tuple[int, list[types.Tool]]:
        """The server's tools and the number of their listing, listed again only after a change."""
        if self._tools is None or self._listed_at != self._changes:
            seen = self._changes
            tools: list[types.Tool] = []
            cursor: str | None = None
            for _ in range(MAX_TOOL_PAGES):
                page = await self._request(functools.partial(self._client.list_tools, cursor=cursor), "tools/list")
                tools.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    break
            self._tools, self._listed_at = tools, seen
        return self._listed_at, self._tools

    async def call(self, ctx: ToolContext[Any], tool: str, arguments: dict[str, Any]) -> str:
        """Call ``tool``: its progress becomes ``ToolProgress`` events, its questions go to the run's consumer.

        Cancelling the call (the run left, ``tool_timeout``) makes the SDK send
        ``notifications/cancelled`` for it; the connection stays usable.

        Raises:
            MCPToolError: the server answered with an error (whatever its code: -32000, the SDK's
                "connection closed", is also a common server error).
            BrokenMCPServerError: the connection broke during the call (the transport ended).
        """
        call = _Call(ctx)
        self._calls.append(call)
        token = _CURRENT_CALL.set(call)
        outcome: types.CallToolResult | MCPServerError
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call.serve_questions)
                try:
                    outcome = await self._request(
                        functools.partial(self._client.call_tool, tool, arguments, progress_callback=call.progress),
                        tool,
                    )
                except MCPServerError as exc:
                    outcome = exc  # raised below, not from inside the nursery (which would wrap it in a group)
                except BaseException:
                    nursery.cancel_scope.cancel()  # cancelled: the questions it is asking are withdrawn
                    raise
                finally:
                    # It takes no more questions. One it is still asking is another call's (the server
                    # answered this one without waiting for it), whose run may be answering it: wait for that.
                    self._calls.remove(call)
                    call.close()
                if isinstance(outcome, BrokenMCPServerError):
                    nursery.cancel_scope.cancel()
        finally:
            _CURRENT_CALL.reset(token)
        if isinstance(outcome, MCPServerError):
            raise outcome
        return to_value(self.server, tool, outcome)

    async def _request(self, send: Callable[[], Awaitable[T]], what: str) -> T:
        cut_before = self.remote.network_errors if self.remote is not None else 0
        try:
            return await send()
        except MCPError as exc:
            # Only the transport can say the connection is gone (-32000 is also a common server error).
            broken = self.broken
            if broken is None and exc.code == CONNECTION_CLOSED and self._cut_since(cut_before):
                broken = self._broken = self.describe_end(exc)  # the network cut an answer off, then this
            if broken is not None:
                ended = "crashed" if self.process is not None else "went away"
                raise BrokenMCPServerError(
                    self.server, f"MCP server {self.server!r} {ended} during {what}: {broken}"
                ) from exc
            raise MCPToolError(self.server, what, f"MCP server {self.server!r} refused {what}: {exc.message}") from exc
        except pydantic.ValidationError as exc:
            raise MCPToolError(
                self.server, what, f"MCP server {self.server!r} sent a malformed answer to {what}"
            ) from exc

    def _cut_since(self, count: int) -> bool:
        return self.remote is not None and self.remote.network_errors > count

    @property
    def _client(self) -> Client:
        assert self.client is not None
        return self.client

    def describe_end(self, error: BaseException | None = None) -> str:
        """How the connection ended, as far as we know."""
        process = self.process
        if process is not None and (process.returncode is not None or process.problem is not None or self._ended):
            return process.describe_end()
        if self.remote is not None and self.remote.forgotten:
            return self.remote.describe_end()
        if isinstance(error, MCPError):
            return f"the connection was closed ({error.message})"
        return describe_error(error) if error is not None else "the connection was closed"

    # -- called by the SDK's client, in its tasks --------------------------

    async def on_message(self, message: IncomingMessage) -> None:
        """Server notifications (a tool list change), and transport errors."""
        if isinstance(message, types.ToolListChangedNotification):
            self._tools_changed()
        elif isinstance(message, Exception):
            logger.info("MCP server %s: %s", self.server, describe_error(message))

    async def listen_for_changes(self) -> None:
        """On a 2026-07-28 connection, list changes come to a ``subscriptions/listen`` stream: follow it."""
        try:
            async with self._client.listen(tools_list_changed=True) as subscription:
                async for _ in subscription:
                    self._tools_changed()
        except Exception as exc:  # never into the connection: without it, the tools are the ones listed first
            logger.info("MCP server %s: no tool list changes: %s", self.server, describe_error(exc))

    async def on_elicitation(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        """A server's question: asked in the run of the call it belongs to, declined if none can take it.

        Over HTTP, and in 2026-07-28's rounds, the SDK asks it in the context of the call it is for. Over
        stdio (2025 protocol) nothing says which call it is for: a call in flight asks it (the latest), and
        a call that ends while asking it waits for the answer (the question is likely another call's).
        """
        current = _CURRENT_CALL.get()
        tried: set[_Call] = set()
        while True:
            live = [call for call in self._calls if call not in tried]
            if not live:
                return types.ElicitResult(action="decline")
            call = current if current in live else live[-1]
            tried.add(call)
            answer = await call.ask(params)
            if answer is not None:
                return answer


class _Call:
    """One tool call in flight, and the questions its server asks during it."""

    __slots__ = ("_questions", "_receive", "ctx")

    def __init__(self, ctx: ToolContext[Any]) -> None:
        self.ctx = ctx
        self._questions, self._receive = trio.open_memory_channel[_Question](0)

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        try:
            await self.ctx.report_progress(progress, total, message)
        except ValueError:
            logger.debug("MCP progress that is not a finite number: %r / %r", progress, total)

    async def ask(self, params: types.ElicitRequestParams) -> types.ElicitResult | None:
        """Hand the question to the call's task (whose run can ask its consumer) and wait for the answer;
        ``None`` if the call ended before taking it."""
        question = _Question(params)
        try:
            # Block policy: a rendezvous with the call's task, bounded by the
            # connection's scope; a call that ended has closed the channel.
            await self._questions.send(question)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        try:
            await question.answered.wait()
        finally:
            question.scope.cancel()  # the server withdrew it, or the connection ends: stop asking
        return question.result

    async def serve_questions(self) -> None:
        """In the tool call's task (a child of it): it knows the run, and its consumer."""
        async with self._receive:
            async for question in self._receive:
                try:
                    with question.scope:
                        question.result = await self._ask_human(question.params)
                except Exception:  # never into the call: the server hears "cancel"
                    logger.exception("asking the human for an MCP server failed")
                finally:
                    question.answered.set()  # "cancel" unless answered: the call was cancelled while asking

    async def _ask_human(self, params: types.ElicitRequestParams) -> types.ElicitResult:
        if isinstance(params, types.ElicitRequestURLParams):
            message, schema = f"{params.message}\n{params.url}", None
        else:
            message, schema = params.message, params.requested_schema
        try:
            answer = await self.ctx.elicit(message, schema=schema)
        except ElicitationUnavailable:
            return types.ElicitResult(action="decline")  # nobody can answer (ask(), no consumer)
        except ElicitationTimeout:
            return types.ElicitResult(action="cancel")
        content = answer.content if answer.accepted and isinstance(answer.content, dict) else None
        return types.ElicitResult(action=answer.action, content=content)

    def close(self) -> None:
        self._questions.close()


class _Question:
    __slots__ = ("answered", "params", "result", "scope")

    def __init__(self, params: types.ElicitRequestParams) -> None:
        self.params = params
        self.answered = trio.Event()
        self.scope = trio.CancelScope()
        self.result = types.ElicitResult(action="cancel")


def describe_error(error: BaseException) -> str:
    """A foreign error as one line (an exception group by its first error)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
