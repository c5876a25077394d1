"""Agents served as MCP servers: the agent is one tool, each call of it a run.

Two transports, one MCP server (the ``mcp`` SDK's low-level ``Server``, driven
by its handshake-era loop ``serve_loop``; both run on anyio, so on Trio):

- stdio, for ``python -m streams mcp --agent module:attr``
  (:func:`serve_stdio`): one trio-agents session for the whole process. The
  lines are framed here, on Trio's own non-blocking ``FdStream``: the SDK's
  ``stdio_server`` reads stdin in a worker thread that no cancel scope can
  stop, so Ctrl-C or SIGTERM would wait for the client's next line.
- streamable HTTP, at ``/mcp`` of the served runtime (:class:`McpEndpoint`):
  each MCP session is a served session, with the SDK's
  ``StreamableHTTPServerTransport`` and its serving loop running as a task of
  that session. Closing either closes the other: a client's ``DELETE``
  closes the session, and a session closed by the server (reaped when idle,
  deleted, the server shutting down) ends the MCP session, whose id is then
  unknown (404: the client starts a new one). The SDK's own session manager
  is not used because it keeps its sessions in a task group of its own, with
  no hook to tie each to one of ours.

The tool is named after the agent (sanitised to MCP's tool-name rules), its
description is the first line of the agent's instructions, and its input is
``{"task": string}``. A call runs the task in the MCP session's trio-agents
session: the text the agent streams goes to the client as
``notifications/progress`` (when the call asked for progress: a
``progressToken``), each carrying the text streamed since the last one in
its ``message``; an elicitation in the run is asked of the client with
``elicitation/create`` and its answer goes back to the run; the result is the
final text, or for a typed output (``Agent(output_type=...)``) its JSON as
text plus ``structuredContent`` (the tool declares its ``outputSchema``). A
run that does not complete is an ``isError`` result saying why. Over HTTP,
a call that would wait behind more than ``max_queued_runs`` others is an
``isError`` result saying the session is busy, and starts no run; and a call
whose POST stream ends before its result (the client left) is cancelled,
with its questions: the transport keeps no events for a client to resume
the stream with, so nothing of that call could reach the client again.
The SDK's encoder refuses a lone surrogate, so one in what is sent (a model's
text, a question) goes as the six characters of its escape (``\\ud800``).

The server speaks the handshake era of MCP (``initialize``, up to
2025-11-25), the one with server-to-client requests, which elicitation
needs. A client that probes the 2026 era first (``server/discover``) is
refused and falls back to the handshake.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import secrets
import sys
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import attrs
import mcp.types as types
import pydantic
import pydantic_core
import trio
from mcp.server.lowlevel import Server as McpServer
from mcp.server.runner import serve_loop
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.message import SessionMessage
from starlette.responses import Response

from agents._json import loads_untrusted
from runtime import ClosedSessionError, InvalidElicitationResponse, UnknownElicitationError, open_runtime
from runtime.events import ElicitationRequest, ErrorEvent, RunFinished, SubAgentEvent, TextDelta

from ._codec import escape_surrogates
from ._error_shape import error_response
from ._workspace import Workspace

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from mcp.server.context import ServerRequestContext
    from starlette.types import Message, Receive, Scope, Send

    from agents import Agent
    from runtime import RunStream, Runtime, Session
    from runtime.events import Event

    from ._server import ServedSession

logger = logging.getLogger("streams.mcp")

TASK_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"task": {"type": "string", "description": "What the agent should do, in plain words."}},
    "required": ["task"],
}
"""The tool's input: the task, as the user message of a run."""
ELICITATION_ATTEMPTS: Final = 3
"""How often a question is put to the client when its answers do not fit the question's schema."""
MAX_LINE: Final = 16 * 2**20
"""The longest stdio message (one line) read, in bytes; a longer one ends the connection."""
_ANSWER: Final = "answer"
"""The one form field a question whose answer is not an object is asked with."""
_TOOL_NAME_CHARACTER: Final = re.compile(r"[^A-Za-z0-9_.-]")


def tool_name(agent: Agent[Any, Any]) -> str:
    """The agent's name as an MCP tool name: 1 to 128 of ``A-Z a-z 0-9 _ . -``, anything else made ``_``."""
    return _TOOL_NAME_CHARACTER.sub("_", agent.name)[:128] or "agent"


