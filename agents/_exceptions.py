"""Exceptions raised by :mod:`agents`.

The tree::

    AgentsError
    ├── AgentDefinitionError      an Agent or a tool is defined wrongly
    ├── ToolArgumentsError        a model gave a tool arguments that fail validation
    ├── ModelError                a model could not produce a response
    │   └── ScriptExhaustedError  a ScriptedModel has no turns left
    └── ElicitationError          asking the human did not work
        ├── ElicitationUnavailable  no consumer can receive the question
        └── ElicitationTimeout      nobody answered in time
"""

from __future__ import annotations

from typing import Any


class AgentsError(Exception):
    """Root of every exception :mod:`agents` raises."""


class AgentDefinitionError(AgentsError):
    """An :class:`~agents.Agent` or a tool is defined in a way that cannot work."""


class ToolArgumentsError(AgentsError):
    """The arguments a model gave a tool do not match the tool's schema.

    Attributes:
        tool_name: The tool that was called.
        errors: The validation errors, as pydantic reports them.
    """

    def __init__(self, tool_name: str, message: str, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.tool_name = tool_name
        self.errors = errors or []


class ModelError(AgentsError):
    """A model could not produce a response."""


class ScriptExhaustedError(ModelError):
    """A :class:`~agents.ScriptedModel` was asked for more turns than its script has."""


class ElicitationError(AgentsError):
    """A tool's question to the human (``ToolContext.elicit``) could not be answered."""


class ElicitationUnavailable(ElicitationError):
    """No consumer can receive the question: the run's stream is gone, or nobody streams it (``ask``)."""


class ElicitationTimeout(ElicitationError):
    """The question was not answered within its timeout."""
