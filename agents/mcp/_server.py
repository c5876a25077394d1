"""MCP servers as toolsets: ``MCPServerStdio`` and ``MCPServerStreamableHTTP``."""

from __future__ import annotations

import logging
import os
import re
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import attrs
import httpx2
import pydantic
import trio
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import MCP_SESSION_ID, streamable_http_client

from agents._tools import Tool

from ._connection import Connection, RemoteSession, open_connection
from ._exceptions import BrokenMCPServerError, MCPConnectionError
from ._stdio import ServerProcess, stdio_transport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    import mcp_types as types

    from agents._context import RunContext, SessionLike, SessionResourceLike, ToolContext
    from agents._tools import ThreadLimiter

logger = logging.getLogger("agents.mcp")

Lifetime: TypeAlias = Literal["session", "run"]
"""How long a connection lives: as long as the session (shared by its runs), or one run."""

DEFAULT_CONNECT_TIMEOUT: Final = 10.0
"""Seconds a server has to start and answer ``initialize``, and to list its tools."""
DEFAULT_SHUTDOWN_GRACE: Final = 2.0
"""Seconds a stdio server has to exit once its stdin is closed, before SIGTERM (the SDK's default too)."""
DEFAULT_TERMINATE_GRACE: Final = 2.0
"""Seconds between SIGTERM and SIGKILL."""

_TOOL_NAME: Final = re.compile(r"[^A-Za-z0-9_-]")
_MAX_TOOL_NAME: Final = 64
_PASS_THROUGH: Final[pydantic.TypeAdapter[Any]] = pydantic.TypeAdapter(dict[str, Any])


