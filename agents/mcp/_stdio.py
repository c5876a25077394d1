"""The stdio transport: an MCP server run as a subprocess, spoken to over its stdin and stdout.

Written on Trio rather than taken from the SDK's ``stdio_client`` for what a
session needs to own a server process: the grace periods are the caller's,
the server's stderr is kept (its last lines name a crash), and when stdout
ends the process's exit status is known before the calls in flight fail, so
their errors say how the server ended.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Final

import anyio
import attrs
import trio
from mcp.shared.message import SessionMessage
from mcp_types import PARSE_ERROR, ErrorData, JSONRPCError, jsonrpc_message_adapter

from .._exceptions import describe
from .._json import loads_untrusted

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    StreamPair = tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]

logger = logging.getLogger("agents.mcp")

MAX_MESSAGE_BYTES: Final = 32 * 1024 * 1024
"""The longest line (one JSON-RPC message) a server may send; a longer one ends the connection."""
EXIT_WAIT: Final = 1.0
"""Seconds to wait, once a server's stdout has ended, for its process to exit (to say how it ended)."""
FLUSH_TIMEOUT: Final = 0.5
"""Seconds the messages already accepted may take to reach the server's stdin when closing."""
KILL_WAIT: Final = 5.0
"""Seconds to wait for a killed process to be reaped (only a process stuck in the kernel takes any)."""
GROUP_POLL: Final = 0.05
"""Seconds between looks at whether what a server left in its process group has exited (they are not our children)."""
STOPPED_READING: Final = "it stopped reading its stdin"
"""The problem of a server whose stdin closed while it still runs (once it has exited, its status says more)."""
_STDERR_LINES: Final = 20
_STDERR_SHOWN: Final = 500
_STDERR_NAMED: Final = 2  # the last lines, in an error: a traceback's last line says the most
_READ_SIZE: Final = 65536


@attrs.define(eq=False)
class ServerProcess:
    """What a connection knows of its server's process: how it ended, and what it last wrote on stderr."""

    command: str
    pid: int | None = None
    returncode: int | None = None
    """The exit status once the process was reaped (negative: killed by that signal)."""
    problem: str | None = None
    """What went wrong on the pipes, if anything (a line over :data:`MAX_MESSAGE_BYTES`, a closed stdin)."""
    closing: bool = False
    """Whether we are closing it (an end we asked for is not a crash)."""
    stderr: collections.deque[str] = attrs.field(factory=lambda: collections.deque(maxlen=_STDERR_LINES))
    """Its last lines on stderr."""

    def describe_end(self) -> str:
        """How the server ended, for an error: its exit status or signal, and its last words on stderr."""
        code = self.returncode
        if self.problem is not None and not (self.problem == STOPPED_READING and code is not None):
            what = self.problem  # a closed stdin says less than the exit status, once there is one
        elif code is None:
            what = "it closed its stdout"
        elif code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            what = f"its process was killed by {name}"
        else:
            what = f"its process exited with status {code}"
        last = " | ".join([line.strip() for line in self.stderr if line.strip()][-_STDERR_NAMED:])
        if last:
            shown = last if len(last) <= _STDERR_SHOWN else f"…{last[-_STDERR_SHOWN + 1 :]}"
            what = f"{what} (stderr: {shown})"
        return what


