"""Where the selected run's time went: the table of ``rsd-engine time-split`` under the Runs tab
(training, live and final evaluation per model, reference features, checkpoints, start-up; seconds
and share of the wall), complete once the run has finished, "so far" while it runs."""

from __future__ import annotations

import gradio as gr

from rsd_engine.io.runs import FINAL_STATES

from .. import run_reader
from ..api import Workbench, WorkbenchError
from .common import View

__all__ = ["build", "time_md", "refresh"]


def build() -> View:
    """Create the collapsed "Where the time went" section (call inside the Runs tab)."""
    v = View()
    with gr.Accordion("Where the time went (selected run)", open=False, elem_id="run-time-split-box"):
        v.md = gr.Markdown(elem_id="run-time-split")
    v.sig = gr.State(None)
    return v


def time_md(wb: Workbench, run: str | None) -> str:
    """The time split of ``run`` as Markdown, with a heading saying whether it is final; a line when the
    run has no timing events or does not exist."""
    if not run:
        return ""
    try:
        folder = wb.run_dir(run)
        state = wb.run_status(run).get("state")
    except WorkbenchError as e:
        return f"✗ {e}"
    table = run_reader.time_split_md(folder)
    if not table:
        return "No timing events in this run (made before the engine recorded them)."
    when = "finished run" if state in FINAL_STATES else "so far (the run is going on)"
    return f"**{run}** — {when}; the same table as `rsd-engine time-split {folder}`.\n\n{table}"


def _signature(wb: Workbench, run: str | None) -> str:
    """What the table depends on: the run, its state and the size and time of its events file (so the
    events are read again only when they changed)."""
    if not run:
        return ""
    try:
        folder = wb.run_dir(run)
        st = (folder / "events.jsonl").stat()
        return f"{run}|{wb.run_status(run).get('state')}|{st.st_size}|{st.st_mtime_ns}"
    except (WorkbenchError, OSError):
        return f"{run}|-"


def refresh(wb: Workbench, v: View, selected) -> tuple:
    """The timer's refresh: the table of the run chosen in ``selected`` (a dropdown), sent only when it
    changed. Returns ``(fn, inputs, outputs)`` for ``timer.tick``."""

    def tick(run, sig):
        key = _signature(wb, run)
        if key == sig:
            return {v.sig: sig}
        return {v.md: time_md(wb, run), v.sig: key}

    return tick, [selected, v.sig], [v.md, v.sig]