class _MCPServer:
    """What both transports share: the toolset, its filters, and the connection's lifetime."""

    def __init__(
        self,
        *,
        name: str,
        prefix: str | None,
        allow: Collection[str] | None,
        deny: Collection[str],
        lifetime: Lifetime,
        connect_timeout: float,
    ) -> None:
        if lifetime not in ("session", "run"):
            raise ValueError(f"lifetime must be 'session' or 'run', not {lifetime!r}")
        _check_seconds(connect_timeout=connect_timeout)
        if isinstance(allow, str) or isinstance(deny, str):
            raise TypeError("allow and deny are collections of tool names, not one string")
        self.name = name
        """The server's name, in errors and logs."""
        self.prefix = prefix
        """Tool names are shown to the model as ``{prefix}_{tool}`` (``None``: as the server names them)."""
        self.allow = None if allow is None else frozenset(allow)
        """Only these of the server's tools, by their names on the server (``None``: all)."""
        self.deny = frozenset(deny)
        """None of these, by their names on the server."""
        self.lifetime: Lifetime = lifetime
        """``"session"``: one connection per session, opened by its first run that needs it, shared by its
        later runs and concurrent calls, closed with the session. ``"run"``: one connection per run."""
        self.connect_timeout = connect_timeout
        """Seconds the server has to answer ``initialize`` (and, for stdio, to start), and each ``tools/list``
        (all its pages)."""
        self._run_resources: dict[tuple[SessionLike, str], SessionResourceLike[Connection]] = {}

    @asynccontextmanager
    async def open_tools(self, ctx: RunContext[Any]) -> AsyncIterator[Sequence[Tool]]:
        """Connect (once per session by default) and yield the server's tools, as filtered and named here.

        Raises:
            MCPConnectionError: the server could not be reached, or did not list its tools within
                ``connect_timeout`` (the run ends with a ``toolset`` error).
        """
        try:
            for retry in (False, True):
                resource = await self._connection(ctx.session, ctx.run_id)
                try:
                    tools = await self._tools(resource.value)
                    break
                except BrokenMCPServerError:
                    resource.close()  # it died between two runs: once more, on a fresh connection
                    if retry:
                        raise
                except MCPConnectionError:
                    resource.close()  # it does not list its tools: the next run tries a fresh connection
                    raise
            yield tools
        finally:
            if self.lifetime == "run":
                opened = self._run_resources.pop((ctx.session, ctx.run_id), None)
                if opened is not None:
                    await opened.aclose()

    async def call(self, ctx: ToolContext[Any], tool: str, arguments: dict[str, Any]) -> str:
        """Call the server's ``tool`` (by its name on the server) on the session's connection.

        A connection that broke (the process exited, the remote went away) is
        closed, and the next call opens a fresh one.

        Raises:
            MCPServerError: the call failed; its message is the error result the model sees.
        """
        resource = await self._connection(ctx.session, ctx.run_id)
        try:
            return await resource.value.call(ctx, tool, arguments)
        except BrokenMCPServerError:
            resource.close()
            raise

    async def _connection(self, session: SessionLike, run_id: str) -> SessionResourceLike[Connection]:
        for _ in range(2):
            if self.lifetime == "run":
                key: object = (self, run_id)
            else:
                key = self
            resource = await session.resource(
                key, self._open, name=f"MCP server {self.name!r}", close_timeout=self._close_timeout
            )
            if self.lifetime == "run":
                self._run_resources[(session, run_id)] = resource
            if resource.value.broken is None:
                break
            resource.close()  # seen broken since it was last used: the next one is fresh
        return resource

    async def _tools(self, connection: Connection) -> Sequence[Tool]:
        # Bounded: a server that never answers tools/list would hang the run (run_timeout is off by default).
        with trio.move_on_after(self.connect_timeout) as listing:
            listed_at, listed = await connection.tools()
        if listing.cancelled_caught:
            raise MCPConnectionError(
                self.name,
                f"MCP server {self.name!r} did not list its tools within connect_timeout={self.connect_timeout}s",
            )
        cache = connection.tool_cache
        if cache is not None and cache[0] == listed_at:
            tools: tuple[Tool, ...] = cache[1]
            return tools
        tools = self._make_tools(listed)
        connection.tool_cache = (listed_at, tools)
        return tools

    def _make_tools(self, listed: Sequence[types.Tool]) -> tuple[Tool, ...]:
        tools: dict[str, Tool] = {}
        for remote in listed:
            if (self.allow is not None and remote.name not in self.allow) or remote.name in self.deny:
                continue
            if remote.execution is not None and remote.execution.task_support == "required":
                logger.warning(
                    "MCP server %s: tool %r is left out: it runs only as a task, which this client does not do",
                    self.name,
                    remote.name,
                )
                continue
            name = self._tool_name(remote.name)
            if not name:
                logger.warning("MCP server %s: a tool with an empty name is left out (no model can call it)", self.name)
                continue
            if name in tools:
                logger.warning(
                    "MCP server %s: two tools are both named %r for the model; the second is left out", self.name, name
                )
                continue
            tools[name] = _MCPTool(
                name=name,
                description=remote.description or remote.title or "",
                parameters=remote.input_schema,
                function=self.call,
                arguments=_PASS_THROUGH,
                context_parameter=None,
                is_async=True,
                server=self,
                remote_name=remote.name,
            )
        return tuple(tools.values())

    def _tool_name(self, remote: str) -> str:
        # What every provider takes: letters, digits, "_" and "-", at most 64.
        name = f"{self.prefix}_{remote}" if self.prefix else remote
        return _TOOL_NAME.sub("_", name)[:_MAX_TOOL_NAME]

    def _open(self) -> AbstractAsyncContextManager[Connection]:
        raise NotImplementedError

    @property
    def _close_timeout(self) -> float:
        return 10.0


@attrs.frozen(eq=False, kw_only=True)
class _MCPTool(Tool):
    """A tool of an MCP server: the model sees the server's input schema; the server validates the arguments."""

    server: _MCPServer = attrs.field(repr=False)
    remote_name: str
    """Its name on the server."""

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments as given: the server checks them against its schema (and says what is wrong)."""
        return dict(arguments)

    async def invoke(
        self, ctx: ToolContext[Any], validated: dict[str, Any], *, limiter: ThreadLimiter | None = None
    ) -> Any:
        """Call the server's tool."""
        return await self.server.call(ctx, self.remote_name, validated)


