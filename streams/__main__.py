"""``python -m streams serve --agent module:attr --port N [--store URL]``: serve an agent until Ctrl-C.

``python -m streams mcp --agent module:attr``: serve it as an MCP server over
stdin and stdout (for an MCP client that starts it), until stdin ends.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import re
import signal
import sys
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from agents import Agent
from runtime import PostgresStore, SQLiteStore, StoreError

from ._exceptions import UnsafeBindError
from ._requests import check_bind, check_token
from ._server import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_QUEUED_RUNS, DEFAULT_MAX_SESSIONS, open_server

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from runtime import SessionStore


def store_from_url(url: str) -> SessionStore:
    """The store ``url`` names: ``sqlite:PATH`` (a file) or ``postgresql://...`` (a libpq URL).

    Raises:
        ValueError: ``url`` names neither.
    """
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise ValueError("sqlite:PATH needs a path")
        return SQLiteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    raise ValueError("a store is sqlite:PATH or postgresql://user@host/dbname")


def _redacted(url: str) -> str:
    """``url`` without the password it may hold (``scheme://user:password@host``): errors are printed."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


_Number = TypeVar("_Number", int, float)


def number(convert: Callable[[str], _Number], what: str, ok: Callable[[_Number], bool]) -> Callable[[str], _Number]:
    """An argparse ``type``: ``convert``, refusing (exit 2, saying it must be ``what``) a value not ``ok``."""

    def parse(text: str) -> _Number:
        value = convert(text)  # a ValueError is argparse's "invalid int value"
        if not ok(value):  # NaN fails every comparison
            raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
        return value

    parse.__name__ = convert.__name__
    return parse


PORT = number(int, "a port, 0 to 65535", lambda port: 0 <= port <= 65535)
POSITIVE_INT = number(int, "above zero", lambda value: value > 0)
POSITIVE_FLOAT = number(float, "above zero", lambda value: value > 0)
NATURAL_INT = number(int, "0 or more", lambda value: value >= 0)
NATURAL_FLOAT = number(float, "0 or more", lambda value: value >= 0)


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
    agent: Agent[Any, Any], *, host: str, port: int, token: str | None, idle_timeout: float | None, **options: Any
) -> None:
    """Serve ``agent`` until Ctrl-C or SIGTERM, printing the URL once listening; ``options`` go to ``open_server``."""
    # Ctrl-C (and SIGTERM) arrive here as a message, so that shutdown is the
    # ordinary exit of the server's block, not a KeyboardInterrupt raised in
    # whichever task happens to be running.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_server(
            agent, host=host, port=port, token=token, idle_timeout=idle_timeout, **options
        ) as server:
            print(f"serving on {server.url}", flush=True)
            print(f"inspector: {server.url}/inspect", flush=True)
            print(f"agent {agent.name!r}; Ctrl-C stops", flush=True)
            async for _ in signals:
                break