def tool_description(agent: Agent[Any, Any]) -> str:
    """The first non-empty line of the agent's instructions (when they are a string), else a line naming it."""
    if isinstance(agent.instructions, str):
        for line in agent.instructions.splitlines():
            if line.strip():
                return line.strip()
    return f"Give the agent {agent.name!r} a task; it answers when done."


class _TypedOutput:
    """A typed output as MCP structured content: an object, so anything else is wrapped in ``{"result": ...}``."""

    def __init__(self, output_type: Any) -> None:
        self._adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(output_type)
        schema = self._adapter.json_schema(mode="serialization")
        self._wrapped = schema.get("type") != "object"
        if self._wrapped:
            defs = schema.pop("$defs", None)
            schema = {"type": "object", "properties": {"result": schema}, "required": ["result"]}
            if defs is not None:
                schema["$defs"] = defs  # its refs are "#/$defs/...": they resolve from the new root
        self.schema: dict[str, Any] = schema
        """The tool's ``outputSchema``."""

    def dump(self, value: Any) -> tuple[Any, dict[str, Any]]:
        """The output as JSON data, and as the tool's ``structuredContent``."""
        data = self._adapter.dump_python(value, mode="json")
        return data, {"result": data} if self._wrapped else data


class RunRecorder(Protocol):
    """Who notes the runs of a served session as they go (a :class:`~streams.ServedSession`)."""

    def run_begins(self, run_id: str, stream: RunStream) -> None: ...

    def record(self, run_id: str, event: Event) -> object: ...

    def run_ends(self, run_id: str) -> None: ...


class OpenRequests:
    """The requests of an MCP session over streamable HTTP whose POST is still being answered, by JSON-RPC id.

    The transport has no event store, so a client cannot resume a request's
    stream: once its POST has ended, nothing more of that request (progress,
    questions, its result) can reach the client.
    """

    def __init__(self) -> None:
        self._open: dict[types.RequestId, trio.Event] = {}

    @contextmanager
    def open(self, request_id: types.RequestId | None) -> Iterator[None]:
        """While the POST of the request ``request_id`` is being answered (``None``: not a request, nothing)."""
        if request_id is None:
            yield
            return
        ended = self._open[request_id] = trio.Event()
        try:
            yield
        finally:
            ended.set()
            if self._open.get(request_id) is ended:
                del self._open[request_id]

    def ended(self, request_id: types.RequestId) -> trio.Event:
        """Set once the POST of ``request_id`` has ended (already, if it has)."""
        ended = self._open.get(request_id)
        if ended is None:  # it ended before its call started
            ended = trio.Event()
            ended.set()
        return ended


@attrs.frozen
class McpScope:
    """What the tool calls of one MCP connection run in (the SDK's per-connection "lifespan state")."""

    session: Session[Any]
    """The trio-agents session: the process's (stdio), or the MCP session's (HTTP)."""
    deps: Any = None
    """The ``deps`` of every run: the session's workspace."""
    recorder: RunRecorder | None = None
    """The served session that records the runs, if any."""
    requests: OpenRequests | None = None
    """The requests whose POST is being answered (HTTP); ``None`` over stdio, where one stream carries all."""
    queue_full: Callable[[], str | None] | None = None
    """Why a call's run would not be let wait for its turn now (the served runtime's ``max_queued_runs``), or
    ``None``; called with no checkpoint before the run begins. ``None`` over stdio: no limit."""


class AgentTool:
    """The agent as the one tool of an MCP server; :meth:`server` makes that server."""

    def __init__(self, agent: Agent[Any, Any]) -> None:
        self.name = tool_name(agent)
        self._output = None if agent.output.is_text else _TypedOutput(agent.output_type)
        self.tool = types.Tool(
            name=self.name,
            description=tool_description(agent),
            input_schema=TASK_SCHEMA,
            output_schema=None if self._output is None else self._output.schema,
        )
        """How ``tools/list`` shows it."""
        self._agent_name = agent.name

    def server(self) -> McpServer[McpScope]:
        """A low-level MCP server with this one tool; each connection's state is its :class:`McpScope`."""
        return McpServer[McpScope](self._agent_name, on_list_tools=self._list_tools, on_call_tool=self._call_tool)

    async def _list_tools(
        self, ctx: ServerRequestContext[McpScope], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[self.tool])

    async def _call_tool(
        self, ctx: ServerRequestContext[McpScope], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if params.name != self.name:
            raise MCPError(code=types.INVALID_PARAMS, message=f"no tool {params.name!r}: this server has {self.name!r}")
        task = (params.arguments or {}).get("task")
        if not isinstance(task, str):
            return _error_result("'task' must be a string: what the agent should do")
        return await _Call(ctx, self._output).run(task)


def _error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=escape_surrogates(message))], is_error=True)


