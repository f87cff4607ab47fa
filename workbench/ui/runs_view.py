"""Runs view: launch the edited preset, the table of runs, stop / resume / delete, the log tail.

What each event does is decided in :mod:`workbench.runs_page` (plain values, tested without Gradio);
this module creates the components, binds each event to its function there and turns the returned
:class:`~workbench.runs_page.RunsOutcome` into component updates (:func:`updates`).
"""

from __future__ import annotations

import gradio as gr

from .. import run_reader
from .. import runs_page as rp
from ..api import Workbench
from .common import View, confirm_row

__all__ = ["build", "wire", "refresh", "on_page_load", "updates"]


def build(wb: Workbench, launch_text: str) -> View:
    """Create the Runs tab's components (call inside a ``gr.Tab``)."""
    v = View()
    with gr.Group():
        v.launch_summary = gr.Markdown(launch_text, elem_id="launch-summary")
        with gr.Row(equal_height=True):
            v.run_name = gr.Textbox(
                label="Run name (optional)", placeholder="empty = <run.name>-<date>-<time>", scale=3, max_lines=1, elem_id="launch-run-name"
            )
            v.launch_btn = gr.Button("▶ Launch run", variant="primary", scale=1, elem_id="launch-button")
    v.launch_msg = gr.Markdown(elem_id="launch-msg")
    rows = wb.run_rows()
    names = [r["run"] for r in rows]
    v.table = gr.Dataframe(
        run_reader.runs_frame(rows),
        label="Runs (click a row to select it; refreshed every 2 s)",
        interactive=False,
        elem_id="runs-table",
        max_height=640,  # a dozen runs in view before the table scrolls
        wrap=True,
        # fixed shares of the width: headers wrap the same way on every refresh, long run names wrap in their cell
        column_widths=["16%", "8%", "7%", "7%", "9%", "11%", "6%", "10%", "12%", "7%", "7%"],
    )
    with gr.Row(equal_height=True):
        v.selected = gr.Dropdown(
            choices=names, value=names[0] if names else None, label="Selected run", scale=3, elem_id="run-select", allow_custom_value=True
        )
        can_stop, can_resume = rp.buttons_for(wb, names[0] if names else None)
        v.stop_btn = gr.Button("■ Stop", variant="stop", elem_id="run-stop", min_width=80, interactive=can_stop)
        v.resume_btn = gr.Button("↻ Resume", elem_id="run-resume", min_width=80, interactive=can_resume)
        v.delete_btn = gr.Button("Delete…", elem_id="run-delete", min_width=80)
    confirm_row(v, "Yes, delete the run folder", "run-delete-yes")
    v.action_msg = gr.Markdown(elem_id="run-action-msg")
    v.detail = gr.Markdown(rp.detail_md(wb, names[0]) if names else rp.NO_RUNS, elem_id="run-detail")
    v.log = gr.Textbox(
        label="Log tail (log.txt; console output when the engine crashed)",
        lines=14,
        max_lines=14,
        autoscroll=False,
        interactive=False,
        elem_id="run-log",
        value=wb.log_tail(names[0]) if names else "",
    )
    v.sig = gr.State({})
    v.stopping = gr.State(None)  # the run whose "is stopping" message the refresh replaces once it has ended
    return v


def outputs(v: View, follow: list, others: list = ()) -> list:
    """Every component an event of the tab may update (what :func:`updates` may return)."""
    return [
        v.launch_msg,
        v.action_msg,
        v.table,
        v.run_name,
        v.selected,
        v.detail,
        v.log,
        v.confirm_row,
        v.confirm_md,
        v.stop_btn,
        v.resume_btn,
        v.stopping,
        *follow,
        *others,
    ]


