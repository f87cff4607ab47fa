"""The whole page: header, five tabs, one refresh timer, the headless API."""

from __future__ import annotations

import gradio as gr

from .. import presets_page
from ..api import Workbench
from . import api_endpoints, gallery_view, plots_view, presets_view, preview_view, runs_view, time_view

__all__ = ["build_blocks", "CSS", "JS", "THEME_KW", "REFRESH_S"]

#: Seconds between refreshes of runs, plots and gallery.
REFRESH_S = 2.0

CSS = """
.field-error { border-left: 3px solid #d33 !important; padding-left: 4px; }
#preset-validation { min-height: 2.5em; }
/* the page scrolls (one scroll bar); validation and the TOML stay in view beside the form */
#preset-side { position: sticky; top: 0; align-self: flex-start; }
/* a field's problem reads as an error, not as help text */
.field-error .info-text { color: #c62828 !important; }
/* tables: headers break between words only; long cells (a reference's path) wrap instead of widening the page */
table th, table th * { word-break: normal !important; overflow-wrap: normal !important; hyphens: none; }
table td, table td * { overflow-wrap: anywhere; }
#wb-header p { margin: 0.2em 0; }
footer { display: none !important; }
/* sample grids: scale up small PNGs without smoothing, so every pixel stays visible */
.png-grid img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
/* the preview is enlarged without smoothing by the workbench already (preview_labels); smooth scaling keeps its labels legible */
#preview-image img { image-rendering: auto; width: 100%; height: 100%; object-fit: contain; }
/* phones: the preset picker takes the whole width with less padding, so the preset's name is not cut */
@media (max-width: 640px) {
  #preset-row { flex-direction: column; }
  #preset-row > * { min-width: 100% !important; }
  #preset-select { padding-left: 6px !important; padding-right: 6px !important; }
  #preset-select .wrap-inner { padding-left: 6px !important; padding-right: 4px !important; }
  #preset-select input { font-size: 12px; }
}
"""

#: Run once when the page opens: leaving or reloading the page while the preset being edited has
#: unsaved changes (the Presets tab's line says so) asks the browser's "leave page?" question.
JS = """
() => {
  window.rsdUnsavedEdits = () => {
    const line = document.querySelector('#preset-current');
    return Boolean(line && line.innerText.includes('unsaved changes'));
  };
  window.addEventListener('beforeunload', (event) => {
    if (window.rsdUnsavedEdits()) { event.preventDefault(); event.returnValue = ''; }
  });
  // the log tail follows its end, as `tail -f` does, until the reader scrolls up; scrolling back
  // to the end (or picking another run, `restart`) follows again
  window.rsdFollowLog = (restart) => {
    const box = document.querySelector('#run-log textarea');
    if (!box) return;
    if (!box.dataset.rsdWatched) {
      box.dataset.rsdWatched = '1';
      box.addEventListener('scroll', () => {
        if (box.clientHeight > 0) box.dataset.rsdFollow = box.scrollTop + box.clientHeight >= box.scrollHeight - 24 ? 'yes' : 'no';
      });
    }
    if (restart) box.dataset.rsdFollow = 'yes';
    if (box.dataset.rsdFollow !== 'no') requestAnimationFrame(() => { box.scrollTop = box.scrollHeight; });
  };
}
"""

#: Theme arguments: system fonts only, so the page makes no request to font servers.
THEME_KW = dict(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "DejaVu Sans Mono", "monospace"])


def build_blocks(wb: Workbench) -> gr.Blocks:
    """Build the Gradio Blocks of the workbench for ``wb`` (not launched)."""
    with gr.Blocks(title="RSD Workbench") as demo:
        gr.Markdown(
            "## RSD Workbench — learn a one-step generator of clean images from corrupted data only\n"
            "**1 Presets**: pick and edit an experiment · **2 Preview**: see the corruption on real images · "
            "**3 Runs**: launch, watch, stop · **4 Live plots**: losses and FID · **5 Gallery**: teacher vs generator from the same "
            "seeds.\n\n"
            f"Your presets: `{wb.store.user_dir}` · runs: `{wb.runs_dir}`. Runs keep going when this page is closed.",
            elem_id="wb-header",
        )
        with gr.Tabs(overflow_behavior="wrap"):  # every tab in view on a narrow screen, none behind "⋯"
            with gr.Tab("1 · Presets", id="presets"):
                pv = presets_view.build(wb)
            with gr.Tab("2 · Preview", id="preview"):
                prv = preview_view.build(wb)
            with gr.Tab("3 · Runs", id="runs") as runs_tab:
                v0 = wb.validate(pv.initial_text)
                rv = runs_view.build(wb, presets_page.launch_md(pv.initial_name, False, v0))
                tv = time_view.build()
            names = wb.run_names()
            first_run = names[0] if names else None
            with gr.Tab("4 · Live plots", id="plots"):
                plv = plots_view.build(wb, first_run)
            with gr.Tab("5 · Gallery", id="gallery"):
                gv = gallery_view.build(wb, first_run)

        presets_view.wire(wb, pv, launch_summary=rv.launch_summary, launch_msg=rv.launch_msg, launch_button=rv.launch_btn)
        preview_view.wire(wb, prv, pv.editor, pv.editor_state)
        runs_view.wire(wb, rv, pv.editor, pv.editor_state, follow=[plv.run, gv.run_a])
        plots_view.wire(wb, plv)
        runs_tab.select(None, None, None, js="() => window.rsdFollowLog(false)")  # a hidden box cannot scroll: follow when shown
        gallery_view.wire(wb, gv)

        timer = gr.Timer(REFRESH_S)
        for fn, inputs, outputs in (
            runs_view.refresh(wb, rv, follow=[plv.run, gv.run_a], others=[gv.run_b]),
            plots_view.refresh(wb, plv),
            gallery_view.refresh(wb, gv),
            time_view.refresh(wb, tv, rv.selected),
        ):
            timer.tick(fn, inputs, outputs, show_progress="hidden", api_visibility="private", concurrency_limit=None, queue=False)

        load_fn, load_outputs = runs_view.on_page_load(wb, rv, follow=[plv.run, gv.run_a], others=[gv.run_b])
        demo.load(load_fn, None, load_outputs, api_visibility="private", show_progress="hidden")
        demo.load(lambda: gr.Dropdown(choices=wb.preset_choices()), None, pv.dropdown, api_visibility="private", show_progress="hidden")
        restore_fn, restore_outputs = presets_view.on_page_load(wb, pv)
        demo.load(restore_fn, None, restore_outputs, api_visibility="private", show_progress="hidden")

        api_endpoints.register(wb)
    return demo
