"""The per-token classes (model chunks, run events) keep attrs' frozen-class behaviour with their quicker init."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import attrs
import pytest

from agents import ReasoningChunk, TextChunk
from runtime.events import ReasoningDelta, TextDelta


@pytest.mark.parametrize("cls", [TextChunk, ReasoningChunk, TextDelta, ReasoningDelta])
def test_text_classes_behave_as_frozen_attrs_classes(cls: Any) -> None:
    """Built by position or keyword, equal and hashed by value, immutable, evolvable, copyable and picklable."""
    piece = cls("a")
    assert piece == cls(text="a") != cls("b")
    assert hash(piece) == hash(cls("a"))
    assert repr(piece) == f"{cls.__name__}(text='a')"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        piece.text = "b"
    assert attrs.evolve(piece, text="b") == cls("b")
    assert copy.copy(piece) == pickle.loads(pickle.dumps(piece)) == piece
    with pytest.raises(TypeError):
        cls()
    assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