def _sendable(value: Any) -> Any:
    """JSON data with :func:`~streams._codec.escape_surrogates` applied to every string in it."""
    if isinstance(value, str):
        return escape_surrogates(value)
    if isinstance(value, dict):
        return {_sendable(key): _sendable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_sendable(item) for item in value]
    return value


def _elicitation(event: Event) -> ElicitationRequest | None:
    """The question in ``event``: its own, or a sub-agent's (wrapped, at any depth)."""
    while type(event) is SubAgentEvent:
        event = event.event
    return event if type(event) is ElicitationRequest else None


class _Progress:
    """The text a run streams, sent as progress notifications by a task of its own.

    What arrived while a notification was being sent goes in the next one,
    so the run is never held up by a slow client and at most one
    notification is on its way; the text kept meanwhile is text the run's
    result keeps anyway. ``progress`` counts the characters sent so far.
    """

    def __init__(self, ctx: ServerRequestContext[McpScope]) -> None:
        self._ctx = ctx
        self._pending: list[str] = []
        self._sent = 0
        self._wakeup = trio.Event()
        self._closed = False

    def add(self, text: str) -> None:
        if text:
            self._pending.append(text)
            self._wakeup.set()

    def close(self) -> None:
        """No more text: :meth:`pump` sends what is left, then returns."""
        self._closed = True
        self._wakeup.set()

    async def pump(self) -> None:
        while True:
            if self._pending:
                text = "".join(self._pending)
                self._pending.clear()
                self._sent += len(text)
                # A no-op when the call did not ask for progress (no progressToken).
                await self._ctx.session.report_progress(self._sent, None, escape_surrogates(text))
            elif self._closed:
                return
            else:
                await self._wakeup.wait()
                self._wakeup = trio.Event()


