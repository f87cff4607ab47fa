"""Runs view: launch the edited preset, the table of runs, stop / resume / delete, the log tail.

Everything shown is read from the run folders on a timer, so closing the tab, reloading, or a
second viewer shows the same runs (runs live in their own process groups, not in a page event).
"""

from __future__ import annotations

import html

import gradio as gr

from rsd_engine.runs import FINAL_STATES

from .. import run_reader
from ..api import Workbench, WorkbenchError
from ..launcher import describe_exit
from ..preset_edit import md_text
from .common import View, confirm_row, err_md, ok_md

__all__ = ["build", "wire", "detail_md"]


def build(wb: Workbench, launch_text: str) -> View:
    """Create the Runs tab's components (call inside a ``gr.Tab``)."""
    v = View()
    with gr.Group():
        v.launch_summary = gr.Markdown(launch_text, elem_id="launch-summary")
        with gr.Row(equal_height=True):
            v.run_name = gr.Textbox(label="Run name (optional)", placeholder="empty = <run.name>-<date>-<time>", scale=3, max_lines=1,
                                    elem_id="launch-run-name")
            v.launch_btn = gr.Button("▶ Launch run", variant="primary", scale=1, elem_id="launch-button")
    v.launch_msg = gr.Markdown(elem_id="launch-msg")
    rows = wb.run_rows()
    names = [r["run"] for r in rows]
    v.table = gr.Dataframe(run_reader.runs_frame(rows), label="Runs (click a row to select it; refreshed every 2 s)", interactive=False,
                           elem_id="runs-table", max_height=320, wrap=True)
    with gr.Row(equal_height=True):
        v.selected = gr.Dropdown(choices=names, value=names[0] if names else None, label="Selected run", scale=3, elem_id="run-select", allow_custom_value=True)
        can_stop, can_resume = buttons_for(wb, names[0] if names else None)
        v.stop_btn = gr.Button("■ Stop", variant="stop", elem_id="run-stop", min_width=80, interactive=can_stop)
        v.resume_btn = gr.Button("↻ Resume", elem_id="run-resume", min_width=80, interactive=can_resume)
        v.delete_btn = gr.Button("Delete…", elem_id="run-delete", min_width=80)
    confirm_row(v, "Yes, delete the run folder", "run-delete-yes")
    v.action_msg = gr.Markdown(elem_id="run-action-msg")
    v.detail = gr.Markdown(detail_md(wb, names[0]) if names else "No runs yet: load a preset, then ▶ Launch run.", elem_id="run-detail")
    v.log = gr.Textbox(label="Log tail (log.txt; console output when the engine crashed)", lines=14, max_lines=14, autoscroll=False,
                       interactive=False, elem_id="run-log", value=wb.log_tail(names[0]) if names else "")
    v.sig = gr.State({})
    v.stopping = gr.State(None)  # the run whose "is stopping" message the refresh replaces once it has ended
    return v


def detail_md(wb: Workbench, run: str | None) -> str:
    """One paragraph about the selected run: state, stage, progress (at most 100 %), images seen in a
    training stage, ETA (when known), error with the exit code, folder."""
    if not run:
        return ""
    try:
        st = wb.run_status(run)
        folder = wb.run_dir(run)
    except WorkbenchError as e:
        return err_md(e)
    state = st.get("state", "unknown")
    icon = {"running": "▶", "done": "✓", "failed": "✗", "stopped": "■", "starting": "…"}.get(state, "•")
    parts = [f"{icon} **{html.escape(run)}** — **{state}**"]
    if st.get("stage"):
        parts.append(f"stage **{st['stage']}**")
    if run_reader.progress_text(st.get("progress")):
        parts.append(f"{run_reader.progress_text(st['progress'])} of the stage")
    seen = run_reader.stage_kimg(st)
    if seen is not None:
        total = "" if seen[1] is None else f" / {seen[1]:.3g}"
        parts.append(f"{seen[0]:.3g}{total} kimg seen in this stage")
    eta = run_reader.fmt_duration(st.get("eta_s")) if state == "running" else ""
    if eta:
        parts.append(f"ETA {eta}")
    beat = st.get("generator_beats_teacher")
    if isinstance(beat, dict):
        parts.append(f"generator's live FID first below the {beat.get('teacher_model')}'s (n={beat.get('n')}) "
                     f"{run_reader.crossing_text(beat)} of distillation")
    text = " · ".join(parts)
    ended = describe_exit(st.get("exit_code")) if state == "failed" else ""
    if st.get("error") or ended:
        text += "\n\n⚠ " + " — ".join(filter(None, [md_text(st.get("error") or ""), ended and f"the engine process ended with {ended}"]))
    text += f"\n\nFolder: `{folder}`"
    return text


