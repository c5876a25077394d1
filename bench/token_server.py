"""W6's loopback provider: answers every POST with one pre-built token stream, as a provider streams it.

    python token_server.py --chunks 5000   # prints {"port": ...} on one line, serves until killed

Stdlib only (``http.server``, one thread per connection, HTTP/1.1 keep-alive),
in a process of its own so that none of its CPU time is counted in the
client's. At start-up it builds, for each format of bench/token_bodies.py,
the answer of ``--chunks`` one-token chunks, each SSE event framed as one
HTTP chunk (``Transfer-Encoding: chunked``). A request is routed on its path
alone (``/chat/completions``, ``/messages``, ``/responses``,
``...:streamGenerateContent``), whatever the prefix, body or headers; the
answer goes out one ``send`` per event with Nagle off, as a provider flushes
each token, with no pacing: the client reads as fast as it can parse.
"""

from __future__ import annotations

import argparse
import json
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from token_bodies import FORMATS, tokens


def framed(events: list[bytes]) -> list[bytes]:
    """Each event as one HTTP/1.1 chunk, then the last (empty) chunk."""
    return [b"%x\r\n%s\r\n" % (len(event), event) for event in events] + [b"0\r\n\r\n"]


def make_handler(chunks: int) -> type[BaseHTTPRequestHandler]:
    pieces = tokens(chunks)
    bodies = [(fmt.route, framed(fmt.events(pieces))) for fmt in FORMATS.values()]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            path = self.path.partition("?")[0]
            body = next((body for route, body in bodies if path.endswith(route)), None)
            if body is None:
                self.send_error(404, f"no format answers {path}")
                return
            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for chunk in body:  # wfile is unbuffered: one sendall per event
                self.wfile.write(chunk)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=5000)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args.chunks))
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