class _Call:
    """One ``tools/call``: a run in the connection's session, its text as progress, its questions asked."""

    def __init__(self, ctx: ServerRequestContext[McpScope], output: _TypedOutput | None) -> None:
        self._ctx = ctx
        self._scope = ctx.lifespan_context
        self._output = output

    async def run(self, task: str) -> types.CallToolResult:
        recorder = self._scope.recorder
        finished: RunFinished | None = None
        error: ErrorEvent | None = None
        progress = _Progress(self._ctx)
        requests = self._scope.requests
        gone = None if requests is None or self._ctx.request_id is None else requests.ended(self._ctx.request_id)
        # No checkpoint from here to run_begins: calls at once cannot all pass the check.
        refusal = None if self._scope.queue_full is None else self._scope.queue_full()
        if refusal is not None:  # the session is left as it is: no run begins
            return _error_result(refusal)
        async with self._scope.session.run(task, deps=self._scope.deps) as stream:
            run_id = stream.run_id
            if recorder is not None:
                recorder.run_begins(run_id, stream)
            try:
                async with trio.open_nursery() as pumping:
                    pumping.start_soon(progress.pump)
                    try:
                        async with trio.open_nursery() as asking:
                            if gone is not None:
                                asking.start_soon(self._cancel_when_gone, gone, stream)
                            async for event in stream:
                                if recorder is not None:
                                    recorder.record(run_id, event)
                                if type(event) is TextDelta:
                                    progress.add(event.text)
                                elif type(event) is ErrorEvent:
                                    error = event
                                elif type(event) is RunFinished:
                                    finished = event
                                question = _elicitation(event)
                                if question is not None:
                                    asking.start_soon(self._ask, stream, question)
                            asking.cancel_scope.cancel()  # the run is over: nobody waits for those answers
                    finally:
                        progress.close()  # the pump sends what is left, then the result follows it
            finally:
                if recorder is not None:
                    if finished is None:  # followers see it end as this call did
                        recorder.record(run_id, RunFinished("cancelled"))
                    recorder.run_ends(run_id)
            result = stream.result
        assert finished is not None  # a RunStream always ends with one
        if finished.reason != "completed":
            reason = error.message if error is not None else finished.message
            return _error_result(f"the run ended: {finished.reason}" + (f": {reason}" if reason else ""))
        if self._output is None:
            return types.CallToolResult(content=[types.TextContent(text=escape_surrogates(str(result.output or "")))])
        data, structured = self._output.dump(result.output)
        try:
            text = json.dumps(data, allow_nan=False)
        except ValueError:  # Infinity or NaN: not JSON, and not a number the output schema allows
            return _error_result("the agent's output holds a number JSON cannot carry (infinity or NaN)")
        return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=_sendable(structured))

    async def _cancel_when_gone(self, gone: trio.Event, stream: RunStream) -> None:
        """Cancel the run once the client's stream of this call has ended: it would wait for answers forever."""
        await gone.wait()
        logger.info("the stream of MCP request %r ended before its result: cancelling its run", self._ctx.request_id)
        stream.cancel()

    async def _ask(self, stream: RunStream, question: ElicitationRequest) -> None:
        """Put ``question`` to the client (``elicitation/create``) and give the run its answer."""
        form, unwrap = _form(_sendable(question.schema))
        message = escape_surrogates(question.message)
        session = self._ctx.session
        capabilities = session.client_capabilities
        for _ in range(ELICITATION_ATTEMPTS if capabilities is not None and capabilities.elicitation else 0):
            try:
                answer = await session.elicit_form(message, form, related_request_id=self._ctx.request_id)
            except (MCPError, NoBackChannelError, pydantic.ValidationError) as exc:
                logger.info("the client did not answer question %s: %s", question.id, exc)
                break
            try:
                if answer.action == "accept":
                    await stream.respond(question.id, "accept", unwrap(answer.content))
                else:
                    await stream.respond(question.id, answer.action)
                return
            except InvalidElicitationResponse as exc:
                message = escape_surrogates(f"{question.message}\n\n(Please answer again: {exc})")
            except UnknownElicitationError:
                return  # its tool stopped waiting (a timeout, or its call ended)
        try:
            await stream.respond(question.id, "cancel")  # no answer that fits: the human could not be asked
        except UnknownElicitationError:
            pass


def _form(schema: dict[str, Any] | None) -> tuple[dict[str, Any], Callable[[Any], Any]]:
    """The ``requestedSchema`` for a question's schema, and what takes the answer out of the filled form.

    MCP's forms are objects of flat fields: an object schema is asked as it
    is; any other (``bool``, a ``Literal``, none at all: any text) is the one
    field ``answer``.
    """
    if schema is not None and schema.get("type") == "object":
        return schema, lambda content: content
    field = schema if schema is not None else {"type": "string"}
    form = {"type": "object", "properties": {_ANSWER: field}, "required": [_ANSWER]}
    return form, lambda content: content.get(_ANSWER) if isinstance(content, dict) else content


# -- stdio -----------------------------------------------------------------------------------


async def serve_stdio(
    agent: Agent[Any, Any],
    *,
    runtime: Runtime | None = None,
    stdin: trio.abc.ReceiveStream | None = None,
    stdout: trio.abc.SendStream | None = None,
) -> None:
    """Serve ``agent`` as an MCP server over stdin and stdout until stdin ends (or the caller cancels).

    Every call runs in one session, open for the whole time. While it
    serves, fd 0 reads the null device and fd 1 writes to stderr, so a tool
    that reads or prints cannot corrupt the wire; both are restored after.

    Args:
        agent: The agent, served as one tool.
        runtime: Run its session in this runtime (default: a runtime of its own).
        stdin: Read messages from this stream instead of fd 0 (and leave the fds alone).
        stdout: Write messages to this stream instead of fd 1.
    """
    server = AgentTool(agent).server()
    async with AsyncExitStack() as stack:
        if stdin is None or stdout is None:
            wire_in, wire_out = await stack.enter_async_context(_claim_stdio())
            stdin = stdin or wire_in
            stdout = stdout or wire_out
        if runtime is None:
            runtime = await stack.enter_async_context(open_runtime())
        session = await stack.enter_async_context(runtime.open_session(agent))
        scope = McpScope(session, deps=Workspace())
        read_send, read_receive = anyio.create_memory_object_stream[SessionMessage](0)
        write_send, write_receive = anyio.create_memory_object_stream[SessionMessage | bytes](0)
        async with trio.open_nursery() as nursery:
            reading = trio.CancelScope()
            nursery.start_soon(_read_lines, stdin, read_send, write_send.clone(), reading)
            nursery.start_soon(_write_lines, stdout, write_receive)
            await serve_loop(server, read_receive, write_send, lifespan_state=scope)
            reading.cancel()  # the loop ended (and closed write_send, so the writer ends once it has written all)


