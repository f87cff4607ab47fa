"""Live plots view: one run, or several compared, on a global axis (images seen since the start of
each run, teacher then distillation, or wall-clock minutes): live FID with each run's teacher
baseline, losses (log scale and smoothing on request), throughput; a comparison table and the
differences between two runs' presets. Read from the run folders on a timer.

:func:`page` computes everything shown from plain values (no Gradio), so it is tested directly;
:func:`wire` and :func:`refresh` only bind it to the components.
"""

from __future__ import annotations

import gradio as gr

from rsd_engine.io.runs import RunDir

from .. import run_reader
from ..api import Workbench, WorkbenchError
from .common import View

__all__ = ["build", "wire", "refresh", "page", "compare_choices", "X_AXES"]

#: Choices of the x axis → the key of :func:`workbench.run_reader.run_points`.
X_AXES = {"images seen (kimg)": "kimg", "wall-clock minutes": "minutes"}


def build(wb: Workbench, run: str | None) -> View:
    """Create the Live plots tab's components (call inside a ``gr.Tab``)."""
    v = View()
    with gr.Row(equal_height=True):
        v.run = gr.Dropdown(choices=wb.run_names(), value=run, label="Run", scale=2, elem_id="plots-run", allow_custom_value=True)
        v.compare = gr.Dropdown(
            choices=compare_choices(wb, run),
            value=[],
            multiselect=True,
            label="Compare with",
            scale=3,
            elem_id="plots-compare",
            info="other runs drawn in the same plots; a study folder (name ending in /) adds all its runs",
        )
    with gr.Row(equal_height=True):
        v.x_axis = gr.Radio(
            list(X_AXES),
            value=next(iter(X_AXES)),
            label="x axis",
            elem_id="plots-x",
            scale=2,
            info="images seen since the start of each run (the teacher's, then the distillation's) or wall-clock minutes; "
            "a dotted line marks where distillation starts",
        )
        v.log_y = gr.Checkbox(False, label="log scale (losses)", elem_id="plots-log", scale=1)
        v.smoothing = gr.Slider(0, 0.95, value=0.0, step=0.05, label="smoothing (losses, EMA weight)", elem_id="plots-smoothing", scale=2)
    shown = page(wb, run, [], next(iter(X_AXES)), False, 0.0)
    v.latest = gr.Markdown(shown["latest"], elem_id="plots-latest")
    v.plots = {}
    with gr.Row():
        for key in ("fid", "loss"):
            v.plots[key] = gr.Plot(shown[key], elem_id=f"plot-{key}", show_label=False)
    with gr.Row():
        v.plots["throughput"] = gr.Plot(shown["throughput"], elem_id="plot-throughput", show_label=False)
    # full width: one column per run shown
    v.diff = _table(
        shown["diff"], "Preset differences: the keys whose values differ between the runs shown, one column per run", "plots-diff"
    )
    v.table = _table(
        shown["table"],
        "Runs shown: final FIDs (truncated teacher vs generator, with n), ratio = generator / teacher (below 1: generator better)",
        "plots-table",
    )
    v.sig = gr.State({})
    return v


def _table(value, label: str, elem_id: str) -> gr.Dataframe:
    """A read-only table whose long cells wrap."""
    return gr.Dataframe(value, label=label, interactive=False, wrap=True, elem_id=elem_id)


def _events(wb: Workbench, run: str) -> list[dict]:
    try:
        return wb.run_events(run)
    except WorkbenchError:
        return []


def _state(wb: Workbench, run: str) -> str:
    """The run's state as its status file says ("unknown" without one)."""
    try:
        return str(RunDir(wb.run_dir(run)).read_status().get("state") or "unknown")
    except WorkbenchError:
        return "unknown"


def _preset_text(wb: Workbench, run: str) -> str:
    try:
        return (wb.run_dir(run) / "preset.toml").read_text(encoding="utf-8")
    except (WorkbenchError, OSError):
        return ""


def compare_choices(wb: Workbench, run: str | None) -> list[str]:
    """The "Compare with" choices when ``run`` is the selected run: every run and study entry
    (:meth:`Workbench.compare_choices`) except ``run`` itself."""
    return [c for c in wb.compare_choices() if c != run]