def buttons_for(wb: Workbench, run: str | None) -> tuple[bool, bool]:
    """(Stop enabled, Resume enabled) for the selected run: Stop while any of its processes runs,
    Resume when it is stopped or failed and holds a checkpoint to continue from."""
    if not run:
        return False, False
    try:
        st = wb.run_status(run)
    except WorkbenchError:
        return False, False
    return bool(st.get("alive")), (not st.get("alive")) and st.get("state") in ("stopped", "failed") and bool(st.get("has_checkpoint"))


def ended_md(wb: Workbench, run: str) -> str:
    """The action message once a stopped run's processes have ended: its final state and whether
    Resume has a checkpoint to continue from."""
    try:
        st = wb.run_status(run)
    except WorkbenchError as e:
        return err_md(e)
    if st.get("state") != "stopped":
        return ok_md(f"{run} has ended: {st.get('state')}.")
    kept = "its latest checkpoint is kept; ↻ Resume continues from it" if st.get("has_checkpoint") else "no checkpoint had been written yet"
    return ok_md(f"{run} stopped; {kept}.")


def preferred_run(wb: Workbench) -> str | None:
    """The run a new viewer sees first: the newest running run, else the newest run."""
    rows = wb.run_rows()
    running = [r["run"] for r in rows if r["state"] in ("running", "starting")]
    return running[0] if running else (rows[0]["run"] if rows else None)


def _select_updates(wb: Workbench, v: View, follow: list, run: str | None) -> dict:
    can_stop, can_resume = buttons_for(wb, run)
    names = wb.run_names()
    out = {v.selected: gr.Dropdown(choices=names, value=run), v.detail: detail_md(wb, run) if run else "No runs yet: load a preset, then ▶ Launch run.",
           v.log: wb.log_tail(run) if run else "", v.confirm_row: gr.Row(visible=False),
           v.stop_btn: gr.Button(interactive=can_stop), v.resume_btn: gr.Button(interactive=can_resume)}
    for dd in follow:
        out[dd] = gr.Dropdown(choices=names, value=run)
    return out


def on_page_load(wb: Workbench, v: View, follow: list, others: list = ()):
    """Per-viewer start: fresh table and run lists, the preferred run selected everywhere.

    Returns ``(fn, outputs)`` for ``demo.load`` (build-time values would be stale for a page opened later).
    """
    others = list(others)

    def load():
        """Select the preferred run for this viewer."""
        out = _select_updates(wb, v, follow, preferred_run(wb))
        out[v.table] = run_reader.runs_frame(wb.run_rows())
        for dd in others:
            out[dd] = gr.Dropdown(choices=wb.run_names())
        return out

    return load, [v.selected, v.detail, v.log, v.confirm_row, v.stop_btn, v.resume_btn, v.table, *follow, *others]


