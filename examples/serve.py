"""Served mode: a runtime reachable over HTTP, SSE and WebSocket, serving a note-taking agent.

Runs offline on ScriptedModel (no key, no network beyond the port it listens on):

    python examples/serve.py                      # http://127.0.0.1:8765
    python examples/serve.py --port 0 --token s3cret

or serve the same agent with the generic command, from the repository root:

    python -m streams serve --agent examples.serve:agent --port 8765

Each prompt makes the agent write a note into its session's workspace (with
the ``write_file`` tool of ``streams.WORKSPACE_TOOLS``) and then answer,
streamed word by word. Attach to it from another terminal with

    python examples/remote_client.py --prompt "remember the milk"

or try it with curl (the script prints this line with the real port).
Ctrl-C stops it: every served session is closed, every stream ended, then
the HTTP server stops.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import signal
import sys
from typing import TYPE_CHECKING

import trio

from agents import Agent, ScriptedModel, ToolCall, ToolResultMessage, UserMessage
from streams import WORKSPACE_TOOLS, UnsafeBindError, open_server

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agents import ModelRequest
    from agents.models import Turn
    from streams import Server


def _note_or_answer(request: ModelRequest) -> Turn:
    """One model turn: write a note about the latest prompt, then (once the tool answered) reply."""
    prompts = [message.content for message in request.messages if isinstance(message, UserMessage)]
    number = len(prompts)  # the session's history holds every earlier prompt too
    path = f"notes/{number:03}.md"
    last = request.messages[-1] if request.messages else None
    if isinstance(last, ToolResultMessage):
        if last.is_error:
            return f"I could not save a note: {last.content}"
        return f"Noted. Prompt {number} of this session is saved in {path}; read it back over the workspace stream."
    prompt = prompts[-1] if prompts else ""
    return ToolCall("write_file", {"path": path, "content": f"# Note {number}\n\n{prompt}\n"})


def make_agent() -> Agent:
    """The agent: its scripted model never runs out (each turn is a function of the request)."""
    return Agent(
        name="notes",
        instructions="Write each prompt down as a note in the workspace, then say where it is.",
        model=ScriptedModel(itertools.repeat(_note_or_answer)),
        tools=list(WORKSPACE_TOOLS),
    )


agent = make_agent()
"""What ``python -m streams serve --agent examples.serve:agent`` serves."""


def curl_example(url: str, token: str | None) -> str:
    """A shell one-liner that creates a session and streams a run of it as SSE."""
    headers = "-H 'Content-Type: application/json'"
    if token is not None:
        headers += " -H " + shlex.quote(f"Authorization: Bearer {token}")
    create = shlex.quote(json.dumps({"id": "curl"}))
    run = shlex.quote(json.dumps({"input": "hello"}))
    return f"curl -s {headers} -d {create} {url}/sessions; echo; curl -sN {headers} -d {run} {url}/sessions/curl/runs"


STOPPING = "the server is stopping: this session closes now"
"""What every session's feed is told before the server stops."""


def announce(server: Server, message: str) -> None:
    """Tell every served session's watchers ``message``: a ``Notice`` on each between-run feed.

    The feed delivers what was published before the session closed, so a
    notice posted just before shutdown still reaches every client.
    """
    for served in server.sessions.values():
        served.notify(message)


def port_number(text: str) -> int:
    """An argparse ``type``: a TCP port, 0 to 65535."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, not {port}")
    return port


def bearer_token(text: str) -> str:
    """An argparse ``type``: a token a client can send (``open_server`` refuses any other)."""
    if not text or any(char.isspace() or not char.isprintable() for char in text):
        raise argparse.ArgumentTypeError("must not be empty nor hold spaces or control characters")
    return text


def first_error(error: BaseException) -> BaseException:
    """The error inside ``except*``'s group (there is one: ``open_server`` raises its errors singly)."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def serve(host: str, port: int, token: str | None, allow_unauthenticated_remote: bool = False) -> None:
    """Serve :data:`agent` until Ctrl-C (SIGINT) or SIGTERM, printing where once listening.

    The signals are received as messages, not as a ``KeyboardInterrupt``
    that could land in the middle of any task (Hypercorn's included): the
    server is stopped by leaving its block, like any other Trio code; each
    session's feed is told so first (:func:`announce`).
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_server(
            agent, host=host, port=port, token=token, allow_unauthenticated_remote=allow_unauthenticated_remote
        ) as server:
            print(f"serving on {server.url}", flush=True)
            print(f"try:\n  {curl_example(server.url, token)}", flush=True)
            token_option = f" --token {shlex.quote(token)}" if token is not None else ""
            print(f"or:\n  python examples/remote_client.py --url {server.url}{token_option}", flush=True)
            async for signum in signals:
                print(f"\n{signal.Signals(signum).name}: closing every session, then stopping", flush=True)
                announce(server, STOPPING)
                break  # leaving the block closes every session and ends every stream, then stops Hypercorn


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C; returns the exit status."""
    parser = argparse.ArgumentParser(description="Serve a note-taking agent over HTTP, SSE and WebSocket.")
    parser.add_argument("--host", default="127.0.0.1", help="the interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8765, help="the port (default 8765; 0: any free port)")
    parser.add_argument(
        "--token", type=bearer_token, default=None, help="require this bearer token (except on /health)"
    )
    parser.add_argument(
        "--allow-unauthenticated-remote",
        action="store_true",
        help="serve on a non-loopback --host with no --token (anyone who reaches it drives the agent)",
    )
    options = parser.parse_args(argv)
    status = 0
    try:
        trio.run(serve, options.host, options.port, options.token, options.allow_unauthenticated_remote)
    except* KeyboardInterrupt:  # Ctrl-C before the signal receiver was installed
        pass
    except* UnsafeBindError as group:  # a --host beyond loopback with no --token
        print(f"error: {first_error(group)}", file=sys.stderr)
        status = 2
    except* OSError as group:  # the port is taken, or the host is not ours
        print(f"error: cannot serve on {options.host}:{options.port}: {first_error(group)}", file=sys.stderr)
        status = 1
    if status == 0:
        print("stopped. Goodbye.", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
