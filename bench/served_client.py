"""W5's load generator: M concurrent HTTP clients, each creating a session and streaming one run, again and again.

Runs under trio-agents' interpreter (trio, and a minimal HTTP/1.1 client
on raw sockets, far cheaper than any server measured) against any of W5's
servers, so every server faces the same client. Each client owns one
keep-alive connection (opened one after another before the warm-up) and loops:
``POST /sessions``, then ``POST /sessions/{id}/runs`` with ``{"input":
"prompt k"}``, reading the SSE body to its end and checking it holds the
run's answer (``--expect``: ``done {k}``, or as the server splits it).
A run's latency is from the first request to the end of that body.

``--warmup`` runs first (connections opened, caches warm), then ``--runs``
measured ones; the server's CPU time (user + system, all threads, from
``/proc/<pid>/stat``) is read just before and just after the measured ones.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import trio

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Connection:
    """One keep-alive HTTP/1.1 connection: a request out, its whole response in (``Content-Length`` or chunked).

    Deliberately minimal, so that the client costs the machine far less
    than any server it measures (httpx spends more per request than the
    servers do, which would make the client the bottleneck).
    """

    def __init__(self, stream: trio.SocketStream, host: bytes) -> None:
        self._stream = stream
        self._host = host
        self._buffer = bytearray()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        await self._stream.send_all(head % (path.encode(), self._host, len(body)) + body)
        end = await self._until(b"\r\n\r\n")
        head_bytes = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        status = int(head_bytes[9:12])
        headers = head_bytes.lower()
        if b"transfer-encoding: chunked" in headers:
            parts = []
            while True:
                end = await self._until(b"\r\n")
                size = int(bytes(self._buffer[:end]).split(b";")[0], 16)
                del self._buffer[: end + 2]
                await self._at_least(size + 2)
                parts.append(bytes(self._buffer[:size]))
                del self._buffer[: size + 2]
                if size == 0:
                    return status, b"".join(parts)
        start = headers.index(b"content-length:") + 15
        length = int(headers[start : headers.index(b"\r\n", start)])
        await self._at_least(length)
        content = bytes(self._buffer[:length])
        del self._buffer[:length]
        return status, content

    async def _until(self, marker: bytes) -> int:
        while (index := self._buffer.find(marker)) < 0:
            await self._read()
        return index

    async def _at_least(self, size: int) -> None:
        while len(self._buffer) < size:
            await self._read()

    async def _read(self) -> None:
        data = await self._stream.receive_some(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self._buffer += data


async def load(host: str, port: int, clients: int, runs: int, warmup: int, pid: int, expect: str) -> dict[str, float]:
    async def one(connection: Connection, k: int) -> float:
        start = time.perf_counter()
        status, created = await connection.post("/sessions", b"{}")
        assert status == 201, created
        sid = json.loads(created)["id"]
        status, body = await connection.post(f"/sessions/{sid}/runs", b'{"input":"prompt %d"}' % k)
        elapsed = time.perf_counter() - start
        assert status == 200, body
        assert expect.format(k=k).encode() in body, body[-300:]
        return elapsed

    async def phase(connections: list[Connection], count: int, offset: int) -> list[float]:
        latencies: list[float] = []
        counter = iter(range(offset, offset + count))

        async def worker(connection: Connection) -> None:
            for k in counter:
                latencies.append(await one(connection, k))

        async with trio.open_nursery() as nursery:
            for connection in connections:
                nursery.start_soon(worker, connection)
        return latencies

    with trio.fail_after(600):
        streams = []
        try:
            for _ in range(clients):  # one at a time: no burst of SYNs on a short listen backlog
                streams.append(await trio.open_tcp_stream(host, port))
            connections = [Connection(stream, f"{host}:{port}".encode()) for stream in streams]
            await phase(connections, warmup, 0)
            cpu_before = cpu_seconds(pid)
            client_before = time.process_time()
            start = time.perf_counter()
            latencies = await phase(connections, runs, warmup)
            wall = time.perf_counter() - start
            cpu_after = cpu_seconds(pid)
            client_cpu = time.process_time() - client_before
        finally:
            for stream in streams:
                await stream.aclose()
    latencies.sort()
    return {
        "runs_per_s": runs / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "cpu_us_per_run": (cpu_after - cpu_before) / runs * 1e6,
        "client_cpu_us_per_run": client_cpu / runs * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="the server's port on 127.0.0.1")
    parser.add_argument("--pid", type=int, required=True, help="the server's process id (for its CPU time)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--expect", default="done {k}", help="what a run's body must hold ({k}: the prompt's k)")
    args = parser.parse_args()
    result = trio.run(load, "127.0.0.1", args.port, args.clients, args.runs, args.warmup, args.pid, args.expect)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
