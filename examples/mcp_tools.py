"""MCP tools: an agent uses the tools of an MCP server, the protocol's reference server, over stdio.

The server (``@modelcontextprotocol/server-everything``) runs as a subprocess
owned by the session: started when the first run needs it, shared by the
session's runs and their concurrent tool calls, stopped and reaped when the
session closes. Its tools reach the model with the input schemas the server
gives; its progress notifications stream as ``ToolProgress`` events.

Runs offline on ScriptedModel (no key, no network), with the server that
``make test``'s set-up installs into ``.mcp/`` (needs ``node``):

    python examples/mcp_tools.py

or against a real model, which picks the tools itself:

    OPENAI_API_KEY=... python examples/mcp_tools.py --model openai:gpt-4o-mini
    ANTHROPIC_API_KEY=... python examples/mcp_tools.py --model anthropic:claude-sonnet-4-5

``--npx`` runs the server with ``npx -y`` instead (downloading it once).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from agents import Agent, AgentDefinitionError, ScriptedModel, ToolCall, resolve_model
from agents.mcp import MCPServerStdio
from runtime import open_runtime
from runtime.events import ErrorEvent, RunFinished, TextDelta, ToolCallFinished, ToolCallStarted, ToolProgress

if TYPE_CHECKING:
    from agents.models import Turn

PACKAGE = "@modelcontextprotocol/server-everything@2026.8.31"
INSTALLED = (
    Path(__file__).resolve().parent.parent
    / ".mcp"
    / "node_modules"
    / "@modelcontextprotocol"
    / "server-everything"
    / "dist"
    / "index.js"
)


def reference_server(*, npx: bool = False) -> MCPServerStdio:
    """The reference server over stdio: the copy in ``.mcp/`` (``make test`` installs it), or ``npx``'s."""
    if npx or not INSTALLED.exists():
        return MCPServerStdio(shutil.which("npx") or "npx", ["-y", PACKAGE, "stdio"], name="everything")
    return MCPServerStdio(shutil.which("node") or "node", [str(INSTALLED), "stdio"], name="everything")


def make_agent(model: str = "scripted", *, npx: bool = False) -> Agent:
    """The agent; by default its scripted model calls the server's tools as an LLM would."""
    script: list[Turn] = [
        # Two calls at once: one connection serves both (the SDK multiplexes them).
        [ToolCall("echo", {"message": "hello from trio-agents"}), ToolCall("get-sum", {"a": 2, "b": 3})],
        # A long call: its progress notifications stream as ToolProgress events.
        ToolCall("trigger-long-running-operation", {"duration": 1, "steps": 4}),
        # An image: the model reads a short placeholder; the program gets the data (MCPResult.parts).
        ToolCall("get-tiny-image", {}),
        "The server echoed my greeting, 2 + 3 is 5, the long operation finished in four steps, "
        "and it sent a small PNG of the MCP logo.",
    ]
    return Agent(
        name="mcp-demo",
        instructions="You try out the tools of the MCP server you are connected to. Use them, then sum up.",
        model=resolve_model(model, scripted=ScriptedModel(script)),
        tools=[reference_server(npx=npx)],
    )


async def main(argv: list[str] | None = None) -> int:
    """Run one request and print the run as it streams; returns the exit status."""
    parser = argparse.ArgumentParser(description="An agent uses the tools of an MCP server over stdio.")
    parser.add_argument("--model", default="scripted", help="scripted (default), openai:<model>, ...")
    parser.add_argument("--npx", action="store_true", help="run the server with npx -y (downloads it)")
    options = parser.parse_args(argv or [])
    try:
        agent = make_agent(options.model, npx=options.npx)
    except AgentDefinitionError as exc:
        parser.error(str(exc))  # exits with status 2
    request = "Greet me through the echo tool, add 2 and 3, run the long operation, and fetch the tiny image."
    print(f"> {request}\n")
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        names: dict[str, str] = {}  # call id -> tool name, for the progress lines
        async with session.run(request) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    print(event.text, end="", flush=True)
                elif isinstance(event, ToolCallStarted):
                    names[event.call_id] = event.name
                    shown = ", ".join(f"{k}={v!r}" for k, v in event.arguments.items())
                    print(f"  -> {event.name}({shown})")
                elif isinstance(event, ToolProgress):
                    total = "?" if event.total is None else f"{event.total:g}"
                    print(f"  .. {names.get(event.call_id, event.call_id)}: {event.progress:g}/{total}")
                elif isinstance(event, ToolCallFinished):
                    outcome = f"error: {event.error}" if event.error else repr(str(event.result))
                    print(f"  <- {event.name}: {outcome}")
                elif isinstance(event, ErrorEvent):
                    print(f"\n[{event.kind} error] {event.message}")
                elif isinstance(event, RunFinished):
                    print(f"\n\n[run finished: {event.reason}]")
    # Leaving the session closed the connection: the server's stdin closed, and its process was reaped.
    print("[session closed: the MCP server process has exited]")
    return 0 if stream.result.reason == "completed" else 1


if __name__ == "__main__":
    sys.exit(trio.run(main, sys.argv[1:]))
