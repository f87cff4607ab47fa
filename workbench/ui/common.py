"""Helpers shared by the views: error reporting and small formatting."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..api import WorkbenchError
from ..preset_edit import err_md, ok_md

__all__ = ["View", "ok_md", "err_md", "as_gr_error", "confirm_row"]


class View(SimpleNamespace):
    """The components of one view, by attribute name."""


def confirm_row(v: View, yes_label: str, yes_id: str) -> None:
    """A hidden "are you sure?" row on ``v``: ``confirm_row`` (the row), ``confirm_md`` (the question),
    ``confirm_yes`` (a stop-styled button labelled ``yes_label``, element id ``yes_id``) and ``confirm_no``.
    Call inside the layout context where the row belongs."""
    with gr.Row(visible=False) as v.confirm_row:
        v.confirm_md = gr.Markdown()
        v.confirm_yes = gr.Button(yes_label, variant="stop", elem_id=yes_id)
        v.confirm_no = gr.Button("Cancel")


def as_gr_error(fn):
    """Decorator for API endpoints: :class:`WorkbenchError` becomes ``gr.Error`` (its message reaches
    the client as is)."""

    def inner(*args, **kwargs):
        """Call the wrapped function, translating its errors."""
        try:
            return fn(*args, **kwargs)
        except WorkbenchError as e:
            raise gr.Error(str(e), print_exception=False) from None

    inner.__name__, inner.__doc__, inner.__annotations__ = fn.__name__, fn.__doc__, getattr(fn, "__annotations__", {})
    inner.__wrapped__ = fn
    return inner
