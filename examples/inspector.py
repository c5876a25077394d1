"""The live inspector: a served agent with a few busy sessions, to watch at ``/inspect``.

Runs offline on ScriptedModel (no key, no network beyond the port it listens on):

    python examples/inspector.py                     # then open http://127.0.0.1:8766/inspect
    python examples/inspector.py --port 0 --token s3cret --sessions 20

It serves an operations agent whose ``deploy`` tool asks for approval (answer
it from the page: Approve or Decline), whose ``crunch`` tool is slow and
reports its progress, and which hands research to a ``researcher``
sub-agent. A client inside the script keeps a few sessions busy over the
served protocol, as another process would: ``release`` deploys (and waits
for you), ``batch`` crunches, ``research`` delegates, and ``chat-N`` chat.
From the page you can also cancel a run or close a session. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import warnings
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, cast

import httpx
import trio

from agents import TRANSFER_TOOL, Agent, ScriptedModel, ToolCall, ToolContext, ToolResultMessage, UserMessage, tool
from streams import UnsafeBindError, open_server

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence

    from agents import ModelRequest
    from agents.models import Turn

SERVICES = ("billing", "search", "checkout", "mailer")
"""What ``release`` deploys, in turn."""


@tool
async def deploy(ctx: ToolContext[Any], service: str) -> str:
    """Deploy a service to production, once a human approves.

    Args:
        service: The service to deploy.
    """
    answer = await ctx.elicit(f"Deploy {service} to production?", schema=bool)
    if answer.action == "accept" and answer.content:
        return f"{service} deployed"
    return f"{service} not deployed: {answer.action}"


@tool
async def crunch(ctx: ToolContext[Any], rows: int) -> str:
    """Crunch some rows, slowly, reporting progress.

    Args:
        rows: How many rows.
    """
    step = max(1, rows // 20)
    for done in range(0, rows, step):
        await ctx.report_progress(done, total=rows, message=f"{done} rows")
        await trio.sleep(0.4)
    await ctx.report_progress(rows, total=rows, message="done")
    return f"{rows} rows crunched"


@tool
async def search(topic: str) -> str:
    """Search the notes.

    Args:
        topic: What to look for.
    """
    await trio.sleep(1.0)
    return f"3 notes about {topic}"


def _ops_turn(request: ModelRequest) -> Turn:
    """The operations agent: a prompt ``deploy X``, ``crunch N`` or ``research T`` calls its tool; else it chats."""
    last = request.messages[-1]
    if isinstance(last, ToolResultMessage):
        return f"Done: {last.content}."
    prompt = last.content if isinstance(last, UserMessage) and isinstance(last.content, str) else ""
    verb, _, rest = prompt.partition(" ")
    if verb == "deploy":
        return ToolCall("deploy", {"service": rest})
    if verb == "crunch":
        return ToolCall("crunch", {"rows": int(rest)})
    if verb == "research":
        return ToolCall(TRANSFER_TOOL, {"agent": "researcher", "task": rest})
    return f"You said {prompt!r}; I can deploy, crunch and research."


def _research_turn(request: ModelRequest) -> Turn:
    last = request.messages[-1]
    if isinstance(last, ToolResultMessage):
        return f"Found {last.content}."
    task = last.content if isinstance(last, UserMessage) and isinstance(last.content, str) else ""
    return ToolCall("search", {"topic": task})


def make_agent() -> Agent:
    """The agent: scripted models that never run out (each turn is a function of the request)."""
    researcher = Agent(
        name="researcher",
        instructions="Search the notes for the task.",
        model=ScriptedModel(itertools.repeat(_research_turn), record_requests=False, chunk_delay=0.05),
        tools=[search],
    )
    return Agent(
        name="ops",
        instructions="Deploy with approval, crunch data, delegate research.",
        model=ScriptedModel(itertools.repeat(_ops_turn), record_requests=False, chunk_delay=0.05),
        tools=[deploy, crunch],
        sub_agents=[researcher],
    )


agent = make_agent()
"""What ``python -m streams serve --agent examples.inspector:agent`` serves."""


async def run_once(client: httpx.AsyncClient, session: str, prompt: str) -> str:
    """Run ``prompt`` in ``session`` over the served protocol (an attached run); its finish reason."""
    reason = "?"
    async with client.stream("POST", f"/sessions/{session}/runs", json={"input": prompt}) as response:
        async with aclosing(cast("AsyncGenerator[str]", response.aiter_lines())) as lines:
            async for line in lines:
                if line.startswith("data: "):
                    event = json.loads(line.removeprefix("data: "))
                    if event["type"] == "RunFinished":
                        reason = event["reason"]
    return reason


async def keep_busy(client: httpx.AsyncClient, session: str, prompts: Sequence[str], pause: float) -> None:
    """Open ``session`` and run its prompts in turn, forever, with ``pause`` seconds between runs.

    The session may be closed from the page: it is opened again for the next run.
    """
    for prompt in itertools.cycle(prompts):
        created = await client.post("/sessions", json={"id": session})
        if created.status_code not in (201, 409):
            return  # the server is shutting down
        await run_once(client, session, prompt)
        await trio.sleep(pause)


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


async def serve(
    host: str, port: int, token: str | None, sessions: int, allow_unauthenticated_remote: bool = False
) -> None:
    """Serve :data:`agent` and keep ``sessions`` sessions busy until Ctrl-C (SIGINT) or SIGTERM."""
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_server(
            agent, host=host, port=port, token=token, allow_unauthenticated_remote=allow_unauthenticated_remote
        ) as server:
            print(f"serving on {server.url}", flush=True)
            print(f"inspector: {server.url}/inspect", flush=True)
            if token is not None:
                print("  (the page asks for the token once)", flush=True)
            async with (
                httpx.AsyncClient(base_url=server.url, headers=headers, timeout=None) as client,
                trio.open_nursery() as nursery,
            ):
                busy = [
                    ("release", [f"deploy {service}" for service in SERVICES], 2.0),
                    ("batch", ["crunch 400", "crunch 120"], 1.0),
                    ("research", ["research structured concurrency", "research cancel scopes"], 3.0),
                ]
                busy += [(f"chat-{n}", [f"hello from {n}", "what can you do?"], 2.0 + n) for n in range(sessions)]
                for session, prompts, pause in busy[: max(sessions, 3)]:
                    nursery.start_soon(keep_busy, client, session, prompts, pause)
                async for signum in signals:
                    print(f"\n{signal.Signals(signum).name}: stopping", flush=True)
                    break
                # httpx leaves a request body's async generator open when the request is cancelled mid-send
                # (Trio closes it when collected, with a ResourceWarning): Ctrl-C is no reason to print that.
                warnings.filterwarnings("ignore", "Async generator 'httpx._content", ResourceWarning)
                nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C; returns the exit status."""
    parser = argparse.ArgumentParser(description="Serve a busy agent to watch in the live inspector (/inspect).")
    parser.add_argument("--host", default="127.0.0.1", help="the interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8766, help="the port (default 8766; 0: any free port)")
    parser.add_argument(
        "--token", type=bearer_token, default=None, help="require this bearer token (the page signs in with it)"
    )
    parser.add_argument("--sessions", type=int, default=4, help="busy sessions, 3 at least (default 4)")
    parser.add_argument(
        "--allow-unauthenticated-remote",
        action="store_true",
        help="serve on a non-loopback --host with no --token (anyone who reaches it drives the agent)",
    )
    options = parser.parse_args(argv)
    status = 0
    try:
        trio.run(
            serve, options.host, options.port, options.token, options.sessions, options.allow_unauthenticated_remote
        )
    except* KeyboardInterrupt:  # Ctrl-C before the signal receiver was installed
        pass
    except* UnsafeBindError as group:  # a --host beyond loopback with no --token
        print(f"error: {first_error(group)}", file=sys.stderr)
        status = 2
    except* OSError as group:  # the port is taken, or the host is not ours
        print(f"error: cannot serve on {options.host}:{options.port}: {first_error(group)}", file=sys.stderr)
        status = 1
    if status == 0:
        print("stopped.", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
