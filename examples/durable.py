"""Durable sessions: a session in an SQLite file outlives the process, even one that dies mid-run.

The agent deploys only with the human's approval (``@tool(requires_approval=True)``).
Every run of this script opens the same session (``--session``, default ``deploy-demo``)
in the same file (``--db``, default ``trio-agents-examples/durable.db`` under the
system's temporary directory) and shows where things stand: the history so far,
a run that was interrupted, an approval that is still pending. If one is pending
it answers it and resumes the run (``session.resume``); otherwise it asks for a
deployment, which asks for approval again.

Runs offline on ScriptedModel (no key, no network), and reads no input unless asked:

    python examples/durable.py --interrupt   # asks for approval, then stops as if the process died
    python examples/durable.py               # finds the pending approval, approves it, resumes the run
    python examples/durable.py --decline     # (next time) declines instead: the deployment never happens
    python examples/durable.py --ask         # ask at the terminal; Ctrl-C at the prompt stops, leaving it pending
    python examples/durable.py --reset       # forget the session first

A process that stops while a question waits (killed, crashed, or Ctrl-C at the
prompt here) leaves its run ``running`` in the store: the next process to open
the session marks it interrupted (its log ends with ``RunFinished("interrupted")``),
repairs the history, and offers the question again in ``session.pending``. Resuming
calls the waiting tool call again with the answer available; the tool body, which
runs only once approved, runs exactly once.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from agents import Agent, AssistantMessage, ScriptedModel, ToolCall, ToolContext, ToolResultMessage, UserMessage, tool
from runtime import SQLiteStore, open_runtime
from runtime.events import ElicitationRequest, ErrorEvent, RunFinished, RunStarted, TextDelta, ToolCallFinished

if TYPE_CHECKING:
    from agents import ElicitationAction, Message, ModelRequest
    from agents.models import Turn
    from runtime import RunStream, Session

DEFAULT_DB = Path(tempfile.gettempdir()) / "trio-agents-examples" / "durable.db"
REQUEST = "Deploy version 2.0 to production."


@tool(requires_approval=True)
def deploy(ctx: ToolContext[Path], version: str) -> str:
    """Deploy a version to production. Every call needs the human's approval.

    Args:
        version: The version to deploy, e.g. "2.0".
    """
    # Only pretends to deploy: it appends a line to a log next to the database, so that
    # you (and the tests) can count how many times it really ran.
    with ctx.deps.open("a") as log:
        log.write(f"{version}\n")
    count = len(ctx.deps.read_text().splitlines())
    return f"deployed {version} (deployment #{count})"


def decide(request: ModelRequest) -> Turn:
    """What an LLM would do: deploy what was asked, then report the tool's result."""
    last = request.messages[-1]
    if isinstance(last, ToolResultMessage):
        if last.is_error:
            return f"The deployment did not happen ({last.text})."
        return f"Done: {last.text}."
    return ToolCall("deploy", {"version": "2.0"})


def make_agent() -> Agent:
    """The agent; its scripted model answers from the conversation, so a resumed run continues it."""
    return Agent(
        name="ops",
        instructions="You deploy software, always with the human's approval.",
        model=ScriptedModel(itertools.repeat(decide)),
        tools=[deploy],
    )


def show(message: Message) -> str:
    """One line of history."""
    if isinstance(message, UserMessage):
        return f"user: {message.text}"
    if isinstance(message, AssistantMessage):
        calls = [f"{c.name}({', '.join(f'{k}={v!r}' for k, v in _args(c.arguments))})" for c in message.tool_calls]
        return "assistant: " + " ".join([message.text, *(f"-> {call}" for call in calls)]).strip()
    if isinstance(message, ToolResultMessage):
        return f"tool {message.name}: {message.text}"
    return type(message).__name__


def _args(arguments: Any) -> list[tuple[str, Any]]:
    return list(arguments.items()) if isinstance(arguments, dict) else []


def describe_session(session: Session[Any], store_url: str) -> None:
    """Where things stand when the session is opened."""
    history = session.history
    print(f"session {session.id} in {store_url}: {session.run_count} run(s) so far")
    print(f"history: {len(history)} message(s)")
    for message in history:
        print(f"  {show(message)}")
    if session.suspended_run is not None:
        print(f"interrupted run found: {session.suspended_run} stopped while it waited for an answer")
    for question in session.pending:
        print(f"pending approval: {question.message} (question {question.id})")
    if not session.pending:
        print("nothing pending")