def page(wb: Workbench, run: str | None, compare: list[str] | None, x_axis: str, log_y: bool, smoothing: float) -> dict:
    """Everything the tab shows for these choices.

    ``compare`` may name study folders (``"<study>/"``): each stands for all of the study's runs
    (:meth:`Workbench.expand_runs`); the selected run is drawn once even when also compared.

    Returns:
        ``{"fid", "loss", "throughput"}`` Plotly figures, ``"latest"`` (Markdown, the selected
        run's latest values), ``"table"`` (:func:`workbench.run_reader.compare_frame`) and
        ``"diff"`` (:func:`workbench.run_reader.preset_differences` of every run shown, one column
        each; empty with fewer than two runs).
    """
    shown = wb.expand_runs([r for r in [run, *(compare or [])] if r])
    events = {r: _events(wb, r) for r in shown}
    x = X_AXES.get(x_axis, "kimg")
    out = {
        key: run_reader.compare_figure(
            events, key, x=x, log_y=bool(log_y) and key == "loss", smoothing=float(smoothing or 0) if key == "loss" else 0.0
        )
        for key in run_reader.COMPARE_PLOTS
    }
    out["latest"] = run_reader.latest_values(events[run]) if run in events else "Pick a run."
    if run in events and not events[run]:
        state = _state(wb, run)
        if state not in ("running", "starting"):
            out["latest"] = f"**{run}** {state} before logging any events: its log is in the Runs tab."
    folders = {}
    for r in shown:
        try:
            folders[r] = wb.run_dir(r)
        except WorkbenchError:
            pass
    out["table"] = run_reader.compare_frame(folders)
    out["diff"] = run_reader.preset_differences({r: _preset_text(wb, r) for r in folders} if len(folders) > 1 else {})
    return out


def _inputs(v: View) -> list:
    return [v.run, v.compare, v.x_axis, v.log_y, v.smoothing]


def _outputs(v: View) -> list:
    return [*v.plots.values(), v.latest, v.table, v.diff]


def _as_list(shown: dict, v: View) -> list:
    return [*(shown[k] for k in v.plots), shown["latest"], shown["table"], shown["diff"]]


def wire(wb: Workbench, v: View) -> None:
    """Bind the tab's choices to :func:`page`; a newly selected run leaves the "Compare with" choices."""

    def show(*choices):
        """Re-draw for the current choices."""
        return _as_list(page(wb, *choices), v)

    for control in _inputs(v):
        control.change(show, _inputs(v), _outputs(v), api_visibility="private", show_progress="hidden")

    def exclude(run, compare):
        """The compare choices without the selected run."""
        return gr.Dropdown(choices=compare_choices(wb, run), value=[c for c in compare or [] if c != run])

    v.run.change(exclude, [v.run, v.compare], v.compare, api_visibility="private", show_progress="hidden")


def refresh(wb: Workbench, v: View):
    """Timer refresh: re-draw only when an events.jsonl shown grew; new runs and studies become
    choices. Returns ``(fn, inputs, outputs)``."""

    def tick(run, compare, x_axis, log_y, smoothing, sig):
        """One timer refresh; sends only what changed."""
        sig = dict(sig or {})
        key = []
        for r in wb.expand_runs([r for r in [run, *(compare or [])] if r]):
            try:
                st = (wb.run_dir(r) / "events.jsonl").stat()
                key.append(f"{r}:{st.st_size}:{st.st_mtime_ns}")
            except (WorkbenchError, OSError):
                key.append(f"{r}:none")
        key = "|".join(key) + f"|{x_axis}|{log_y}|{smoothing}"
        names = compare_choices(wb, run)
        # new runs become choices; the selection is the viewer's (it may change while this tick runs)
        choices = gr.Dropdown(choices=names) if names != sig.get("names") else gr.skip()
        sig["names"] = names
        if key == sig.get("key"):
            return [gr.skip()] * len(_outputs(v)) + [choices, sig]
        sig["key"] = key
        return _as_list(page(wb, run, compare, x_axis, log_y, smoothing), v) + [choices, sig]

    return tick, [*_inputs(v), v.sig], [*_outputs(v), v.compare, v.sig]