def updates(v: View, out: rp.RunsOutcome, follow: list = (), others: list = (), followed: tuple = ()) -> dict:
    """The component updates of a :class:`workbench.runs_page.RunsOutcome` (only its set parts).

    ``follow`` are dropdowns of other tabs that switch to a newly selected run; ``others`` keep their
    own selection (none when it disappears); ``followed`` are the current values of both, in order.
    """
    u: dict = {}
    sel = out.selection
    if sel is not None:
        u.update(
            {
                v.selected: gr.Dropdown(choices=sel.names, value=sel.run),
                v.detail: sel.detail,
                v.log: sel.log,
                v.stop_btn: gr.Button(interactive=sel.can_stop),
                v.resume_btn: gr.Button(interactive=sel.can_resume),
            }
        )
        for dd in follow:
            u[dd] = gr.Dropdown(choices=sel.names, value=sel.run)
        for dd in others:
            u[dd] = gr.Dropdown(choices=sel.names)
    if out.names is not None:
        names, keep = out.names
        u[v.selected] = gr.Dropdown(choices=names, value=keep)
        for i, (dd, cur) in enumerate(zip([*follow, *others], followed)):
            u[dd] = gr.Dropdown(choices=names, value=cur if cur in names else (keep if i < len(follow) else None))
    for component, value in (
        (v.table, out.table),
        (v.launch_msg, out.launch_msg),
        (v.action_msg, out.action_msg),
        (v.detail, out.detail),
        (v.log, out.log),
    ):
        if value is not None:
            u[component] = value
    if out.buttons is not None:
        u[v.stop_btn], u[v.resume_btn] = gr.Button(interactive=out.buttons[0]), gr.Button(interactive=out.buttons[1])
    if out.stopping is not None:
        u[v.stopping] = out.stopping[0]
    if out.confirm is not None:
        u[v.confirm_row], u[v.confirm_md] = gr.Row(visible=out.confirm[0]), out.confirm[1]
    if out.clear_run_name:
        u[v.run_name] = ""
    return u


def on_page_load(wb: Workbench, v: View, follow: list, others: list = ()):
    """Per-viewer start (:func:`workbench.runs_page.page_load`); build-time values would be stale for a
    page opened later. Returns ``(fn, outputs)`` for ``demo.load``."""
    return (lambda: updates(v, rp.page_load(wb), follow, others)), outputs(v, follow, others)


def wire(wb: Workbench, v: View, editor, editor_state, follow: list) -> None:
    """Bind the Runs tab's events to :mod:`workbench.runs_page`. ``editor`` is the preset TOML and
    ``editor_state`` the Presets tab's :class:`workbench.presets_page.Editor` (Launch is refused while
    its form holds values that are not in the TOML); ``follow`` are dropdowns of other tabs that switch
    to a run when it is selected or launched here."""
    outs = outputs(v, follow)

    def show(fn):
        """An event handler showing ``fn``'s outcome."""
        return lambda *args: updates(v, fn(*args), follow) or {v.action_msg: gr.skip()}

    v.launch_btn.click(
        show(lambda text, name, ed: rp.launch(wb, text, name, ed.input_errors if ed else None)),
        [editor, v.run_name, editor_state],
        outs,
        api_name="ui_launch",
        api_visibility="undocumented",
        concurrency_limit=1,
    )
    select = show(lambda run: rp.RunsOutcome(selection=rp.select(wb, run), confirm=(False, "")))
    v.selected.input(select, [v.selected], outs, api_visibility="private", show_progress="hidden")
    v.selected.change(None, None, None, js="() => window.rsdFollowLog(true)")  # another run's log: start at its end
    v.log.change(None, None, None, js="() => window.rsdFollowLog(false)")

    def on_table_select(evt: gr.SelectData):
        """A row of the runs table was clicked."""
        try:
            run = wb.run_names()[evt.index[0]]
        except (IndexError, TypeError):
            return {v.action_msg: gr.skip()}  # a header or a row gone since: nothing changes (an empty dict would be one value)
        return select(run)

    v.table.select(on_table_select, None, outs, api_visibility="private", show_progress="hidden")
    v.stop_btn.click(show(lambda run: rp.stop(wb, run)), [v.selected], outs, api_name="ui_stop", api_visibility="undocumented")
    v.resume_btn.click(show(lambda run: rp.resume(wb, run)), [v.selected], outs, api_name="ui_resume", api_visibility="undocumented")
    v.delete_btn.click(show(rp.ask_delete), [v.selected], outs, api_visibility="private")
    v.confirm_no.click(lambda: gr.Row(visible=False), None, v.confirm_row, api_visibility="private")
    v.confirm_yes.click(show(lambda run: rp.delete(wb, run)), [v.selected], outs, api_name="ui_delete_run", api_visibility="undocumented")


def refresh(wb: Workbench, v: View, follow: list, others: list = ()):
    """The timer's refresh of the Runs tab (:func:`workbench.runs_page.tick`): table, run choices
    (keeping every selection), detail, log, buttons. Returns ``(fn, inputs, outputs)`` for ``timer.tick``."""
    follow, others = list(follow), list(others)

    def tick(selected, sig, stopping, *followed):
        """One timer refresh; sends only what changed."""
        out, sig = rp.tick(wb, selected, sig, stopping)
        return {**updates(v, out, follow, others, followed), v.sig: sig}

    return tick, [v.selected, v.sig, v.stopping, *follow, *others], [*outputs(v, follow, others), v.sig]
