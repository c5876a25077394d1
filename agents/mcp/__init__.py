"""MCP servers as toolsets: ``Agent(tools=[MCPServerStdio(...)])``.

Needs the ``mcp`` extra (``pip install 'trio-agents[mcp]'``): the official MCP
SDK, which runs on anyio, so on Trio. A server's connection belongs to the
session by default (opened by its first run that needs it, shared by its
later runs and their concurrent tool calls, closed with the session, by the
task of the session that opened it); see :class:`MCPServerStdio`.
"""

try:
    import mcp as _mcp  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError("agents.mcp needs the MCP SDK: pip install 'trio-agents[mcp]'", name=exc.name) from exc

from ._exceptions import (
    BrokenMCPServerError as BrokenMCPServerError,
    MCPConnectionError as MCPConnectionError,
    MCPServerError as MCPServerError,
    MCPToolError as MCPToolError,
)
from ._results import MCPResult as MCPResult
from ._server import (
    Lifetime as Lifetime,
    MCPServerStdio as MCPServerStdio,
    MCPServerStreamableHTTP as MCPServerStreamableHTTP,
)