class MCPServerStdio(_MCPServer):
    """An MCP server run as a subprocess, over its stdin and stdout: a toolset for ``Agent(tools=[...])``.

    The process belongs to the connection's owner (see ``lifetime``): closing
    closes its stdin (the protocol's shutdown), waits ``shutdown_grace``
    seconds, then sends its process group SIGTERM, waits
    ``terminate_grace``, then SIGKILL; it is always reaped, and no pipe is
    left open. What it left in its process group when it exited gets SIGTERM,
    then SIGKILL after ``terminate_grace`` (at once if it crashed). If it
    crashes, the calls in flight get error results naming how it ended (even
    while something it started holds its stdout open), the run goes on, and
    the next call starts it again.

    Example::

        everything = MCPServerStdio("npx", ["-y", "@modelcontextprotocol/server-everything"], name="everything")
        agent = Agent(name="helper", model=model, tools=[everything])

    Args:
        command: The program to run.
        args: Its arguments.
        env: Extra environment variables, over a safe inherited few (``HOME``, ``PATH``, ``USER`` …).
        cwd: Its working directory.
        name: The server's name (default: the command's file name).
        prefix: Show the tools to the model as ``{prefix}_{tool}``.
        allow: Only these of its tools (by their names on the server).
        deny: None of these.
        lifetime: ``"session"`` (default: one connection per session, shared by its runs) or ``"run"``.
        connect_timeout: Seconds to start and answer ``initialize``, and to answer each ``tools/list``.
        shutdown_grace: Seconds to exit once its stdin is closed.
        terminate_grace: Seconds between SIGTERM and SIGKILL.

    Raises:
        ValueError: ``lifetime`` is neither, or a number of seconds is below zero or NaN.
        TypeError: ``args``, ``allow`` or ``deny`` is one string.
    """

    def __init__(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        name: str | None = None,
        prefix: str | None = None,
        allow: Collection[str] | None = None,
        deny: Collection[str] = (),
        lifetime: Lifetime = "session",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        terminate_grace: float = DEFAULT_TERMINATE_GRACE,
    ) -> None:
        if isinstance(args, str):
            raise TypeError("args is a sequence of arguments, not one string")
        _check_seconds(shutdown_grace=shutdown_grace, terminate_grace=terminate_grace)
        super().__init__(
            name=name or os.path.basename(command) or command,
            prefix=prefix,
            allow=allow,
            deny=deny,
            lifetime=lifetime,
            connect_timeout=connect_timeout,
        )
        self.command = command
        """The program."""
        self.args = tuple(args)
        """Its arguments."""
        self.env = None if env is None else dict(env)
        """Extra environment variables (over the few inherited)."""
        self.cwd = None if cwd is None else os.fspath(cwd)
        """Its working directory."""
        self.shutdown_grace = shutdown_grace
        """Seconds it has to exit once its stdin is closed."""
        self.terminate_grace = terminate_grace
        """Seconds between SIGTERM and SIGKILL."""

    def __repr__(self) -> str:
        return f"<MCPServerStdio {self.name!r}: {' '.join([self.command, *self.args])}>"

    def _open(self) -> AbstractAsyncContextManager[Connection]:
        process = ServerProcess(self.name)
        transport = stdio_transport(
            self.command,
            self.args,
            env=get_default_environment() | dict(self.env or {}),
            cwd=self.cwd,
            process=process,
            shutdown_grace=self.shutdown_grace,
            terminate_grace=self.terminate_grace,
        )
        return open_connection(self.name, transport, connect_timeout=self.connect_timeout, process=process)

    @property
    def _close_timeout(self) -> float:
        # The transport's own stop is bounded; this only guards against a bug in it.
        return self.shutdown_grace + self.terminate_grace + 10.0