def wire(wb: Workbench, v: View, editor, follow: list, form_errors=None) -> None:
    """Attach the Runs tab's events. ``editor`` is the preset TOML; ``follow`` are dropdowns of other
    views (plots, gallery) that switch to a run when it is selected or launched here; ``form_errors``
    (a state, field → message) holds the Presets form's values that are not in the TOML: while there
    are any, Launch is refused (it would start something other than what the form shows)."""

    def select_updates(run):
        """Everything that follows a change of the selected run."""
        return _select_updates(wb, v, follow, run)

    select_outputs = [v.selected, v.detail, v.log, v.confirm_row, v.stop_btn, v.resume_btn, *follow]

    def launch(text, run_name, pending=None):
        """Launch the editor's preset as a new run."""
        if pending:
            problems = "; ".join(f"{k} {m}" for k, m in pending.items())
            return {v.launch_msg: err_md(f"not launched: the Presets form holds values that are not in the TOML ({problems}); fix them there"),
                    v.action_msg: ""}
        try:
            info = wb.launch(text, run_name)
        except WorkbenchError as e:
            return {v.launch_msg: err_md(e), v.action_msg: ""}
        out = select_updates(info["run"])
        out[v.action_msg] = ""
        out[v.launch_msg] = ok_md(f"Launched **{info['run']}** (process group {info['pid']}). It runs on its own: closing this page does not stop it.")
        out[v.table] = run_reader.runs_frame(wb.run_rows())
        out[v.run_name] = ""
        return out

    v.launch_btn.click(launch, [editor, v.run_name, *([form_errors] if form_errors is not None else [])],
                       [v.launch_msg, v.action_msg, v.table, v.run_name, *select_outputs],
                       api_name="ui_launch", api_visibility="undocumented", concurrency_limit=1)

    def on_select(run):
        """A run was picked in the dropdown."""
        return select_updates(run)

    v.selected.input(on_select, [v.selected], select_outputs, api_visibility="private", show_progress="hidden")
    v.selected.change(None, None, None, js="() => window.rsdFollowLog(true)")  # another run's log: start at its end
    v.log.change(None, None, None, js="() => window.rsdFollowLog(false)")

    def on_table_select(evt: gr.SelectData):
        """A row of the runs table was clicked."""
        try:
            row = evt.index[0]
            run = wb.run_names()[row]
        except (IndexError, TypeError):
            return {}
        return select_updates(run)

    v.table.select(on_table_select, None, select_outputs, api_visibility="private", show_progress="hidden")

    def stop(run):
        """Stop the selected run (its whole process group)."""
        if not run:
            return {v.action_msg: err_md("select a run first"), v.launch_msg: ""}
        try:
            res = wb.stop(run, wait_s=3.0)
        except WorkbenchError as e:
            return {v.action_msg: err_md(e), v.launch_msg: ""}
        if res["state"] != "stopping":
            return {v.action_msg: ended_md(wb, run), v.detail: detail_md(wb, run), v.table: run_reader.runs_frame(wb.run_rows()),
                    v.stop_btn: gr.Button(interactive=False), v.stopping: None, v.launch_msg: ""}
        return {v.action_msg: ok_md(f"{run} is stopping (final checkpoint being written); its whole process group was signalled."),
                v.detail: detail_md(wb, run), v.table: run_reader.runs_frame(wb.run_rows()), v.stop_btn: gr.Button(interactive=False),
                v.stopping: run, v.launch_msg: ""}

    v.stop_btn.click(stop, [v.selected], [v.action_msg, v.detail, v.table, v.stop_btn, v.stopping, v.launch_msg], api_name="ui_stop",
                     api_visibility="undocumented")

    def resume(run):
        """Resume the selected run from its latest checkpoint."""
        if not run:
            return {v.action_msg: err_md("select a run first"), v.launch_msg: ""}
        try:
            info = wb.resume(run)
        except WorkbenchError as e:
            return {v.action_msg: err_md(e), v.launch_msg: ""}
        return {v.action_msg: ok_md(f"Resumed {info['run']} from its latest checkpoint (process group {info['pid']})."),
                v.detail: detail_md(wb, run), v.table: run_reader.runs_frame(wb.run_rows()),
                v.stop_btn: gr.Button(interactive=True), v.resume_btn: gr.Button(interactive=False), v.launch_msg: "", v.stopping: None}

    v.resume_btn.click(resume, [v.selected], [v.action_msg, v.detail, v.table, v.stop_btn, v.resume_btn, v.launch_msg, v.stopping],
                       api_name="ui_resume",
                       api_visibility="undocumented")

    def ask_delete(run):
        """Ask for confirmation before deleting."""
        if not run:
            return {v.action_msg: err_md("select a run first")}
        return {v.confirm_md: f"Delete the run **{html.escape(run)}** and its whole folder (checkpoints, samples, log)?",
                v.confirm_row: gr.Row(visible=True), v.action_msg: ""}

    v.delete_btn.click(ask_delete, [v.selected], [v.confirm_md, v.confirm_row, v.action_msg], api_visibility="private")
    v.confirm_no.click(lambda: gr.Row(visible=False), None, v.confirm_row, api_visibility="private")

    def do_delete(run):
        """Delete after confirmation."""
        try:
            wb.delete_run(run, run)
        except WorkbenchError as e:
            return {v.action_msg: err_md(e), v.confirm_row: gr.Row(visible=False)}
        names = wb.run_names()
        out = select_updates(names[0] if names else None)
        out[v.action_msg] = ok_md(f"Deleted {run}.")
        out[v.launch_msg] = ""
        out[v.table] = run_reader.runs_frame(wb.run_rows())
        return out

    v.confirm_yes.click(do_delete, [v.selected], [v.action_msg, v.launch_msg, v.table, *select_outputs], api_name="ui_delete_run", api_visibility="undocumented")


