"""Chat channels for :func:`runtime.open_gateway`: an HTTP webhook and a WebSocket gateway."""
