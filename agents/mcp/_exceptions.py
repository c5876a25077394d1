"""Exceptions raised by :mod:`agents.mcp`; each is an :class:`~agents.AgentsError`.

The tree::

    AgentsError
    └── MCPServerError            an MCP server could not serve a call
        ├── MCPConnectionError    no connection: the server would not start, refused, or did
        │                         not answer ``initialize`` (or ``tools/list``) within ``connect_timeout``
        ├── BrokenMCPServerError  the connection broke: its process exited or was killed, or the
        │                         remote server went away (``__cause__`` holds what we saw)
        └── MCPToolError          the server answered the call with an error (an ``isError``
                                  result, or a protocol error for the request)

A tool call that raises one of these gives the model an error result with its
message; the run goes on.
"""

from __future__ import annotations

from agents._exceptions import AgentsError


class MCPServerError(AgentsError):
    """An MCP server could not serve a call.

    Attributes:
        server: The server's name (as in ``MCPServerStdio(name=...)``).
    """

    def __init__(self, server: str, message: str) -> None:
        super().__init__(message)
        self.server = server


class MCPConnectionError(MCPServerError):
    """No connection to the server: it would not start, refused, or did not answer ``initialize`` (or
    ``tools/list``) in time."""


class BrokenMCPServerError(MCPServerError):
    """The connection broke while in use: the server's process exited or was killed, or the remote went away.

    The next call opens a fresh connection.
    """


class MCPToolError(MCPServerError):
    """The server answered a tool call with an error: an ``isError`` result, or a protocol error.

    Attributes:
        tool: The tool's name on the server.
    """

    def __init__(self, server: str, tool: str, message: str) -> None:
        super().__init__(server, message)
        self.tool = tool
