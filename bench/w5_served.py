"""W5 served: M concurrent HTTP clients (50 and 200), each creating a session and streaming one W1 run over SSE.

One server per measurement, in its own process (a fresh one for each M):

- ``trio-agents``: ``streams.open_server`` (Hypercorn's Trio worker) serving
  W1's agent (bench/served_trio.py --mode agent, trio-agents' interpreter,
  this checkout on ``PYTHONPATH``);
- ``pydantic-ai``: (a) FastAPI + sse-starlette + uvicorn wrapping
  pydantic-ai's ``run_stream_events`` with W1's ``FunctionModel``
  (bench/served_peers.py --mode agent, bench/.venv-peers);
- ``floor``: (b) the same stack sending 8 pre-made events per run, no agent:
  the plumbing floor (bench/served_peers.py --mode floor);
- two that take trio-agents' figure apart (bench/served_trio.py):
  ``trio-agents-async-tool``, the same agent with an async tool (no hop to a
  worker thread and back), and ``trio-floor``, trio-agents' own plumbing
  (Hypercorn's Trio worker + Starlette + ``EventStreamResponse``) sending the
  same pre-made events with no runtime.

The load comes from one more process, bench/served_client.py (trio, raw HTTP/1.1,
trio-agents' interpreter: the same client for every server), on loopback.
Per M: runs/s, p50/p99 latency of a run (session creation to the end of its
SSE body), and the server's CPU time per run (user + system, from
``/proc/<pid>/stat``), over ``--runs`` runs after ``--warmup``.

    .venv/bin/python bench/w5_served.py --impl trio-agents --clients 50,200
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS_PYTHON = BENCH / ".venv-peers" / "bin" / "python"
SERVERS = {  # impl: (interpreter, script, what a run's SSE body must hold)
    "trio-agents": (sys.executable, ["served_trio.py", "--mode", "agent"], '"text":" {k}"'),
    "pydantic-ai": (str(PEERS_PYTHON), ["served_peers.py", "--mode", "agent"], "done {k}"),
    "floor": (str(PEERS_PYTHON), ["served_peers.py", "--mode", "floor"], '"text":" 0"'),
    "trio-agents-async-tool": (sys.executable, ["served_trio.py", "--mode", "async-tool"], '"text":" {k}"'),
    "trio-floor": (sys.executable, ["served_trio.py", "--mode", "floor"], '"text":" 0"'),
}
IMPLS = tuple(SERVERS)


def measure(impl: str, clients: int, runs: int, warmup: int) -> tuple[dict[str, float], dict[str, str]]:
    """Start ``impl``'s server, load it with ``clients`` clients, stop it; the client's figures and the versions."""
    python, args, expect = SERVERS[impl]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYDANTIC_AI_NO_BANNER": "1", "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([python, *args], cwd=BENCH, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line:
            raise SystemExit(f"the {impl} server did not start")
        hello = json.loads(line)
        command = [sys.executable, str(BENCH / "served_client.py"), "--port", str(hello["port"]),
                   "--pid", str(server.pid), "--clients", str(clients), "--runs", str(runs),
                   "--warmup", str(warmup), "--expect", expect]  # fmt: skip
        done = subprocess.run(command, cwd=BENCH, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise SystemExit(f"served_client.py against {impl} failed:\n{done.stderr[-4000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1]), hello["versions"]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=IMPLS, default="trio-agents")
    parser.add_argument("--clients", default="50,200", help="comma-separated client counts")
    parser.add_argument("--runs", type=int, default=1500, help="measured runs per client count")
    parser.add_argument("--warmup", type=int, default=400)
    args = parser.parse_args()
    metrics: dict[str, Any] = {}
    versions: dict[str, str] = {}
    for clients in (int(m) for m in args.clients.split(",")):
        figures, versions = measure(args.impl, clients, args.runs, max(args.warmup, clients))
        for name, value in figures.items():
            metrics[f"{name}_{clients}"] = value
    record = {"workload": "w5", "impl": args.impl, "versions": versions, "metrics": metrics}
    sys.stdout.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
