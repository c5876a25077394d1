"""``python -m streams serve --agent module:attr --port N``: serve an agent until Ctrl-C."""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import signal
import sys
from typing import TYPE_CHECKING

import trio

from agents import Agent

from ._server import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_SESSIONS, open_server

if TYPE_CHECKING:
    from collections.abc import Sequence


def load_agent(spec: str) -> Agent:
    """The :class:`~agents.Agent` at ``module:attr`` (``attr`` may be dotted).

    Raises:
        ValueError: ``spec`` is malformed, or names something that is not an agent.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--agent must look like module:attr, not {spec!r}")
    found: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    if not isinstance(found, Agent):
        raise ValueError(f"{spec} is a {type(found).__name__}, not an agents.Agent")
    return found


async def serve(
    agent: Agent,
    *,
    host: str,
    port: int,
    token: str | None,
    idle_timeout: float | None,
    max_sessions: int | None = DEFAULT_MAX_SESSIONS,
) -> None:
    """Serve ``agent`` until Ctrl-C or SIGTERM, printing the URL once listening."""
    # Ctrl-C (and SIGTERM) arrive here as a message, so that shutdown is the
    # ordinary exit of the server's block, not a KeyboardInterrupt raised in
    # whichever task happens to be running.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_server(
            agent, host=host, port=port, token=token, idle_timeout=idle_timeout, max_sessions=max_sessions
        ) as server:
            print(f"serving on {server.url}", flush=True)
            print(f"agent {agent.name!r}; Ctrl-C stops", flush=True)
            async for _ in signals:
                break


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve an agent over HTTP, SSE and WebSocket")
    serve_parser.add_argument("--agent", required=True, help="module:attr of an agents.Agent")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    serve_parser.add_argument(
        "--token", default=os.environ.get("TRIO_AGENTS_TOKEN"), help="require this bearer token (env TRIO_AGENTS_TOKEN)"
    )
    serve_parser.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        help=f"close sessions idle this long, in seconds (default {DEFAULT_IDLE_TIMEOUT:g}; 0: never)",
    )
    serve_parser.add_argument(
        "--max-sessions",
        type=int,
        default=DEFAULT_MAX_SESSIONS,
        help=f"the most sessions open at once (default {DEFAULT_MAX_SESSIONS}; 0: no limit)",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, os.getcwd())  # like python -m: modules next to the caller are found
    try:
        agent = load_agent(args.agent)
    except (ImportError, AttributeError, ValueError) as exc:
        parser.error(f"--agent {args.agent}: {exc}")
    try:
        trio.run(
            functools.partial(
                serve,
                agent,
                host=args.host,
                port=args.port,
                token=args.token,
                idle_timeout=args.idle_timeout or None,
                max_sessions=args.max_sessions or None,
            )
        )
    except KeyboardInterrupt:
        print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
