"""Remote client: a local session attaches to a session of a served runtime and runs a prompt there.

Start a server first (in another terminal):

    python examples/serve.py

then attach to it, run one prompt and keep watching until Ctrl-C:

    python examples/remote_client.py --prompt "remember the milk"

or run one prompt and exit once the session is idle again:

    python examples/remote_client.py --once --url http://127.0.0.1:8765 --session demo

A ``streams.RemoteSession``, started in a local session, keeps three streams
of the remote session alive (reconnecting with backoff): the ``updates``
WebSocket (every run's events, whoever started the run), the ``workspace``
WebSocket (file changes, and commands from us) and the between-run feed (SSE:
session state, workspace changes, notices). Their messages reach
``print_event`` below, prefixed ``[updates]``, ``[workspace]`` and ``[feed]``.
The prompt itself runs attached: its events stream back as SSE, and the
answer is printed as it streams. Closing the local session (Ctrl-C, or the
end of ``--once``) closes every connection at once. A prompt whose run ends
otherwise than completed exits 1 at once, saying how it ended.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
from typing import TYPE_CHECKING, Any

import trio

from agents import Agent, ScriptedModel
from runtime import open_runtime
from runtime.events import ErrorEvent, RunFinished, TextDelta, ToolCallFinished, ToolCallStarted
from streams import ClosedRemoteSessionError, RemoteError, RemoteSession, StreamError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from streams import RemoteEvent

CONNECT_TIMEOUT = 10.0
"""Seconds to wait for the three streams to come up."""
SETTLE_TIMEOUT = 10.0
"""Seconds to wait, after the run, for the updates stream and the feed to show it over."""


class Console:
    """Prints the answer as it streams, and keeps the handler's lines from splitting it.

    While a line of streamed text is open, other lines wait; they are printed
    as soon as that line ends.
    """

    def __init__(self) -> None:
        self._open = False
        self._waiting: list[str] = []

    def stream(self, text: str) -> None:
        """Continue the open line with streamed text."""
        if not self._open:
            print("  ", end="")
            self._open = True
        print(text, end="", flush=True)

    def end_stream(self) -> None:
        """End the open line of streamed text, if any, and print the lines that waited for it."""
        if self._open:
            print(flush=True)
            self._open = False
        for line in self._waiting:
            print(line, flush=True)
        self._waiting.clear()

    def line(self, text: str) -> None:
        """Print a whole line (after the streamed line, if one is open)."""
        if self._open:
            self._waiting.append(text)
        else:
            print(text, flush=True)


class Watcher:
    """The :class:`RemoteSession`'s handler: prints each message and keeps track of the remote session."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.state = "unknown"
        """The remote session's state as the feed last reported it."""
        self.seen_running: set[str] = set()
        """Runs the feed reported running."""
        self.finished: set[str] = set()
        """Runs whose ``RunFinished`` came on the updates stream."""
        self._deltas = 0
        self._changed = trio.Event()

    async def print_event(self, event: RemoteEvent) -> None:
        """Show one message of the ``updates``, ``workspace`` or ``feed`` stream."""
        data = event.data
        if event.stream == "updates" and event.type == "TextDelta":
            self._deltas += 1  # the text itself is printed as it streams from the run
            return
        if event.stream == "updates" and event.type == "RunFinished":
            self.finished.add(str(data.get("run_id")))
            text = f"RunFinished {data.get('reason')} (after {self._deltas} TextDelta events)"
            self._deltas = 0
        elif event.type == "SessionState":
            self.state = str(data.get("state"))
            if self.state == "running" and "run_id" in data:
                self.seen_running.add(str(data["run_id"]))
            text = f"SessionState {self.state}" + (f" (run {data['run_id']})" if "run_id" in data else "")
        else:
            text = _describe(event.type, data)
        self.console.line(f"[{event.stream}] {text}")
        self._changed.set()
        self._changed = trio.Event()

    async def wait_settled(self, run_id: str) -> None:
        """Wait until the updates stream has shown ``run_id`` finish and the feed the session idle after it."""
        while not (run_id in self.finished and run_id in self.seen_running and self.state == "idle"):
            await self._changed.wait()


def _describe(kind: str, data: dict[str, Any]) -> str:
    if kind == "RunStarted":
        return f"RunStarted (run {data.get('run_id')})"
    if kind in ("ToolCallStarted", "ToolCallFinished"):
        return f"{kind} {data.get('name')}"
    if kind == "WorkspaceChanged":
        return f"WorkspaceChanged {data.get('op')} {data.get('path')} by {data.get('source')}"
    if kind == "Notice":
        return f"Notice: {data.get('message')}"
    return f"{kind} {_fields(data)}".rstrip()


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _fields(data: dict[str, Any]) -> str:
    return " ".join(f"{key}={value!r}" for key, value in data.items() if key not in ("type", "run_id"))


