"""A bare stdio MCP server (JSON-RPC by hand) whose answers the SDK's parser cannot read, run by the tests.

``snippet`` answers a text cut in the middle of an emoji, as JavaScript's
``JSON.stringify("ok 😀".slice(0, 4))`` writes it: a lone ``"\\ud83d"``
escape, valid JSON that pydantic's parser refuses. ``garbled`` answers with a
message that is JSON but not JSON-RPC (``"jsonrpc": "1.0"``). ``echo``
answers normally::

    python tests/agents/mcp/odd_answers_server.py
"""

from __future__ import annotations

import json
import sys
from typing import Any

TOOLS = ("snippet", "garbled", "echo")


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")  # json.dumps escapes the lone surrogate
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        request_id, method = message.get("id"), message.get("method")
        if request_id is None:
            continue  # a notification
        if method == "initialize":
            info = {"name": "odd-answers", "version": "1"}
            result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": info}
            send({"id": request_id, "result": result})
        elif method == "tools/list":
            tools = [{"name": name, "inputSchema": {"type": "object"}} for name in TOOLS]
            send({"id": request_id, "result": {"tools": tools}})
        elif method == "tools/call":
            name = message["params"]["name"]
            if name == "garbled":
                send({"id": request_id, "jsonrpc": "1.0", "result": {"content": []}})
            else:
                text = "ok \ud83d" if name == "snippet" else "echo"
                send({"id": request_id, "result": {"content": [{"type": "text", "text": text}]}})
        else:
            send({"id": request_id, "error": {"code": -32601, "message": f"no method {method}"}})


if __name__ == "__main__":
    main()
