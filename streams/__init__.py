"""What crosses a process boundary: chat channels over HTTP and WebSocket (served mode comes next)."""

from .channels import (
    WebhookChannel as WebhookChannel,
    WebhookStatistics as WebhookStatistics,
    WebSocketChannel as WebSocketChannel,
    WebSocketChannelStatistics as WebSocketChannelStatistics,
)
