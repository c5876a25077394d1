"""A hand-written stdio MCP server of the 2025-06-18 protocol, run by the tests.

With our client the SDK's own server speaks 2026-07-28, where a server's
question travels inside the call it is for. Over stdio in the 2025 protocol
it is a request of its own that does not say which call it is for; this
server stages that, each step waiting for the client's next message::

    ask      reports progress, and waits: its question is asked during ``quick``
    quick    asks ``ask``'s question ("Your name?"), and waits
    release  answers ``quick``, then itself; ``ask`` is answered once its question is

and two faults: ``--mute-list`` never answers ``tools/list``; ``--exit-at-initialize`` closes its stdin,
answers ``initialize``, then exits with status 1 (our next message finds its stdin closed)::

    python tests/agents/mcp/legacy_server.py [--mute-list | --exit-at-initialize]
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

TOOLS = [{"name": name, "inputSchema": {"type": "object"}} for name in ("ask", "quick", "release")]
MUTE_LIST = "--mute-list" in sys.argv
EXIT_AT_INITIALIZE = "--exit-at-initialize" in sys.argv
NAME_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
    sys.stdout.flush()


def text(id_: Any, value: str) -> None:
    send({"id": id_, "result": {"content": [{"type": "text", "text": value}]}})


def main() -> None:
    calls: dict[str, Any] = {}  # tool name -> the id of its call in flight
    for line in sys.stdin:
        message = json.loads(line)
        id_, method = message.get("id"), message.get("method")
        if method is None and id_ == "question":  # the answer to ask's question
            answer = message.get("result") or {}
            content = answer.get("content") or {}
            text(calls.pop("ask"), f"{answer.get('action')}: {content.get('name')}")
        elif method == "initialize":
            result = {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "legacy", "version": "1"},
            }
            if EXIT_AT_INITIALIZE:
                os.close(0)  # before the answer: the client's next message finds no reader
                print("fatal: exiting at initialize", file=sys.stderr, flush=True)
                send({"id": id_, "result": result})
                sys.exit(1)
            send({"id": id_, "result": result})
        elif method == "tools/list" and MUTE_LIST:
            pass  # never answered
        elif method == "tools/list":
            send({"id": id_, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            name = message["params"]["name"]
            calls[name] = id_
            if name == "ask":
                token = message["params"].get("_meta", {}).get("progressToken")
                send({"method": "notifications/progress", "params": {"progressToken": token, "progress": 1}})
            elif name == "quick":
                params = {"message": "Your name?", "requestedSchema": NAME_SCHEMA}
                send({"id": "question", "method": "elicitation/create", "params": params})
            elif name == "release":
                text(calls.pop("quick"), "quick done")
                text(calls.pop("release"), "released")
        elif id_ is not None and method is not None:
            send({"id": id_, "error": {"code": -32601, "message": f"no {method}"}})  # server/discover: 2025 only


if __name__ == "__main__":
    main()
