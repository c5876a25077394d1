"""Webhook bot: an agent answers chat messages POSTed to a local HTTP endpoint.

Runs offline on ScriptedModel (no key, no network beyond localhost):

    python examples/webhook_bot.py --port 8080 --secret s3cret

then, from another terminal (the script prints this with the real port):

    curl -s -X POST http://127.0.0.1:8080/messages \\
        -H 'Authorization: Bearer s3cret' -H 'Content-Type: application/json' \\
        -d '{"chat_id": "me", "text": "hello", "wait_for_response": true}'

or let it try itself and exit:

    python examples/webhook_bot.py --selftest
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from typing import TYPE_CHECKING

import httpx
import trio

from agents import Agent, ScriptedModel, ToolCall, UserMessage, tool
from runtime import open_gateway, open_runtime
from streams import WebhookChannel

if TYPE_CHECKING:
    from agents import ModelRequest
    from agents.models import Turn


@tool
def word_count(text: str) -> int:
    """Count the words of a text.

    Args:
        text: The text.
    """
    return len(text.split())


def _last_user_text(request: ModelRequest) -> str:
    for message in reversed(request.messages):
        if isinstance(message, UserMessage):
            return message.text
    return ""


def _count_words(request: ModelRequest) -> Turn:
    return ToolCall("word_count", {"text": _last_user_text(request)})


def _answer(request: ModelRequest) -> Turn:
    text = _last_user_text(request)
    return f"You said {text!r}. (I counted the words with a tool.)"


def make_agent() -> Agent:
    """The agent: each message gets a tool call, then an answer echoing it."""
    return Agent(
        name="echo",
        instructions="Echo what people say.",
        model=ScriptedModel(itertools.cycle([_count_words, _answer])),
        tools=[word_count],
    )


async def selftest(port: int, secret: str) -> int:
    """Send the bot a few requests and print what came back; 0 if each got the expected status, and no
    reply was an error."""
    auth = {"Authorization": f"Bearer {secret}"}
    checks: list[tuple[str, int, httpx.Response]] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        body = {"chat_id": "selftest", "text": "hello there", "wait_for_response": True}
        checks.append(("wait for the reply", 200, await client.post("/messages", json=body, headers=auth)))
        body = {"chat_id": "selftest", "text": "fire and forget"}
        checks.append(("accepted, reply later", 202, await client.post("/messages", json=body, headers=auth)))
        checks.append(("no bearer token", 401, await client.post("/messages", json=body)))
        big = {"chat_id": "selftest", "text": "x" * (128 * 1024)}
        checks.append(("oversized body", 413, await client.post("/messages", json=big, headers=auth)))
    ok = True
    for label, expected, response in checks:
        # A reply of kind "error" is the agent's run ending in error: a failure too.
        good = response.status_code == expected and response.json().get("kind") != "error"
        print(f"[{'ok' if good else 'FAILED'}] {label}: {response.status_code} {json.dumps(response.json())}")
        ok = ok and good
    return 0 if ok else 1


def port_number(text: str) -> int:
    """An argparse ``type``: a TCP port, 0 to 65535."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, not {port}")
    return port


async def main(argv: list[str] | None = None) -> int:
    """Serve the bot until Ctrl+C (or, with --selftest, until the self-test is done); returns the exit status."""
    parser = argparse.ArgumentParser(description="An agent answering chat messages POSTed to a webhook.")
    parser.add_argument("--port", type=port_number, default=8080, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--secret", default="s3cret", help="bearer token clients must send")
    parser.add_argument("--selftest", action="store_true", help="send a few requests to itself, then exit")
    options = parser.parse_args(argv or [])
    try:
        channel = WebhookChannel(port=options.port, secret=options.secret)
    except ValueError as exc:  # a --secret no client could send
        parser.error(f"--secret: {exc}")
    try:
        async with open_runtime() as runtime, open_gateway(runtime, make_agent(), [channel]) as gateway:
            await gateway.wait_ready(channel.name)
            print(f"Listening on http://127.0.0.1:{channel.port}/messages — try:\n")
            print(
                f"  curl -s -X POST http://127.0.0.1:{channel.port}/messages "
                f"-H 'Authorization: Bearer {options.secret}' -H 'Content-Type: application/json' "
                """-d '{"chat_id": "me", "text": "hello", "wait_for_response": true}'\n""",
                flush=True,
            )
            if options.selftest:
                return await selftest(channel.port, options.secret)
            await trio.sleep_forever()
    except OSError as exc:  # the port is taken
        print(f"error: cannot listen on 127.0.0.1:{options.port}: {exc}", file=sys.stderr)
        return 1
    return 0  # pragma: no cover  (sleep_forever only ends by cancellation)


if __name__ == "__main__":
    try:
        sys.exit(trio.run(main, sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
