"""W5's trio-agents server: ``streams.open_server`` serving W1's agent (bench/impl_trio_agents.py).

Listens on 127.0.0.1 (a free port), prints ``{"port": ..., "versions": ...}`` as one line on stdout,
and serves until SIGTERM or SIGINT, then shuts down as ``open_server`` does.
Run with trio-agents' interpreter, the checkout to measure on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import signal

import trio
from impl_trio_agents import VERSIONS, make_agent

from streams import open_server


async def main() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_server(make_agent(), port=0) as server:
            print(json.dumps({"port": server.port, "versions": VERSIONS}), flush=True)
            async for _ in signals:
                break


if __name__ == "__main__":
    trio.run(main)
