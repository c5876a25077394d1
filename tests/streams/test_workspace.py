"""The served session's workspace, on its own: its size bound."""

from __future__ import annotations

import pytest

from streams import Workspace, WorkspaceError


def test_the_size_bound_counts_paths_as_well_as_contents() -> None:
    """Paths count in the bound, in UTF-8 bytes: empty files with long paths fill the workspace,
    replacing a file counts only its content's change, and deleting one frees its path too."""
    workspace = Workspace(max_bytes=10)
    workspace.write("ab", "")
    workspace.write("é", "x")  # 2 + 1 bytes
    workspace.write("cd", "")
    with pytest.raises(WorkspaceError) as full:
        workspace.write("efg", "x")  # 7 bytes held, and 3 + 1 more
    assert full.value.kind == "workspace_full"
    workspace.write("ab", "xxx")  # the path is counted once: 7 + 3 = 10
    with pytest.raises(WorkspaceError):
        workspace.write("ab", "xxxx")
    workspace.delete("ab")  # frees 2 + 3
    workspace.write("efg", "xx")  # 5 + 3 + 2 = 10
    assert workspace.list() == ["cd", "efg", "é"]


def test_an_error_quotes_a_long_path_clipped() -> None:
    """Reading or deleting a missing file with a 1,000-character path: the message quotes it clipped (a
    client's text is quoted, not all of it), as a bad path's message does."""
    workspace = Workspace()
    path = "p" * 1000
    for op in (workspace.read, workspace.delete):
        with pytest.raises(WorkspaceError) as caught:
            op(path)
        assert caught.value.kind == "no_such_file"
        assert len(str(caught.value)) < 130
        assert str(caught.value).endswith("…")
