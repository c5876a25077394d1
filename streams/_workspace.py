"""A served session's workspace: the files its agent's tools and its clients work on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import attrs

from agents import Tool, ToolContext, tool

from ._exceptions import WorkspaceError

if TYPE_CHECKING:
    from collections.abc import Callable

Source: TypeAlias = Literal["agent", "client"]
"""Who changed the workspace: a tool of the agent, or a client over the ``workspace`` stream."""


@attrs.frozen
class WorkspaceChange:
    """A file was written or deleted."""

    op: Literal["write", "delete"]
    path: str
    source: Source


class Workspace:
    """Files in memory, bounded in size (paths and contents); every change is reported to the listeners.

    A served run gets its session's workspace as ``ctx.deps``; the tools in
    :data:`WORKSPACE_TOOLS` use it.
    """

    def __init__(self, *, max_bytes: int = 16 * 2**20) -> None:
        self.max_bytes = max_bytes
        """The most the files may hold together, their paths and contents (UTF-8 bytes)."""
        self._files: dict[str, str] = {}
        self._size = 0
        self._listeners: list[Callable[[WorkspaceChange], object]] = []

    def listen(self, listener: Callable[[WorkspaceChange], object]) -> Callable[[], None]:
        """Call ``listener`` (synchronously; it must not block) on every change; returns the remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def read(self, path: str) -> str:
        """The file's content. Raises :class:`WorkspaceError` if there is no such file."""
        try:
            return self._files[_checked(path)]
        except KeyError:
            raise WorkspaceError(f"no such file: {_shown(path)}", kind="no_such_file") from None

    def list(self, prefix: str = "") -> list[str]:
        """The paths of the files, sorted; only those starting with ``prefix`` if given."""
        return sorted(path for path in self._files if path.startswith(prefix))

    def write(self, path: str, content: str, *, source: Source = "client") -> None:
        """Create or replace a file. Raises :class:`WorkspaceError` past ``max_bytes``."""
        path = _checked(path)
        if not isinstance(content, str):
            raise WorkspaceError("content must be a string", kind="bad_command")
        old = self._files.get(path)
        # a new file's path counts too: else empty files with long paths would grow without bound
        added = _size(content) - _size(old) if old is not None else _size(path) + _size(content)
        size = self._size + added
        if size > self.max_bytes:
            raise WorkspaceError(f"the workspace is full ({self.max_bytes} bytes)", kind="workspace_full")
        self._files[path] = content
        self._size = size
        self._changed(WorkspaceChange("write", path, source))

    def delete(self, path: str, *, source: Source = "client") -> None:
        """Remove a file. Raises :class:`WorkspaceError` if there is no such file."""
        path = _checked(path)
        if path not in self._files:
            raise WorkspaceError(f"no such file: {_shown(path)}", kind="no_such_file")
        self._size -= _size(path) + _size(self._files.pop(path))
        self._changed(WorkspaceChange("delete", path, source))

    def command(self, command: Any) -> dict[str, Any]:
        """Run a client's command (``{"op", "path", "content"}``) and return the answer's fields."""
        if not isinstance(command, dict):
            raise WorkspaceError("a command is a JSON object")
        op = command.get("op")
        if op == "list":
            prefix = command.get("path", "")
            if not isinstance(prefix, str):  # not str(prefix): 0, false and [] are no prefix, 5 is not "5"
                raise WorkspaceError("the 'path' of a list is a string prefix, or left out")
            return {"paths": self.list(prefix)}
        path = command.get("path")
        if not isinstance(path, str):
            raise WorkspaceError("a command needs a string 'path'")
        if op == "read":
            return {"content": self.read(path)}
        if op == "write":
            self.write(path, command.get("content"), source="client")  # type: ignore[arg-type]  # checked in write
            return {}
        if op == "delete":
            self.delete(path, source="client")
            return {}
        raise WorkspaceError(f"unknown op {_shown(op)} (read, write, delete, list)")

    def _changed(self, change: WorkspaceChange) -> None:
        for listener in list(self._listeners):
            listener(change)


MAX_PATH: Final = 1024


def _checked(path: str) -> str:
    if not isinstance(path, str) or not path or len(path) > MAX_PATH or "\x00" in path:
        raise WorkspaceError(f"bad path {_shown(path)}", kind="bad_path")
    return path


def _shown(value: object) -> str:
    """``repr(value)``, clipped: an error message quotes what a client sent, not all of it."""
    text = repr(value)
    return text if len(text) <= 100 else f"{text[:99]}…"


def _size(content: str | None) -> int:
    # surrogatepass: a lone surrogate ("\ud800" is valid JSON) counts, where plain UTF-8 would raise
    return 0 if content is None else len(content.encode("utf-8", "surrogatepass"))


def _workspace(ctx: ToolContext[Any]) -> Workspace:
    if not isinstance(ctx.deps, Workspace):
        raise WorkspaceError("no workspace: these tools work in runs of a served session", kind="no_workspace")
    return ctx.deps


@tool
async def read_file(ctx: ToolContext[Any], path: str) -> str:
    """Read a file of the workspace.

    Args:
        path: The file's path.
    """
    return _workspace(ctx).read(path)


@tool
async def write_file(ctx: ToolContext[Any], path: str, content: str) -> str:
    """Create or replace a file of the workspace.

    Args:
        path: The file's path.
        content: Its new content.
    """
    _workspace(ctx).write(path, content, source="agent")
    return f"wrote {len(content)} characters to {path}"


@tool
async def list_files(ctx: ToolContext[Any]) -> list[str]:
    """List the files of the workspace."""
    return _workspace(ctx).list()


WORKSPACE_TOOLS: Final[tuple[Tool, ...]] = (read_file, write_file, list_files)
"""Tools that let an agent use its served session's :class:`Workspace` (``ctx.deps``).

Async, because the workspace is not thread-safe (sync tools run in threads)."""