async def serve_mcp(agent: Agent[Any, Any]) -> None:
    """Serve ``agent`` as an MCP server on stdin and stdout until stdin ends, Ctrl-C or SIGTERM."""
    from ._mcp import serve_stdio  # the mcp package is an extra: imported only for this command

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            await serve_stdio(agent)
            nursery.cancel_scope.cancel()  # stdin ended: the client is gone


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve an agent over HTTP, SSE and WebSocket")
    serve_parser.add_argument("--agent", required=True, help="module:attr of an agents.Agent")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=PORT, default=8000, help="0: any free port")
    serve_parser.add_argument(
        "--token", default=os.environ.get("TRIO_AGENTS_TOKEN"), help="require this bearer token (env TRIO_AGENTS_TOKEN)"
    )
    serve_parser.add_argument(
        "--idle-timeout",
        type=NATURAL_FLOAT,
        default=DEFAULT_IDLE_TIMEOUT,
        help=f"close sessions idle this long, in seconds (default {DEFAULT_IDLE_TIMEOUT:g}; 0: never)",
    )
    serve_parser.add_argument(
        "--max-sessions",
        type=NATURAL_INT,
        default=DEFAULT_MAX_SESSIONS,
        help=f"the most sessions open at once (default {DEFAULT_MAX_SESSIONS}; 0: no limit)",
    )
    serve_parser.add_argument(
        "--max-queued-runs",
        type=NATURAL_INT,
        default=DEFAULT_MAX_QUEUED_RUNS,
        help=f"the most runs of a session waiting for their turn (default {DEFAULT_MAX_QUEUED_RUNS}; 0: no limit)",
    )
    serve_parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages of this origin (http://host:port; '*': any) call the server; repeatable (default: none)",
    )
    serve_parser.add_argument(
        "--allow-host",
        action="append",
        default=None,
        metavar="NAME",
        help="a host name the server answers to, any port; repeatable (default: the loopback names on loopback)",
    )
    serve_parser.add_argument(
        "--write-timeout",
        type=POSITIVE_FLOAT,
        default=10.0,
        help="drop a client that takes longer to take one send (s)",
    )
    serve_parser.add_argument(
        "--body-timeout", type=POSITIVE_FLOAT, default=10.0, help="answer 408 to a body that takes longer to arrive (s)"
    )
    serve_parser.add_argument("--backlog", type=POSITIVE_INT, default=1024, help="the listen backlog (default: 1024)")
    serve_parser.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="keep sessions in sqlite:PATH or postgresql://... (default: in memory, lost at exit)",
    )
    serve_parser.add_argument(
        "--public-url",
        default=None,
        metavar="URL",
        help="where clients and the other servers on --store reach this one; named as the owner in their 421 "
        "answers (default: http://HOST:PORT, or hostname:pid with --port 0)",
    )
    serve_parser.add_argument(
        "--allow-unauthenticated-remote",
        action="store_true",
        help="serve on a non-loopback --host with no token (anyone who reaches it drives the agent)",
    )
    mcp_parser = commands.add_parser("mcp", help="serve an agent as an MCP server over stdin and stdout")
    mcp_parser.add_argument("--agent", required=True, help="module:attr of an agents.Agent")
    args = parser.parse_args(argv)
    if args.command == "mcp":
        return _main_mcp(parser, args)
    try:
        check_token(args.token, "the token (--token or TRIO_AGENTS_TOKEN)")
    except ValueError as exc:
        parser.error(str(exc))
    try:
        check_bind(
            args.host,
            authenticated=args.token is not None,
            allow_unauthenticated_remote=args.allow_unauthenticated_remote,
            what="a token (--token or TRIO_AGENTS_TOKEN)",
        )
    except UnsafeBindError as exc:
        parser.error(str(exc))
    sys.path.insert(0, os.getcwd())  # like python -m: modules next to the caller are found
    try:
        agent = load_agent(args.agent)
    except (ImportError, AttributeError, ValueError) as exc:
        parser.error(f"--agent {args.agent}: {exc}")
    try:
        store = None if args.store is None else store_from_url(args.store)
    except ValueError as exc:
        parser.error(f"--store {_redacted(args.store)}: {exc}")
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
                max_queued_runs=args.max_queued_runs or None,
                allowed_origins=args.allow_origin,
                allowed_hosts=args.allow_host,
                write_timeout=args.write_timeout,
                body_timeout=args.body_timeout,
                backlog=args.backlog,
                allow_unauthenticated_remote=args.allow_unauthenticated_remote,
                store=store,
                public_url=args.public_url,
            )
        )
    except StoreError as exc:
        assert store is not None
        print(f"error: the store {store.url}: {exc}", file=sys.stderr, flush=True)  # its URL, never a password
        return 1
    except OSError as exc:  # the port is taken, the host is not ours: a line, not a traceback
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("stopped", flush=True)
    return 0


def _main_mcp(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        import mcp  # noqa: F401  # only to say what is missing before anything starts
    except ImportError:
        parser.error("the mcp command needs the mcp package: pip install 'trio-agents[mcp]'")
    sys.path.insert(0, os.getcwd())
    try:
        agent = load_agent(args.agent)
    except (ImportError, AttributeError, ValueError) as exc:
        parser.error(f"--agent {args.agent}: {exc}")
    trio.run(serve_mcp, agent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
