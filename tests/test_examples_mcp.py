"""The MCP example runs offline, against the reference server make's set-up installs, and shows what it promises."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
INSTALLED = REPO / ".mcp" / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"


@pytest.fixture
def node() -> str:
    """``node``, with the reference server installed (skipped, saying why, only without node)."""
    path = shutil.which("node")
    if path is None:
        pytest.skip(
            "node is not installed: the MCP reference server (@modelcontextprotocol/server-everything) needs it"
        )
    if not INSTALLED.exists():
        pytest.fail(
            "the MCP reference server is not installed in .mcp/: make's set-up installs it "
            "(mkdir -p .mcp && cp tests/agents/mcp/npm/package*.json .mcp/ && npm ci --prefix .mcp)",
            pytrace=False,
        )
    return path


EXPECTED = [
    "  -> echo(message='hello from trio-agents')",
    "  <- echo: 'Echo: hello from trio-agents'",
    "  <- get-sum: 'The sum of 2 and 3 is 5.'",
    "  .. trigger-long-running-operation: 4/4",
    "  <- get-tiny-image: \"Here's the image you requested:\\n[image: image/png, 4.0 kB]\\n"
    'The image above is the MCP logo."',
    "[run finished: completed]",
    "[session closed: the MCP server process has exited]",
]


async def test_mcp_tools_example_calls_the_reference_servers_tools(
    node: str, capsys: pytest.CaptureFixture[str], load_example: Callable[[str], ModuleType]
) -> None:
    """The example's agent calls echo and get-sum at once, streams the long call's progress, gets an image
    as a placeholder, and the server is gone once the session closes."""
    example = load_example("mcp_tools")
    assert await example.main() == 0
    lines = capsys.readouterr().out.splitlines()
    for line in EXPECTED:
        assert line in lines


def test_mcp_tools_example_runs_as_a_script(node: str) -> None:
    """`python examples/mcp_tools.py` exits 0 with no key and no network (only node on the PATH)."""
    completed = subprocess.run(
        [sys.executable, str(REPO / "examples" / "mcp_tools.py")],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=120,
        # This tree's packages, whichever environment runs the tests.
        env={"PATH": os.path.dirname(node), "PYTHONWARNINGS": "error", "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    for line in EXPECTED:
        assert line in completed.stdout.splitlines()


def test_mcp_tools_example_refuses_an_unknown_model_with_usage(
    run_example: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """``--model bad`` ended in an AgentDefinitionError traceback (exit 1): now, as in the quickstart, the
    usage and the reason, exit 2, before any server starts (no node needed)."""
    completed = run_example("mcp_tools", "--model", "bad")
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.startswith("usage: mcp_tools.py")
    assert "mcp_tools.py: error: unknown model 'bad'" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert completed.stdout == ""