@asynccontextmanager
async def _claim_stdio() -> AsyncIterator[tuple[trio.lowlevel.FdStream, trio.lowlevel.FdStream]]:
    """fd 0 and 1 as Trio streams (on copies), with fd 0 on the null device and fd 1 on stderr meanwhile."""
    sys.stdout.flush()
    saved_in, saved_out = os.dup(0), os.dup(1)
    try:
        wire_in = trio.lowlevel.FdStream(os.dup(0))
        wire_out = trio.lowlevel.FdStream(os.dup(1))
        async with wire_in, wire_out:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            os.dup2(2, 1)
            try:
                yield wire_in, wire_out
            finally:
                sys.stdout.flush()
                os.dup2(saved_in, 0)
                os.dup2(saved_out, 1)
    finally:
        os.close(saved_in)
        os.close(saved_out)


async def _read_lines(
    stream: trio.abc.ReceiveStream,
    messages: MemoryObjectSendStream[SessionMessage],
    answers: MemoryObjectSendStream[bytes],
    scope: trio.CancelScope,
) -> None:
    """Each line read as a message until EOF; a line that is not one is answered on ``answers`` instead
    (the SDK's loop would drop it, and its client wait for ever)."""
    with scope:
        async with messages, answers:
            buffer = bytearray()
            while data := await stream.receive_some():
                buffer += data
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if not line.strip():
                        continue
                    parsed = _parse(line)
                    if isinstance(parsed, SessionMessage):
                        await messages.send(parsed)
                    elif parsed is not None:
                        try:
                            await answers.send(parsed)
                        except anyio.BrokenResourceError:
                            logger.info("stdout was closed: an error could not be answered")
                if len(buffer) > MAX_LINE:
                    logger.error("a message over %d bytes came on stdin: closing", MAX_LINE)
                    return


def _parse(line: bytes) -> SessionMessage | bytes | None:
    """The message ``line`` holds; for a line that is not one, the line answering it as JSON-RPC 2.0 says
    (``None``: nothing to answer), with a warning.

    Not JSON is a parse error (``-32700``); a request whose ``params`` are not an object an invalid-params
    error (``-32602``) with its id; anything else that is not a message an invalid request (``-32600``),
    with its id when that is a string or an integer. A notification, or a response, is not answered. A
    batch (MCP has none since 2025-06-18) is answered by an array of errors, one for each request in it.
    """
    try:
        data = pydantic_core.from_json(line)
    except ValueError:
        try:  # what pydantic's parser refuses that is JSON all the same: a lone surrogate escape ("\ud83d")
            data = loads_untrusted(line)
        except ValueError as exc:
            return _refuse(_error(None, types.PARSE_ERROR, f"Parse error: {exc}"))
    if isinstance(data, list):
        if not data:
            return _refuse(_error(None, types.INVALID_REQUEST, "Invalid request: an empty batch"))
        errors = [
            error
            for element in data
            if (error := _invalid(element, "Invalid request: batches are not supported")) is not None
        ]
        logger.warning("a batch on stdin: %d of its %d elements answered with an error", len(errors), len(data))
        return b"[" + b",".join(_dump(error) for error in errors) + b"]" if errors else None
    try:
        message = types.jsonrpc_message_adapter.validate_python(data, by_name=False)
    except (ValueError, RecursionError):  # pydantic's ValidationError is a ValueError
        error = _invalid(data, None)
        if error is None:
            logger.warning("a notification or response on stdin is not valid: dropped")
            return None
        return _refuse(error)
    if isinstance(message, types.JSONRPCNotification) and isinstance(data, dict) and "id" in data:
        # Read as a notification (pydantic ignores the id), but it asks for an answer.
        return _refuse(_error(None, types.INVALID_REQUEST, "Invalid request: the id must be a string or an integer"))
    return SessionMessage(message)