def refresh(wb: Workbench, v: View, follow: list, others: list = ()):
    """The timer's refresh of the Runs tab: table, run choices (keeping every selection), detail, log.

    ``follow`` dropdowns fall back to the selected run when theirs disappears; ``others`` (the
    gallery's comparison run) fall back to none. Returns ``(fn, inputs, outputs)`` for ``timer.tick``.
    """
    follow = list(follow)
    others = list(others)

    def tick(selected, sig, stopping, *followed):
        """One timer refresh; sends only what changed."""
        sig = dict(sig or {})
        out: dict = {}
        if stopping:
            try:
                st = wb.run_status(stopping)
                ended = not st["alive"] and st["state"] in FINAL_STATES
            except WorkbenchError:
                ended = True
            if ended:
                out[v.action_msg], out[v.stopping] = ended_md(wb, stopping), None
        rows = wb.run_rows()
        names = [r["run"] for r in rows]
        frame = run_reader.runs_frame(rows)
        key = frame.drop(columns=["updated"]).to_json()
        if key != sig.get("table"):
            out[v.table] = frame
            sig["table"] = key
        if names != sig.get("names"):
            sig["names"] = names
            keep = selected if selected in names else (names[0] if names else None)
            out[v.selected] = gr.Dropdown(choices=names, value=keep)
            selected = keep
            for i, (dd, cur) in enumerate(zip(follow + others, followed)):
                fallback = keep if i < len(follow) else None
                out[dd] = gr.Dropdown(choices=names, value=cur if cur in names else fallback)
        detail = detail_md(wb, selected) if selected else "No runs yet: load a preset, then ▶ Launch run."
        if detail != sig.get("detail"):
            out[v.detail] = detail
            sig["detail"] = detail
        log = wb.log_tail(selected) if selected else ""
        if log != sig.get("log"):
            out[v.log] = log
            sig["log"] = log
        buttons = buttons_for(wb, selected)
        if list(buttons) != sig.get("buttons"):
            out[v.stop_btn] = gr.Button(interactive=buttons[0])
            out[v.resume_btn] = gr.Button(interactive=buttons[1])
            sig["buttons"] = list(buttons)
        out[v.sig] = sig
        return out

    return tick, [v.selected, v.sig, v.stopping, *follow, *others], [v.table, v.selected, v.detail, v.log, v.stop_btn, v.resume_btn, v.sig,
                                                                    v.action_msg, v.stopping, *follow, *others]