@asynccontextmanager
async def stdio_transport(
    command: str,
    args: tuple[str, ...],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    process: ServerProcess,
    shutdown_grace: float,
    terminate_grace: float,
) -> AsyncIterator[
    tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]
]:
    """Run the server and yield the stream pair the SDK's client speaks over.

    Leaving the block stops the server as the protocol says: its stdin is
    closed, it has ``shutdown_grace`` seconds to exit, then its process group
    gets SIGTERM, ``terminate_grace`` seconds more, then SIGKILL; it is
    reaped on every path (no zombie) and every pipe is closed. Shielded, so
    a cancelled owner still does all of it. Whatever it started that is left
    in its group once it has exited gets SIGTERM, then SIGKILL after
    ``terminate_grace``; at once if it crashed. A crash ends the connection
    even while such a process holds its stdout open.

    Raises:
        OSError: the command could not be started.
    """
    proc = await trio.lowlevel.open_process(
        [command, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,  # its own process group: closing reaches what it started too (npx's node)
    )
    process.pid = proc.pid
    # No checkpoint from here until the nursery is open and the finally below is armed.
    read_send, read_receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_send, write_receive = anyio.create_memory_object_stream[SessionMessage](0)
    writer_done = trio.Event()
    stderr_done = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_stderr, proc, process, stderr_done)
            nursery.start_soon(_read_stdout, proc, process, read_send, stderr_done)
            nursery.start_soon(_write_stdin, proc, process, write_receive, read_send, writer_done, stderr_done)
            nursery.start_soon(_watch_exit, proc, process, terminate_grace)
            try:
                yield read_receive, write_send
            finally:
                process.closing = True
                with trio.CancelScope(shield=True):
                    write_send.close()  # nothing more to send: the writer flushes what it has, then ends
                    with trio.move_on_after(FLUSH_TIMEOUT):
                        await writer_done.wait()
                    await _stop(proc, process, shutdown_grace, terminate_grace)
                nursery.cancel_scope.cancel()  # the readers: a survivor of the kill may hold its pipes open
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:  # an error before the block ran, or the graceful stop gave up
                await _stop(proc, process, 0, 0)
                if proc.returncode is not None:
                    await _end_group(proc.pid, 0)
            for stream in (read_send, read_receive, write_send, write_receive):
                stream.close()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with suppress(trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                        await pipe.aclose()


async def _read_stdout(
    proc: trio.Process,
    process: ServerProcess,
    read_send: MemoryObjectSendStream[SessionMessage | Exception],
    stderr_done: trio.Event,
) -> None:
    assert proc.stdout is not None
    deliver = True
    buffer = bytearray()
    try:
        async with read_send:
            while True:
                try:
                    chunk = await proc.stdout.receive_some(_READ_SIZE)
                except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                    chunk = b""
                if not chunk:
                    break
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if deliver and line.strip():
                        try:
                            await read_send.send(_parse(line))
                        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                            deliver = False  # the client is gone: read on, so a server writing can exit
                if len(buffer) > MAX_MESSAGE_BYTES:
                    process.problem = f"it sent a message longer than {MAX_MESSAGE_BYTES} bytes"
                    _signal_group(proc, signal.SIGKILL)
                    break
            if not process.closing:
                # The server ended on its own: learn how before the calls in flight
                # fail (closing read_send fails them), so their errors can say it.
                with trio.move_on_after(EXIT_WAIT):
                    await proc.wait()
                    await stderr_done.wait()
                process.returncode = proc.returncode
    finally:
        if not process.closing and process.returncode is not None:
            logger.warning("MCP server %s ended: %s", process.command, process.describe_end())


def _parse(line: bytes) -> SessionMessage | Exception:
    """The message on one line of the server's stdout; what is not one is logged, and an error.

    An answer that cannot be read fails its own request: the SDK's client logs
    an error it is handed and goes on, and the call would wait for ever.
    """
    try:
        return SessionMessage(jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:  # pydantic's ValidationError is one
        error = exc
    data = None
    try:
        # pydantic's parser refuses a lone surrogate escape ("\ud83d"), which is JSON all the same:
        # JavaScript writes one for any string cut in the middle of an emoji.
        data = loads_untrusted(line)
        return SessionMessage(jsonrpc_message_adapter.validate_python(data, by_name=False))
    except ValueError as exc:
        error = exc
    shown = line[:200].decode("utf-8", "replace")
    logger.warning("an MCP server sent a line that is not a JSON-RPC message: %s", shown)
    answer_to = data.get("id") if isinstance(data, dict) and "method" not in data else None
    if isinstance(answer_to, int | str) and not isinstance(answer_to, bool):
        message = f"the MCP server's answer is not a valid JSON-RPC message: {describe(error)[:300]}"
        error_data = ErrorData(code=PARSE_ERROR, message=message)
        return SessionMessage(JSONRPCError(jsonrpc="2.0", id=answer_to, error=error_data))
    return error


async def _watch_exit(proc: trio.Process, process: ServerProcess, terminate_grace: float) -> None:
    """Whenever the server exits: end what it left in its process group, and its pipes if they stay open."""
    await proc.wait()
    # Just reaped, its pid is still its group's id and no one else's; what it
    # started in that group (npx's node, a helper) would outlive it unstopped.
    with trio.CancelScope(shield=True):
        await _end_group(proc.pid, terminate_grace if process.closing else 0)
    if not process.closing:
        # A crash: what it wrote before is in the pipes, but a survivor out of its
        # group may hold them open, and the calls in flight would wait forever
        # for the end of stdout. Closing them ends the readers.
        await trio.sleep(EXIT_WAIT)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                with suppress(trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                    await pipe.aclose()


async def _write_stdin(
    proc: trio.Process,
    process: ServerProcess,
    write_receive: MemoryObjectReceiveStream[SessionMessage],
    read_send: MemoryObjectSendStream[SessionMessage | Exception],
    writer_done: trio.Event,
    stderr_done: trio.Event,
) -> None:
    assert proc.stdin is not None
    try:
        async with write_receive:  # open until the end is known: a message sent meanwhile waits for it
            try:
                async for message in write_receive:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await proc.stdin.send_all(data.encode() + b"\n")
            except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                # It stopped reading (it exited, or closed its stdin): end the connection,
                # or a call would wait forever for an answer to a request never delivered.
                if not process.closing:
                    # Most often it exited: learn how before the calls in flight fail (closing
                    # read_send fails them), so their errors can say it, as the stdout reader does.
                    with trio.move_on_after(EXIT_WAIT):
                        await proc.wait()
                        await stderr_done.wait()
                    process.returncode = proc.returncode
                    if process.returncode is None and process.problem is None:
                        process.problem = STOPPED_READING
                read_send.close()
    finally:
        writer_done.set()


async def _read_stderr(proc: trio.Process, process: ServerProcess, stderr_done: trio.Event) -> None:
    assert proc.stderr is not None
    partial = b""
    try:
        while True:
            try:
                chunk = await proc.stderr.receive_some(_READ_SIZE)
            except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                break
            if not chunk:
                break
            *lines, partial = (partial + chunk).split(b"\n")
            partial = partial[-_READ_SIZE:]  # a server writing one endless line keeps its end
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip()
                process.stderr.append(line[-_STDERR_SHOWN:])
                logger.debug("MCP server %s: %s", process.command, line)
        if partial.strip():
            process.stderr.append(partial.decode("utf-8", "replace").rstrip()[-_STDERR_SHOWN:])
    finally:
        stderr_done.set()


async def _stop(proc: trio.Process, process: ServerProcess, shutdown_grace: float, terminate_grace: float) -> None:
    """Close its stdin, wait, SIGTERM its group, wait, SIGKILL it; it is reaped at the end (no zombie)."""
    if proc.stdin is not None:
        with suppress(trio.ClosedResourceError, trio.BrokenResourceError, OSError):
            await proc.stdin.aclose()  # the stdio protocol's shutdown: end of input
    if await _exited_within(proc, shutdown_grace):
        return
    _signal_group(proc, signal.SIGTERM)
    if await _exited_within(proc, terminate_grace):
        return
    _signal_group(proc, signal.SIGKILL)
    if not await _exited_within(proc, KILL_WAIT):
        logger.error("MCP server %s (pid %s) survived SIGKILL; abandoning it", process.command, proc.pid)


async def _exited_within(proc: trio.Process, seconds: float) -> bool:
    with trio.move_on_after(seconds):
        await proc.wait()  # reaps it
    return proc.returncode is not None


def _signal_group(proc: trio.Process, signum: signal.Signals) -> None:
    # Only while it is unreaped: then its pid (its group's id) is still ours to signal.
    if proc.returncode is None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)


async def _end_group(pgid: int, grace: float) -> None:
    """SIGTERM what is left in the group of a server just reaped, and SIGKILL what is still there after ``grace``.

    Called right after the reap: a group id is not reused while the group has
    a member, and a pid just freed is not handed out again at once.
    """
    if not _signal_pgid(pgid, signal.SIGTERM):
        return  # nothing left
    with trio.move_on_after(grace):
        # No event says a process that is not our child has exited: look again and again.
        while True:
            if not _signal_pgid(pgid, 0):
                return
            await trio.sleep(GROUP_POLL)
    _signal_pgid(pgid, signal.SIGKILL)


def _signal_pgid(pgid: int, signum: int) -> bool:
    """Signal a process group; whether it still had a member."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
