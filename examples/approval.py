"""Approvals: tools that run only once the human at the terminal says yes.

``delete_file`` asks every time (``@tool(requires_approval=True)``);
``send_payment`` asks only above 100 (``requires_approval=`` a predicate of the
arguments). Each question arrives as an ``ElicitationRequest`` event and is
answered with ``await stream.respond(event.id, "accept" | "decline")``. A
declined call never runs: the model gets "declined by user" and carries on.

Runs offline on ScriptedModel (no key, no network):

    python examples/approval.py          # answer each question with y or n
    python examples/approval.py --yes    # approve everything, unattended

Ctrl-C at a question stops the example at once (exit status 130).

Swap ``ScriptedModel`` for a real model to talk to an LLM; nothing else changes.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import TYPE_CHECKING

import trio

from agents import Agent, AssistantMessage, ScriptedModel, ToolCall, ToolResultMessage, tool
from runtime import open_runtime
from runtime.events import (
    ElicitationRequest,
    ErrorEvent,
    RunFinished,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from agents import ModelRequest
    from agents.models import Turn

FILES = ["build/cache.tmp", "build/app.whl", "README.md"]


@tool
async def list_files(directory: str) -> list[str]:
    """List the files in a directory (needs no approval).

    Args:
        directory: The directory, e.g. "build".
    """
    return [name for name in FILES if name.startswith(f"{directory.rstrip('/')}/")]


@tool(requires_approval=True)
async def delete_file(path: str) -> str:
    """Delete a file. Every call needs the human's approval.

    Args:
        path: The file to delete.
    """
    await trio.sleep(0.01)  # only pretends to delete
    return f"deleted {path}"


@tool(requires_approval=lambda args: args["amount"] > 100)
async def send_payment(to: str, amount: float) -> str:
    """Pay someone, in euros. Payments over 100 EUR need the human's approval.

    Args:
        to: Who gets paid.
        amount: How much, in euros.
    """
    await trio.sleep(0.01)  # only pretends to pay
    return f"paid {amount:.2f} EUR to {to}"


def report(request: ModelRequest) -> Turn:
    """The final turn: a summary written from the tool results, as an LLM would."""
    calls = {
        call.call_id: call
        for message in request.messages
        if isinstance(message, AssistantMessage)
        for call in message.tool_calls
    }
    done: list[str] = []
    declined: list[str] = []
    for message in request.messages:
        if isinstance(message, ToolResultMessage) and message.name != "list_files":
            call = calls[message.call_id]
            arguments = {} if isinstance(call.arguments, str) else call.arguments
            shown = f"{call.name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"
            (declined if message.content == "declined by user" else done).append(shown)
    lines = [f"Done: {', '.join(done) or 'nothing'}."]
    if declined:
        lines.append(f"You declined {', '.join(declined)}, so I left that alone.")
    return " ".join(lines)


def make_agent() -> Agent:
    """The agent; its scripted model answers like an LLM would."""
    script: list[Turn | Callable[[ModelRequest], Turn]] = [
        ToolCall("list_files", {"directory": "build"}),
        ToolCall("delete_file", {"path": "build/cache.tmp"}),
        # Two payments at once: the small one runs at once, the large one waits for the human.
        [
            ToolCall("send_payment", {"to": "Acme Hosting", "amount": 40.0}),
            ToolCall("send_payment", {"to": "Globex Consulting", "amount": 250.0}),
        ],
        report,
    ]
    return Agent(
        name="assistant",
        instructions="You tidy up the build directory and pay open invoices.",
        model=ScriptedModel(script),
        tools=[list_files, delete_file, send_payment],
    )


def stop(why: str) -> None:
    """Leave at once: the thread still blocked in ``input()`` would hang or abort a normal exit."""
    print(f"\nstopped ({why}): nothing more runs", flush=True)
    sys.stderr.flush()
    os._exit(130)


async def ask(prompt: str) -> bool:
    """Ask the human at the terminal; only "y" or "yes" approves, end of input is a no, Ctrl-C stops."""
    # Ctrl-C while the thread reads would otherwise leave it blocked on stdin (see stop).
    previous = signal.signal(signal.SIGINT, lambda *_: stop("Ctrl-C"))
    try:
        if sys.stdin is None:  # started with stdin closed: as good as end of input
            raise EOFError
        # In a worker thread, so the run goes on streaming while the human thinks.
        answer = await trio.to_thread.run_sync(input, prompt, abandon_on_cancel=True)
    except EOFError:
        print("(no input: declined)")
        return False
    finally:
        signal.signal(signal.SIGINT, previous)
    if not sys.stdin.isatty():
        print(answer)  # echo a piped answer, as a terminal would
    return answer.strip().lower() in ("y", "yes")


async def main(argv: list[str] | None = None) -> int:
    """Run the agent, answering its approval questions; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--yes", action="store_true", help="approve every tool call without asking")
    args = parser.parse_args(argv)

    request = "Delete the stale build cache, then pay Acme Hosting 40 EUR and Globex Consulting 250 EUR."
    print(f"> {request}\n")
    async with open_runtime() as runtime, runtime.open_session(make_agent()) as session:
        async with session.run(request) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    print(event.text, end="", flush=True)
                elif isinstance(event, ToolCallStarted):
                    shown = ", ".join(f"{k}={v!r}" for k, v in event.arguments.items())
                    print(f"  -> {event.name}({shown})")
                elif isinstance(event, ElicitationRequest):
                    prompt = f"  ? {event.message} [y/N] "
                    if args.yes:
                        print(f"{prompt}y (--yes)")
                        approved = True
                    else:
                        approved = await ask(prompt)
                    await stream.respond(event.id, "accept" if approved else "decline")
                elif isinstance(event, ToolCallFinished):
                    outcome = f"error: {event.error}" if event.error else repr(event.result)
                    print(f"  <- {event.name}: {outcome}")
                elif isinstance(event, ErrorEvent):
                    print(f"\n[{event.kind} error] {event.message}")
                elif isinstance(event, RunFinished):
                    print(f"\n\n[run finished: {event.reason}]")
    return 0 if stream.result.reason == "completed" else 1


if __name__ == "__main__":
    sys.exit(trio.run(main))
