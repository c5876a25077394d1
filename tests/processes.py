"""Real child processes for tests: started from the repository root, their output collected as it comes.

A test waits for a line a child prints before going on (never a sleep), and
whatever is still running is killed on the way out, even when the test fails.
"""

from __future__ import annotations

import codecs
import os
import re
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

ROOT = Path(__file__).resolve().parent.parent


def child_env() -> dict[str, str]:
    """The test's environment, unbuffered, with warnings as errors."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "error"}


class Child:
    """A running process whose stdout and stderr are collected as they come."""

    def __init__(self, process: trio.Process, args: tuple[str, ...]) -> None:
        self.process = process
        self.args = args
        self.stdout = ""
        self.stderr = ""
        self._open_streams = 2
        self._changed = trio.Event()

    async def collect(self, stream: trio.abc.ReceiveStream, name: str) -> None:
        """Append everything ``stream`` gives to ``self.stdout`` or ``self.stderr`` until EOF."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while chunk := await stream.receive_some():
            setattr(self, name, getattr(self, name) + decoder.decode(chunk))
            self._wake()
        setattr(self, name, getattr(self, name) + decoder.decode(b"", final=True))
        self._open_streams -= 1
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def describe(self) -> str:
        return f"{' '.join(self.args)}\n--- stdout:\n{self.stdout}\n--- stderr:\n{self.stderr}"

    async def wait_for(self, pattern: re.Pattern[str] | str) -> re.Match[str]:
        """Wait until the process has printed a line matching ``pattern`` (fails if its output ends first)."""
        regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
        while (match := regex.search(self.stdout)) is None:
            if self._open_streams == 0:
                raise AssertionError(
                    f"the process ended its output without printing {regex.pattern!r}:\n{self.describe()}"
                )
            await self._changed.wait()
        return match

    async def interrupt(self) -> int:
        """Ctrl-C: send SIGINT, wait for the exit (and the end of its output); returns the exit status."""
        self.process.send_signal(signal.SIGINT)
        return await self.finish()

    async def finish(self) -> int:
        """Wait for the exit and the end of its output; returns the exit status."""
        status = await self.process.wait()
        while self._open_streams:
            await self._changed.wait()
        return status


@asynccontextmanager
async def running(*args: str, env: Mapping[str, str] | None = None, stdin_pipe: bool = False) -> AsyncIterator[Child]:
    """Run ``python *args`` from the repository root for the block; whatever is left is killed on the way out.

    With ``stdin_pipe``, its stdin is a pipe the test holds open (a prompt waits on it; nobody answers).
    """
    process = await trio.lowlevel.open_process(
        [sys.executable, *args],
        cwd=ROOT,
        env={**child_env(), **(env or {})},
        stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    child = Child(process, args)
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child.collect, process.stdout, "stdout")
            nursery.start_soon(child.collect, process.stderr, "stderr")
            try:
                yield child
            finally:
                if process.returncode is None:
                    process.kill()  # the test failed (or forgot): the collectors end at EOF
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()  # reaps it
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    await trio.aclose_forcefully(pipe)


async def run_python(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``python *args`` from the repository root to its end (killed if the test is cancelled)."""
    return await trio.run_process(
        [sys.executable, *args],
        cwd=ROOT,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
