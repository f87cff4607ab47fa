"""Gallery view: measurements | teacher-truncated | teacher-full | generator side by side from
fixed seeds, at the latest grids or a chosen snapshot, as the engine's own PNG files; the metrics
table (each number with its n); a second run for comparison; the snapshots over training; the
export of run A's generator (or teacher) as a diffusers pipeline folder.

Refreshes keep the viewer's place: a grid is re-sent only when its file changed,
dropdown choices are replaced without touching the selected values, and the snapshot gallery keeps
the selected image by file name, not by position.
"""

from __future__ import annotations

import gradio as gr

from rsd_engine.io.runs import RunDir

from .. import run_reader
from ..api import Workbench, WorkbenchError
from .common import View, err_md, ok_md

__all__ = ["build", "wire", "refresh"]

MODELS = run_reader.GALLERY_MODELS
LATEST = "latest"


def _grid_images(side: str) -> list:
    """One image box per model of :data:`MODELS` for run ``side`` ("a" or "b"), showing the PNG files unchanged."""
    return [
        gr.Image(
            label=run_reader.MODEL_LABELS[m],
            type="filepath",
            format="png",
            interactive=False,
            height=300,
            buttons=["download", "fullscreen"],
            elem_id=f"gallery-{side}-{m}",
            elem_classes=["png-grid"],
        )
        for m in MODELS
    ]


def build(wb: Workbench, run: str | None) -> View:
    """Create the Gallery tab's components (call inside a ``gr.Tab``)."""
    v = View()
    names = wb.run_names()
    gr.Markdown(
        "Every grid uses the same fixed seeds, so tile *i* of the teacher and of the generator start from the same noise. "
        "Images are the engine's PNG files, shown unchanged (no re-encoding)."
    )
    with gr.Row(equal_height=True):
        v.run_a = gr.Dropdown(choices=names, value=run, label="Run", scale=3, elem_id="gallery-run", allow_custom_value=True)
        v.snap_a = gr.Dropdown(
            choices=_snap_choices(wb, run),
            value=LATEST,
            label="Grids at",
            scale=1,
            elem_id="gallery-snapshot",
            info="latest, or a snapshot written during training (kimg of its stage)",
            allow_custom_value=True,
        )
        v.run_b = gr.Dropdown(
            choices=names, value=None, label="Compare with run (optional)", scale=3, elem_id="gallery-run-b", allow_custom_value=True
        )
        v.snap_b = gr.Dropdown(
            choices=[(LATEST, LATEST)], value=LATEST, label="Grids at", scale=1, elem_id="gallery-snapshot-b", allow_custom_value=True
        )
        v.show_btn = gr.Button("Show", scale=1, elem_id="gallery-show", min_width=80)
    gr.Markdown(" · ".join(f"**{run_reader.MODEL_LABELS[m]}**: {run_reader.MODEL_NOTES[m]}" for m in MODELS), elem_id="gallery-legend")
    v.title_a = gr.Markdown(elem_id="gallery-title-a")
    with gr.Row(equal_height=True):
        v.images_a = _grid_images("a")
    with gr.Column(visible=False) as v.col_b:
        v.title_b = gr.Markdown(elem_id="gallery-title-b")
        with gr.Row(equal_height=True):
            v.images_b = _grid_images("b")
    v.metrics = gr.Dataframe(
        run_reader.metrics_frame([]),
        label="Metrics (final evaluation; each value with its n and seeds)",
        interactive=False,
        elem_id="gallery-metrics",
        wrap=True,
    )
    with gr.Row(equal_height=True):
        for attr, choices, label, elem_id in (
            (
                "export_model",
                [("one-step generator", "generator"), ("teacher (Heun sampler)", "teacher")],
                "Export run above as a diffusers pipeline",
                "gallery-export-model",
            ),
            (
                "export_weights",
                [("EMA (the evaluated weights)", "ema"), ("raw (last training step)", "raw")],
                "Weights",
                "gallery-export-weights",
            ),
        ):
            setattr(v, attr, gr.Dropdown(choices=choices, value=choices[0][1], label=label, scale=2, elem_id=elem_id))
        v.export_replace = gr.Checkbox(value=False, label="replace an earlier export", scale=1, elem_id="gallery-export-replace")
        v.export_btn = gr.Button("Export", scale=1, min_width=80, elem_id="gallery-export")
    v.export_msg = gr.Markdown(elem_id="gallery-export-msg")
    with gr.Accordion("Snapshots during training (run above)", open=False):
        v.progress = gr.Gallery(
            label="click one to enlarge; new snapshots appear without moving your selection",
            format="png",
            columns=6,
            height=320,
            object_fit="contain",
            elem_id="gallery-progress",
            interactive=False,
        )
    with gr.Accordion("Clean held-out images (reference for FID only — never used for training)", open=False):
        v.clean = gr.Image(
            type="filepath",
            format="png",
            interactive=False,
            show_label=False,
            height=260,
            elem_id="gallery-clean",
            elem_classes=["png-grid"],
            buttons=["download", "fullscreen"],
        )
    v.sig = gr.State({})
    v.progress_sel = gr.State(None)
    return v


