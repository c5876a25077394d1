"""Chat channels for :func:`runtime.open_gateway`: an HTTP webhook and a WebSocket gateway."""

from ._webhook import WebhookChannel as WebhookChannel, WebhookStatistics as WebhookStatistics
from ._websocket import WebSocketChannel as WebSocketChannel, WebSocketChannelStatistics as WebSocketChannelStatistics
