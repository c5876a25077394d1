"""What crosses a process boundary: SSE, WebSocket and HTTP (later issues)."""
