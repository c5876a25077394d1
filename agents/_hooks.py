"""Hooks: user code called at fixed points of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ._context import RunContext, ToolContext
    from ._messages import FinishReason


@attrs.frozen
class StopRun:
    """Returned by :meth:`Hooks.on_user_prompt` to end the run before the model is called."""

    message: str
    """Why; the consumer sees it on the ``RunFinished("hook_stop")`` event."""


class Hooks:
    """Subclass and override the methods you need; each does nothing by default.

    Example::

        class NoSecrets(Hooks):
            async def on_user_prompt(self, ctx, prompt):
                if "password" in prompt:
                    return StopRun("I can't help with passwords.")
                return None
    """

    async def on_user_prompt(self, ctx: RunContext[Any], prompt: str) -> StopRun | None:
        """Called with the user's input before anything else; return :class:`StopRun` to stop.

        ``prompt`` is the input's text: for an input of parts (``session.run(["Look:", image])``),
        its text parts joined by newlines; the images and documents are not in it.
        """
        return None

    async def before_tool(self, ctx: ToolContext[Any], arguments: dict[str, Any]) -> None:
        """Called before a tool runs, with its validated arguments.

        Raise to refuse the call: the exception's message becomes the tool's
        error result, which the model sees.
        """

    async def after_tool(self, ctx: ToolContext[Any], result: Any, error: str | None) -> None:
        """Called after a tool call ends, with its result or its error.

        A call cut short by a cancel (the run's, or its consumer leaving) once
        its ``before_tool`` hooks have run is ended too, with
        ``error="the tool call was cancelled"``: shielded, for at most a
        second, so that pair stays balanced. (A call refused before them, by
        its arguments or its approval, gets ``after_tool`` with that error.)
        """

    async def on_run_end(self, ctx: RunContext[Any], reason: FinishReason) -> None:
        """Called once when the run ends, with the ``RunFinished`` reason.

        It runs even when the run is cancelled (shielded, for at most a second).
        A run that has ended gives it as long as it takes, but a cancel that comes
        meanwhile (the consumer leaving before ``RunFinished``, the session closed)
        leaves it at most a second more.
        """