def _invalid(data: object, reason: str | None) -> types.JSONRPCError | None:
    """The error answering ``data``, an element of a batch (refused for ``reason``) or a message that is not
    valid (``reason`` ``None``): ``None`` for a notification or a response, which get no answer."""
    if not isinstance(data, dict):
        return _error(None, types.INVALID_REQUEST, reason or "Invalid request: not a JSON-RPC 2.0 message")
    method, request_id = data.get("method"), data.get("id")
    if ("id" not in data and isinstance(method, str)) or ("method" not in data and {"result", "error"} & data.keys()):
        return None
    readable = request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None
    if reason is not None:
        return _error(readable, types.INVALID_REQUEST, reason)
    if readable is not None and isinstance(method, str) and data.get("jsonrpc") == "2.0":
        return _error(readable, types.INVALID_PARAMS, "Invalid params: they must be an object")
    return _error(readable, types.INVALID_REQUEST, "Invalid request: not a JSON-RPC 2.0 message")


def _error(request_id: types.RequestId | None, code: int, message: str) -> types.JSONRPCError:
    return types.JSONRPCError(jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message))


def _dump(error: types.JSONRPCError) -> bytes:
    return error.model_dump_json(by_alias=True, exclude_unset=True).encode()


def _refuse(error: types.JSONRPCError) -> bytes:
    logger.warning(
        "a line on stdin is not a message: answered %d (%s), id %r", error.error.code, error.error.message, error.id
    )
    return _dump(error)