def _snap_choices(wb: Workbench, run: str | None) -> list[tuple[str, str]]:
    out = [(LATEST, LATEST)]
    if run:
        try:
            out += [(f"{run_reader.kimg_text(k)} kimg", run_reader.kimg_text(k)) for k in wb.snapshots(run)]
        except WorkbenchError:
            pass
    return out


def _snapshot(value: str | None) -> float | None:
    if not value or value == LATEST:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _grids(wb: Workbench, run: str | None, snap: str | None) -> tuple[list, list[str], str]:
    """(paths per model or None, labels per model, title) for one run."""
    if not run:
        return [None] * len(MODELS), [run_reader.MODEL_LABELS[m] for m in MODELS], ""
    try:
        paths = wb.gallery(run, _snapshot(snap))
        status = wb.run_status(run)
    except WorkbenchError as e:
        return [None] * len(MODELS), [run_reader.MODEL_LABELS[m] for m in MODELS], f"✗ {e}"
    when = "latest grids" if _snapshot(snap) is None else f"snapshot at {snap} kimg"
    missing = " — not written yet" if status.get("state") in ("running", "starting") else f" — not written (the run {status.get('state')})"
    labels = []
    for m in MODELS:
        label = run_reader.MODEL_LABELS[m]
        if paths[m] is None:
            label += missing if _snapshot(snap) is None or m == "measurements" else f" — no grid at {snap} kimg"
        labels.append(label)
    title = f"**{run}** — {when} · state {status.get('state', '?')}"
    return [str(p) if p else None for p in paths.values()], labels, title


def _progress_items(wb: Workbench, run: str | None) -> list[tuple[str, str]]:
    if not run:
        return []
    try:
        snapshots = RunDir(wb.run_dir(run)).snapshots()
    except WorkbenchError:
        return []
    order = {m: i for i, m in enumerate(MODELS)}
    items = sorted((order.get(model, 99), model, kimg, path) for model, kimg, path in snapshots)
    return [(str(p), f"{model} · {run_reader.kimg_text(kimg)} kimg") for _, model, kimg, p in items]


def _metrics(wb: Workbench, runs: list[str | None]):
    rows = []
    for r in runs:
        if r:
            try:
                rows += run_reader.metrics_rows(r, wb.run_metrics(r))
            except WorkbenchError:
                pass
    return run_reader.metrics_frame(rows)


def _file_sig(path: str | None) -> str:
    if not path:
        return "-"
    try:
        from pathlib import Path

        st = Path(path).stat()
        return f"{path}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return f"{path}:gone"