class MCPServerStreamableHTTP(_MCPServer):
    """A remote MCP server over Streamable HTTP: a toolset for ``Agent(tools=[...])``.

    Closing ends the server's session (an HTTP ``DELETE``). If the server
    goes away, or no longer knows the session (it answers 404, as after a
    restart), the calls in flight get error results, the run goes on, and
    the next call connects again.

    Example::

        search = MCPServerStreamableHTTP("https://example.com/mcp", headers={"Authorization": f"Bearer {key}"})

    Args:
        url: The server's endpoint (``…/mcp``).
        headers: Sent with every request (authorization …).
        timeout: Seconds for connecting, for sending a request, and for the answer to the DELETE that
            ends the server's session (so a server that never answers it holds up a close this long).
        sse_read_timeout: Seconds each read of a response may wait: for its status and headers (a server
            may send them only once the tool is done), for each part of its body, or for an event
            stream's next event. When it passes, the connection ends: the calls in flight get error
            results, and the next call connects again (``tool_timeout`` bounds a call and keeps it).
        name: The server's name (default: the URL's host).
        prefix, allow, deny, lifetime, connect_timeout: As for :class:`MCPServerStdio`.

    Raises:
        ValueError: ``lifetime`` is neither, or a number of seconds is below zero or NaN.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        sse_read_timeout: float = 300.0,
        name: str | None = None,
        prefix: str | None = None,
        allow: Collection[str] | None = None,
        deny: Collection[str] = (),
        lifetime: Lifetime = "session",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        _check_seconds(timeout=timeout, sse_read_timeout=sse_read_timeout)
        super().__init__(
            name=name or httpx2.URL(url).host or url,
            prefix=prefix,
            allow=allow,
            deny=deny,
            lifetime=lifetime,
            connect_timeout=connect_timeout,
        )
        self.url = url
        """The server's endpoint."""
        self.headers = None if headers is None else dict(headers)
        """Sent with every request."""
        self.timeout = timeout
        """Seconds for connecting, and for sending a request."""
        self.sse_read_timeout = sse_read_timeout
        """Seconds each read of a response may wait (its headers, its body, an event stream's next event)."""

    def __repr__(self) -> str:
        return f"<MCPServerStreamableHTTP {self.name!r}: {self.url}>"

    def _open(self) -> AbstractAsyncContextManager[Connection]:
        remote = RemoteSession()
        transport = _http_transport(self.url, self.headers, self.timeout, self.sse_read_timeout, remote)
        return open_connection(self.name, transport, connect_timeout=self.connect_timeout, remote=remote)

    @property
    def _close_timeout(self) -> float:
        return self.timeout + 5.0


def _check_seconds(**values: float) -> None:
    """Refuse a number of seconds below zero, or NaN (a deadline made of it raises far from here, in a close)."""
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"{name} must be 0 or more seconds, not {value!r}")


@asynccontextmanager
async def _http_transport(
    url: str, headers: Mapping[str, str] | None, timeout: float, sse_read_timeout: float, remote: RemoteSession
) -> AsyncIterator[Any]:
    async def watch(response: httpx2.Response) -> None:
        # The protocol's "that session is gone": 404 to a request naming it (seen before the SDK reads the body).
        if response.status_code == 404 and MCP_SESSION_ID in response.request.headers:
            remote.forgotten = True
        response.stream = _WatchedBody(response.stream, remote)

    async def bound(request: httpx2.Request) -> None:
        # The closing DELETE's answer is no stream: waited for ``timeout``, not ``sse_read_timeout`` (a server
        # that never answers it held a run's end, or the session's close, until the close guard cut it off).
        if request.method == "DELETE":
            request.extensions["timeout"] = httpx2.Timeout(timeout).as_dict()

    # As the SDK's own factory makes it: redirects are the transport's to follow, within the endpoint's origin.
    # One read timeout for every other read: the SDK sets no timeout of its own per request, and a server may
    # hold a tool call's answer, headers and all, for as long as the tool runs.
    client = httpx2.AsyncClient(
        headers=dict(headers or {}),
        timeout=httpx2.Timeout(timeout, read=sse_read_timeout),
        event_hooks={"request": [bound], "response": [watch]},
    )
    async with client, streamable_http_client(url, http_client=client) as streams:
        yield streams


class _WatchedBody(httpx2.AsyncByteStream):
    """A response's body, counting the times the network cuts it off (the SDK only says "connection closed")."""

    def __init__(self, stream: httpx2.SyncByteStream | httpx2.AsyncByteStream, remote: RemoteSession) -> None:
        assert isinstance(stream, httpx2.AsyncByteStream)
        self._stream = stream
        self._remote = remote

    @property
    def elapsed(self) -> Any:
        """As the client's own stream has it (``Response.elapsed`` reads it)."""
        return getattr(self._stream, "elapsed", None)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except httpx2.TransportError:
            self._remote.network_errors += 1
            raise

    async def aclose(self) -> None:
        await self._stream.aclose()