async def run_prompt(remote: RemoteSession, prompt: str, console: Console) -> tuple[str | None, str | None, str | None]:
    """Run ``prompt`` in the remote session, printing its events as they stream; returns its run id, note and
    finish reason (``None``: the stream ended without one)."""
    run_id: str | None = None
    note: str | None = None
    reason: str | None = None
    async with remote.run(prompt) as updates:
        async for update in updates:
            run_id = update.run_id or run_id
            event = update.event
            if isinstance(event, TextDelta):
                console.stream(event.text)
                continue
            console.end_stream()
            if isinstance(event, ToolCallStarted):
                arguments = ", ".join(f"{key}={value!r}" for key, value in event.arguments.items())
                console.line(f"  -> {event.name}({arguments})")
                if event.name == "write_file":
                    note = str(event.arguments.get("path"))
            elif isinstance(event, ToolCallFinished):
                outcome = f"error: {event.error}" if event.error else repr(event.result)
                console.line(f"  <- {event.name}: {outcome}")
            elif isinstance(event, ErrorEvent):
                console.line(f"  [{event.kind} error] {event.message}")
            elif isinstance(event, RunFinished):
                reason = event.reason
                console.line(f"[run finished: {event.reason}]")
    console.end_stream()
    return run_id, note, reason


async def attach(url: str, session_id: str, prompt: str, *, token: str | None = None, once: bool = False) -> int:
    """Attach to ``session_id`` at ``url``, run ``prompt`` there, then watch (or, with ``once``, return)."""
    console = Console()
    watcher = Watcher(console)
    # The local session owns the link: closing it closes every connection to the server.
    local_agent = Agent(name="local", instructions="Unused: the prompt runs remotely.", model=ScriptedModel([]))
    async with open_runtime() as runtime, runtime.open_session(local_agent) as session:
        remote = RemoteSession(url, session_id, token=token, handler=watcher.print_event)
        await session.start(remote.maintain)
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                await remote.wait_connected()
        except ClosedRemoteSessionError:
            return 1  # serve ended: the server refused us (a wrong token?); its error is raised as the block exits
        except trio.TooSlowError:
            reason = remote.statistics().last_error or "no answer"
            print(f"error: could not connect to {url} within {CONNECT_TIMEOUT:g} s ({reason})", file=sys.stderr)
            print("is the server running? start it with: python examples/serve.py", file=sys.stderr)
            return 1
        print(f"attached to session {session_id!r} at {url}: updates, workspace and feed are up\n", flush=True)

        print(f"> {prompt}", flush=True)
        run_id, note, finished = await run_prompt(remote, prompt, console)
        if finished != "completed":
            print(f"error: the run ended with {finished or 'no RunFinished'}", file=sys.stderr)
            return 1

        if note is not None:
            answer = await remote.workspace_request("read", note)
            print(f"[workspace] read {note}:", flush=True)
            for text in str(answer.get("content", "")).splitlines():
                print(f"  | {text}", flush=True)
        else:
            listing = await remote.workspace_request("list")
            print(f"[workspace] files: {listing.get('paths')}", flush=True)

        # The run is over; wait until the updates stream and the feed have shown it end too.
        if run_id is not None:
            try:
                with trio.fail_after(SETTLE_TIMEOUT):
                    await watcher.wait_settled(run_id)
            except trio.TooSlowError:
                print(f"error: the streams did not show the run's end within {SETTLE_TIMEOUT:g} s", file=sys.stderr)
                return 1
        if once:
            print("done: the run is over and the session is idle again.", flush=True)
            return 0
        print("\nwatching the session's streams (runs started by others show up here); Ctrl-C to stop", flush=True)
        await trio.sleep_forever()
    return 0  # pragma: no cover  (sleep_forever only ends by cancellation)


async def until_signalled(attach_fn: Callable[[], Awaitable[int]]) -> int | None:
    """``await attach_fn()``, unless Ctrl-C (SIGINT) or SIGTERM comes first: then cancel it and return None.

    The signals are received as messages, not as a ``KeyboardInterrupt``
    that could land in the middle of any task: the local session (and with
    it every connection) is closed by cancellation, like any other Trio code.
    """
    status: int | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def attached() -> None:
                nonlocal status
                status = await attach_fn()
                nursery.cancel_scope.cancel()

            nursery.start_soon(attached)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Attach, run the prompt, and watch until Ctrl-C (or, with --once, until the run is over)."""
    parser = argparse.ArgumentParser(description="Attach to a served runtime's session and run a prompt there.")
    parser.add_argument("--url", default="http://127.0.0.1:8765", help="the server (default http://127.0.0.1:8765)")
    parser.add_argument("--session", default="demo", help="the remote session's id (created if need be)")
    parser.add_argument("--token", default=None, help="the server's bearer token, if it needs one")
    parser.add_argument("--prompt", default="Remember to water the plants.", help="what to ask the remote agent")
    parser.add_argument("--once", action="store_true", help="exit once the run is over and the session idle again")
    options = parser.parse_args(argv)
    attach_fn = functools.partial(
        attach, options.url, options.session, options.prompt, token=options.token, once=options.once
    )
    status: int | None = None
    try:
        status = trio.run(until_signalled, attach_fn)
    except* KeyboardInterrupt:  # Ctrl-C before the signal receiver was installed
        pass
    except* (RemoteError, StreamError) as group:
        messages = dict.fromkeys(str(error) for error in _leaves(group))  # each stream may report the same one
        print(f"error: {'; '.join(messages)}", file=sys.stderr)
        status = 1
    if status is None:
        print("\ndetached: every connection is closed. Goodbye.", flush=True)
        return 0
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