async def _write_lines(
    stream: trio.abc.SendStream, messages: MemoryObjectReceiveStream[SessionMessage | bytes]
) -> None:
    """Each message (or answer, already a line) written as a line, until every sender is closed."""
    async with messages:
        try:
            async for message in messages:
                if isinstance(message, SessionMessage):
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True).encode()
                else:
                    data = message
                await stream.send_all(data + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            logger.info("stdout was closed: nothing more can be sent")


# -- streamable HTTP -------------------------------------------------------------------------


class McpEndpoint:
    """``/mcp``: MCP's streamable HTTP transport, each MCP session a served session of its own.

    The served runtime checks what it checks for every route (``Host``,
    ``Origin``, the token, the body's size and time) before a request gets
    here. A POST of an ``initialize`` without ``Mcp-Session-Id`` opens a
    session (closed again if MCP's transport refuses it, as it refuses a
    body that is not a message); any other request without one is answered
    400, opening nothing; one with an id the endpoint does not know (never
    was, or closed) is answered 404 with a JSON-RPC error, which tells the
    client to start again.

    Args:
        agent: The agent, served as one tool.
        open_session: Opens a served session with the given id (``Server.open_session``).
        queue_full: Why a new run of a served session is refused now (``max_queued_runs``), or ``None``:
            a call it refuses is an ``isError`` result saying so.
    """

    def __init__(
        self,
        agent: Agent[Any, Any],
        open_session: Callable[[str], Awaitable[ServedSession]],
        *,
        queue_full: Callable[[ServedSession], str | None] | None = None,
    ) -> None:
        self._server = AgentTool(agent).server()
        self._open_session = open_session
        self._queue_full = queue_full
        self._sessions: dict[str, tuple[StreamableHTTPServerTransport, ServedSession, OpenRequests]] = {}

    async def handle(self, scope: Scope, receive: Receive, send: Send, *, body: bytes = b"") -> None:
        """Answer one request (the checks of the served runtime passed); ``body``: a POST's, already read
        (``receive`` gives it again)."""
        session_id = _header(scope, MCP_SESSION_ID_HEADER)
        if session_id is None:
            if scope["method"] == "POST" and _may_open(body):
                await self._open(scope, receive, send)
            else:  # refused before a session is opened: no session limit can answer 503 instead
                await _missing_session(scope, receive, send)
            return
        found = self._sessions.get(session_id)
        if found is None:
            await _unknown_session(scope, receive, send)
            return
        transport, served, requests = found
        # A request in flight (a GET stream too) keeps the session; a call's run lasts no longer than its POST.
        with served.session.in_use(), requests.open(_request_id(body) if body else None):
            await transport.handle_request(scope, receive, send)

    async def _open(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Raises ClosedSessionError or TooManySessionsError: the caller answers those.
        served = await self._open_session(f"mcp-{secrets.token_hex(16)}")
        transport = StreamableHTTPServerTransport(mcp_session_id=served.id)
        status: int | None = None

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            try:
                await served.session.start(self._serve, transport, served, name=f"MCP session {served.id}")
            except ClosedSessionError:  # closed as soon as it was opened: the server is shutting down
                await error_response(503, "shutting_down", "the server is shutting down")(scope, receive, send)
                return
            with served.session.in_use():
                await transport.handle_request(scope, receive, watch)
        finally:
            if status is None or status >= 400:  # not an initialize that succeeded: no session after all
                await served.handle.aclose()

    async def _serve(
        self,
        transport: StreamableHTTPServerTransport,
        served: ServedSession,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The MCP session's loop, a task of its served session: it ends when either ends."""
        requests = OpenRequests()
        self._sessions[served.id] = (transport, served, requests)
        try:
            async with transport.connect() as (read_stream, write_stream), trio.open_nursery() as nursery:
                nursery.start_soon(_terminate_when_cancelled, transport)
                task_status.started()
                queue_full = None if self._queue_full is None else functools.partial(self._queue_full, served)
                scope = McpScope(
                    served.session, deps=served.workspace, recorder=served, requests=requests, queue_full=queue_full
                )
                await serve_loop(self._server, read_stream, write_stream, lifespan_state=scope, session_id=served.id)
                nursery.cancel_scope.cancel()
        except Exception:
            logger.exception("MCP session %s failed", served.id)
        finally:
            del self._sessions[served.id]
            with trio.CancelScope(shield=True):
                await transport.terminate()  # what still reaches it is answered 404, and its streams end
            served.session.cancel()  # the MCP session ended (a DELETE): so does the session


async def _terminate_when_cancelled(transport: StreamableHTTPServerTransport) -> None:
    """Terminate ``transport`` as soon as the MCP session's task is cancelled (its session closes).

    Its streams closed, a handler's last writes fail at once: the SDK's courtesy
    ``notifications/cancelled`` for a question still open would otherwise wait
    5 s for the transport's router, cancelled with it, before giving up.
    """
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await transport.terminate()


def _request_id(body: bytes) -> types.RequestId | None:
    """The id of the JSON-RPC request ``body`` holds, as the transport reads it; ``None`` for anything else
    (a notification, a response, or what is not a message: the transport answers that)."""
    try:
        message = types.jsonrpc_message_adapter.validate_json(body, by_name=False)
    except ValueError:  # pydantic's ValidationError is a ValueError
        return None
    return message.id if isinstance(message, types.JSONRPCRequest) else None


def _may_open(body: bytes) -> bool:
    """Whether a POST without a session id may open one: an ``initialize``, or a body that is not a message
    (MCP's transport answers that, in a session it opens and closes at once)."""
    try:
        message = types.jsonrpc_message_adapter.validate_json(body, by_name=False)
    except ValueError:  # pydantic's ValidationError is a ValueError
        return True
    return isinstance(message, types.JSONRPCRequest) and message.method == "initialize"


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope["headers"]:
        if key.lower() == wanted:
            return str(value.decode("latin-1"))
    return None


async def _missing_session(scope: Scope, receive: Receive, send: Send) -> None:
    """MCP's transport's own answer to a request that needs a session and names none."""
    error = types.JSONRPCError(
        jsonrpc="2.0",
        id=None,
        error=types.ErrorData(code=types.INVALID_REQUEST, message="Bad Request: Missing session ID"),
    )
    body = error.model_dump_json(by_alias=True, exclude_unset=True)
    await Response(body, status_code=400, media_type="application/json")(scope, receive, send)


async def _unknown_session(scope: Scope, receive: Receive, send: Send) -> None:
    error = types.JSONRPCError(
        jsonrpc="2.0", id=None, error=types.ErrorData(code=types.INVALID_REQUEST, message="Session not found")
    )
    body = error.model_dump_json(by_alias=True, exclude_unset=True)
    await Response(body, status_code=404, media_type="application/json")(scope, receive, send)
