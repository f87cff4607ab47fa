"""Live plots view: losses, live FID (labelled with its n) and throughput against images seen,
read from the run's events.jsonl on a timer."""

from __future__ import annotations

import gradio as gr

from .. import run_reader
from ..api import Workbench, WorkbenchError
from .common import View

__all__ = ["build", "wire", "refresh"]

_PLOTS = {
    "teacher_loss": ("Teacher loss (phase I)", "loss"),
    "distill_loss": ("Distillation losses (phase II): fake score and generator", "loss"),
    "fid": ("Live FID — small n, compare runs with each other, not with 50k figures", "FID"),
    "throughput": ("Throughput", "images / s"),
}


def build(wb: Workbench, run: str | None) -> View:
    """Create the Live plots tab's components (call inside a ``gr.Tab``)."""
    v = View()
    names = wb.run_names()
    with gr.Row():
        v.run = gr.Dropdown(choices=names, value=run, label="Run", scale=2, elem_id="plots-run", allow_custom_value=True)
        gr.Markdown("x axis: images seen in the stage, in thousands (kimg). Each live FID point is measured on the n samples "
                    "named in its legend, against the held-out clean reference. Refreshed every 2 s.")
    frames = _frames(wb, run)
    v.latest = gr.Markdown(_latest(wb, run), elem_id="plots-latest")
    v.plots = {}
    keys = list(_PLOTS)
    for i in range(0, len(keys), 2):
        with gr.Row():
            for key in keys[i : i + 2]:
                title, y_title = _PLOTS[key]
                v.plots[key] = gr.LinePlot(frames[key], x="kimg", y="value", color="series", title=title, x_title="images seen (kimg)",
                                           y_title=y_title, height=260, elem_id=f"plot-{key.replace('_', '-')}")
    v.sig = gr.State({})
    return v


def _events(wb: Workbench, run: str | None) -> list[dict]:
    if not run:
        return []
    try:
        return wb.run_events(run)
    except WorkbenchError:
        return []


def _frames(wb: Workbench, run: str | None) -> dict:
    return run_reader.plot_frames(_events(wb, run))


def _latest(wb: Workbench, run: str | None) -> str:
    return run_reader.latest_values(_events(wb, run)) if run else "Pick a run."


def wire(wb: Workbench, v: View) -> None:
    """Attach the run selector of the Live plots tab."""

    def show(run):
        """Show the chosen run."""
        frames = _frames(wb, run)
        return [frames[k] for k in _PLOTS] + [_latest(wb, run)]

    v.run.change(show, [v.run], [*(v.plots[k] for k in _PLOTS), v.latest], api_visibility="private", show_progress="hidden")


def refresh(wb: Workbench, v: View):
    """Timer refresh: re-plot only when events.jsonl grew. Returns ``(fn, inputs, outputs)``."""

    def tick(run, sig):
        """One timer refresh; sends only what changed."""
        sig = dict(sig or {})
        key = None
        if run:
            try:
                st = (wb.run_dir(run) / "events.jsonl").stat()
                key = f"{run}:{st.st_size}:{st.st_mtime_ns}"
            except (WorkbenchError, OSError):
                key = f"{run}:none"
        if key == sig.get("key"):
            return {v.sig: sig}
        sig["key"] = key
        events = _events(wb, run)
        frames = run_reader.plot_frames(events)
        out = {v.plots[k]: frames[k] for k in _PLOTS}
        out[v.latest] = run_reader.latest_values(events) if run else "Pick a run."
        out[v.sig] = sig
        return out

    return tick, [v.run, v.sig], [*v.plots.values(), v.latest, v.sig]
