"""Preview view: what the corruption does to real images, before any training.

Runs ``rsd_engine preview`` on the preset in the editor and shows the PNG grid (clean |
measurement | adjoint, from held-out images; for MRI k-space mask | coil 1 | zero-filled | clean) with
the data's size and resolution.
"""

from __future__ import annotations

import gradio as gr

from ..api import Workbench, WorkbenchError
from .common import View, err_md

__all__ = ["build", "wire"]


def build(wb: Workbench) -> View:
    """Create the Preview tab's components (call inside a ``gr.Tab``)."""
    v = View()
    gr.Markdown(
        "See what the corruption of the preset in the editor does to real (held-out) images before spending hours on training. "
        "Row 1: clean images · row 2: measurements y = A(x) + σε, what the teacher trains on · row 3: adjoint Aᵀy. "
        "MRI presets: k-space line mask · coil 1 image · zero-filled magnitude · clean magnitude (k-space simulated from real "
        "slices with synthetic coils)."
    )
    with gr.Row():
        v.n = gr.Slider(4, 64, value=16, step=1, label="Images per row", scale=2, elem_id="preview-n")
        v.button = gr.Button("Preview the corruption", variant="primary", scale=1, elem_id="preview-run")
    v.info = gr.Markdown(elem_id="preview-info")
    v.image = gr.Image(
        label="preview rows (PNG, pixel-exact)",
        type="filepath",
        format="png",
        interactive=False,
        buttons=["download", "fullscreen"],
        elem_id="preview-image",
        height=360,
    )
    return v


def wire(wb: Workbench, v: View, editor, editor_state) -> None:
    """Attach the Preview event; ``editor`` is the Presets tab's TOML editor, ``editor_state`` its
    :class:`workbench.presets_page.Editor` (for the preset's name)."""

    def preview(text: str, n: float, ed=None):
        """Run the engine's preview on the preset text; returns (labelled PNG path, Markdown description)."""
        try:
            png, info = wb.preview(text, int(n))
        except WorkbenchError as e:
            return None, err_md(e)
        head = f"Preview of **{ed.name}** as it is in the editor.\n\n" if ed is not None and ed.name else ""
        return str(png), head + info

    v.button.click(preview, [editor, v.n, editor_state], [v.image, v.info], api_name="preview", concurrency_limit=1)
