"""The headless API: binds each method of :class:`workbench.endpoints.Endpoints` as a named endpoint
(``gr.api``) that gradio_client can call; :class:`workbench.api.WorkbenchError` becomes ``gr.Error``.
The preview PNG is served by the ``/preview`` event of its view."""

from __future__ import annotations

import gradio as gr

from ..api import Workbench
from ..endpoints import ENDPOINTS, READ_ONLY, Endpoints
from .common import as_gr_error

__all__ = ["register"]


def register(wb: Workbench) -> None:
    """Register every API endpoint on the Blocks being built (call inside ``with gr.Blocks()``)."""
    api = Endpoints(wb)
    for name in ENDPOINTS:
        gr.api(
            as_gr_error(getattr(api, name)),
            api_name=name,
            concurrency_limit=None if name in READ_ONLY else 1,
            concurrency_id=None if name in READ_ONLY else "actions",
        )