async def ask(prompt: str) -> str | None:
    """Ask at the terminal: "approve", "decline", or ``None`` when Ctrl-C was pressed or input ended."""
    try:
        if sys.stdin is None:
            raise EOFError
        answer = await trio.to_thread.run_sync(input, prompt, abandon_on_cancel=True)
    except EOFError:
        return None
    return "approve" if answer.strip().lower() in ("y", "yes") else "decline"


def stop_as_if_killed(why: str) -> None:
    """Leave at once, writing nothing more: what a killed process leaves is what the next one finds."""
    print(f"\nstopped while waiting ({why}): the approval stays pending; run again to answer it", flush=True)
    sys.stderr.flush()
    os._exit(0)


async def follow(stream: RunStream, mode: str) -> None:
    """Print the run's events, answering its approval questions as ``mode`` says."""
    async for event in stream:
        if isinstance(event, RunStarted):
            resumes = f", resuming {event.resumes}" if event.resumes else ""
            print(f"[run {event.run_id} started{resumes}]")
        elif isinstance(event, ElicitationRequest):
            print(f"waiting for approval: {event.message} (question {event.id})", flush=True)
            if mode == "interrupt":
                stop_as_if_killed("--interrupt")
            answer = mode
            if mode == "ask":
                # Ctrl-C here stops like a killed process (not a graceful close, which would cancel the run).
                previous = signal.signal(signal.SIGINT, lambda *_: stop_as_if_killed("Ctrl-C"))
                try:
                    answer = await ask("  approve? [y/N] ") or "none"
                finally:
                    signal.signal(signal.SIGINT, previous)
                if answer == "none":
                    stop_as_if_killed("no input")
            print(f"  answered: {answer}")
            await stream.respond(event.id, "accept" if answer == "approve" else "decline")
        elif isinstance(event, ToolCallFinished):
            print(f"  <- {event.name}: {f'error: {event.error}' if event.error else repr(event.result)}")
        elif isinstance(event, TextDelta):
            print(event.text, end="", flush=True)
        elif isinstance(event, ErrorEvent):
            print(f"\n[{event.kind} error] {event.message}")
        elif isinstance(event, RunFinished):
            print(f"\n[run finished: {event.reason}]")


async def main(argv: list[str] | None = None) -> int:
    """Open the session, show it, resume what is pending or start a new request; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help=f"the SQLite file (default {DEFAULT_DB})")
    parser.add_argument("--session", default="deploy-demo", help="the session id (default deploy-demo)")
    parser.add_argument("--reset", action="store_true", help="forget the session first")
    answers = parser.add_mutually_exclusive_group()
    answers.add_argument("--approve", dest="mode", action="store_const", const="approve", help="approve (default)")
    answers.add_argument("--decline", dest="mode", action="store_const", const="decline", help="decline")
    answers.add_argument(
        "--interrupt", dest="mode", action="store_const", const="interrupt", help="stop while the approval waits"
    )
    answers.add_argument("--ask", dest="mode", action="store_const", const="ask", help="ask at the terminal")
    parser.set_defaults(mode="approve")
    args = parser.parse_args(argv)
    if not args.session:
        parser.error("--session must not be empty")

    args.db.parent.mkdir(parents=True, exist_ok=True)
    deployments = args.db.with_name(args.db.name + ".deployments")
    async with open_runtime(store=SQLiteStore(args.db)) as runtime:
        if args.reset:
            assert runtime.store is not None
            await runtime.store.delete(args.session)
            deployments.unlink(missing_ok=True)
        async with runtime.open_session(make_agent(), session_id=args.session) as session:
            describe_session(session, f"{args.db}")
            if session.pending:
                # Answered up front when we can; asked again on the stream (same ids) when we can't.
                actions: dict[str, ElicitationAction] = {"approve": "accept", "decline": "decline"}
                action = actions.get(args.mode)
                resume_with = None if action is None else {q.id: (action, None) for q in session.pending}
                print(f"resuming {session.suspended_run} ({args.mode})")
                async with session.resume(resume_with, deps=deployments) as stream:
                    await follow(stream, args.mode)
            else:
                print(f"> {REQUEST}")
                async with session.run(REQUEST, deps=deployments) as stream:
                    await follow(stream, args.mode)
    return 0 if stream.result.reason == "completed" else 1


if __name__ == "__main__":
    sys.exit(trio.run(main))
