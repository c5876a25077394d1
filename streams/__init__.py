"""What crosses a process boundary: SSE, WebSocket and HTTP (later issues)."""

from .channels import (
    WebhookChannel as WebhookChannel,
    WebhookStatistics as WebhookStatistics,
    WebSocketChannel as WebSocketChannel,
    WebSocketChannelStatistics as WebSocketChannelStatistics,
)