def _render(wb: Workbench, v: View, run_a, snap_a, run_b, snap_b, sig: dict, sel_name, force: bool) -> dict:
    out: dict = {}
    sig = dict(sig or {})
    for tag, run, snap, images, title in (("a", run_a, snap_a, v.images_a, v.title_a), ("b", run_b, snap_b, v.images_b, v.title_b)):
        paths, labels, head = _grids(wb, run, snap)
        for i, (comp, path, label) in enumerate(zip(images, paths, labels)):
            key = f"{_file_sig(path)}|{label}"
            if force or sig.get(f"{tag}{i}") != key:
                out[comp] = gr.Image(value=path, label=label)
                sig[f"{tag}{i}"] = key
        if force or sig.get(f"title-{tag}") != head:
            out[title] = head
            sig[f"title-{tag}"] = head
    choices_a, choices_b = _snap_choices(wb, run_a), _snap_choices(wb, run_b)
    if force or sig.get("snaps-a") != choices_a:
        keep = snap_a if snap_a in [c[1] for c in choices_a] else LATEST
        out[v.snap_a] = gr.Dropdown(choices=choices_a, value=keep)
        sig["snaps-a"] = choices_a
    if force or sig.get("snaps-b") != choices_b:
        keep = snap_b if snap_b in [c[1] for c in choices_b] else LATEST
        out[v.snap_b] = gr.Dropdown(choices=choices_b, value=keep)
        sig["snaps-b"] = choices_b
    if force or sig.get("show-b") != bool(run_b):
        out[v.col_b] = gr.Column(visible=bool(run_b))
        sig["show-b"] = bool(run_b)
    metric_key = "|".join(_file_sig(str(wb.runs_dir / r / "metrics.json")) if r else "-" for r in (run_a, run_b))
    if force or sig.get("metrics") != metric_key:
        out[v.metrics] = _metrics(wb, [run_a, run_b])
        sig["metrics"] = metric_key
    items = _progress_items(wb, run_a)
    prog_key = "|".join(_file_sig(p) for p, _ in items) + f"#{run_a}"
    if force or sig.get("progress") != prog_key:
        from pathlib import Path

        names = [Path(p).name for p, _ in items]
        sel = Path(sel_name).name if sel_name else None
        index = names.index(sel) if sel in names else None
        out[v.progress] = gr.Gallery(value=items, selected_index=index)
        sig["progress"] = prog_key
    clean = None
    if run_a:
        try:
            clean = wb.gallery(run_a, None, ("clean",))["clean"]
        except WorkbenchError:
            clean = None
    clean_key = _file_sig(str(clean) if clean else None)
    if force or sig.get("clean") != clean_key:
        out[v.clean] = str(clean) if clean else None
        sig["clean"] = clean_key
    out[v.sig] = sig
    return out


def _outputs(v: View) -> list:
    return [*v.images_a, *v.images_b, v.metrics, v.title_a, v.title_b, v.snap_a, v.snap_b, v.col_b, v.progress, v.clean, v.sig]


def wire(wb: Workbench, v: View) -> None:
    """Attach the Gallery tab's events (the API's ``/gallery`` is :mod:`workbench.ui.api_endpoints`'s)."""

    def show(run_a: str, snapshot_a: str, run_b: str, snapshot_b: str, sig: dict, sel_name: str | None):
        """Grids of run A (and B) at ``latest`` or a snapshot kimg, plus the metrics table."""
        return _render(wb, v, run_a or None, snapshot_a, run_b or None, snapshot_b, sig, sel_name, force=True)

    inputs = [v.run_a, v.snap_a, v.run_b, v.snap_b, v.sig, v.progress_sel]
    v.show_btn.click(show, inputs, _outputs(v), api_visibility="private")
    for comp in (v.run_a, v.snap_a, v.run_b, v.snap_b):
        comp.input(show, inputs, _outputs(v), api_visibility="private", show_progress="hidden")

    def remember(evt: gr.SelectData):
        """Remember which snapshot the viewer selected (by file name)."""
        value = evt.value
        if isinstance(value, dict):
            image = value.get("image") or {}
            return image.get("orig_name") or image.get("path")
        return None

    v.progress.select(remember, None, v.progress_sel, api_visibility="private")

    def export(run: str, model: str, weights: str, replace: bool) -> str:
        """Export run A's model into its run folder (``rsd-engine export``) and say where it went."""
        if not run:
            return err_md("select a run first")
        try:
            info = wb.export(run, model, weights, bool(replace))
        except WorkbenchError as e:
            return err_md(e)
        pipeline = "RSDOneStepPipeline" if model == "generator" else "RSDHeunPipeline"
        return ok_md(
            f"exported the {model} ({weights} weights) of {run} to `{info['folder']}`; load it with "
            f"`rsd_engine.pipelines.{pipeline}.from_pretrained(...)` (its README.md is the model card)"
        )

    v.export_btn.click(
        export,
        [v.run_a, v.export_model, v.export_weights, v.export_replace],
        v.export_msg,
        api_name="ui_export",
        api_visibility="undocumented",
        concurrency_limit=1,
        concurrency_id="actions",
    )


def refresh(wb: Workbench, v: View):
    """Timer refresh: only changed grids, choices and tables are re-sent. Returns ``(fn, inputs, outputs)``."""

    def tick(run_a, snap_a, run_b, snap_b, sig, sel_name):
        """One timer refresh; sends only what changed."""
        return _render(wb, v, run_a or None, snap_a, run_b or None, snap_b, sig, sel_name, force=False)

    return tick, [v.run_a, v.snap_a, v.run_b, v.snap_b, v.sig, v.progress_sel], _outputs(v)
