"""What the Runs tab shows after each event, as plain values (no Gradio).

Every event (launch, select, stop, resume, delete, the timer's refresh, a page opening) is a function
here from the run folders and the event's input to a :class:`RunsOutcome`;
:mod:`workbench.ui.runs_view` only turns an outcome into component updates. Everything shown is read
from the run folders, so closing the tab, reloading, or a second viewer shows the same runs (runs
live in their own process groups, not in a page event).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, replace

import pandas as pd

from rsd_engine.io.runs import FINAL_STATES

from . import run_reader
from .api import Workbench, WorkbenchError
from .launcher import describe_exit
from .preset_edit import err_md, md_text, ok_md
from .presets_page import form_validation

__all__ = [
    "Selection",
    "RunsOutcome",
    "NO_RUNS",
    "detail_md",
    "buttons_for",
    "ended_md",
    "preferred_run",
    "select",
    "page_load",
    "launch",
    "stop",
    "resume",
    "ask_delete",
    "delete",
    "tick",
]

#: The detail line while the runs folder is empty.
NO_RUNS = "No runs yet: load a preset, then ▶ Launch run."


@dataclass(frozen=True)
class Selection:
    """What follows the choice of a run: the run (``None``: no runs), the run names to choose from,
    its detail paragraph and log tail, and whether Stop and Resume apply."""

    run: str | None
    names: list[str]
    detail: str
    log: str
    can_stop: bool
    can_resume: bool


@dataclass(frozen=True)
class RunsOutcome:
    """The result of one event: each attribute left ``None`` leaves that part of the page unchanged.

    Attributes:
        selection: a newly selected run (the other tabs' run lists follow it).
        table: the runs table (:func:`workbench.run_reader.runs_frame`).
        launch_msg, action_msg: the two message lines ("" clears one).
        detail, log: the selected run's paragraph and log tail (without a new selection).
        buttons: (Stop enabled, Resume enabled) without a new selection.
        stopping: ``(run,)``: the run whose "is stopping" message the refresh replaces once it has
            ended; ``(None,)``: none.
        confirm: ``(visible, question)`` of the "delete the run?" row.
        clear_run_name: empty the run-name box.
        names: ``(run names, selected run)`` after the runs folder changed (timer refresh): every run
            list gets the names and keeps its own selection where it still exists; the selected run is
            kept, else the newest.
    """

    selection: Selection | None = None
    table: pd.DataFrame | None = None
    launch_msg: str | None = None
    action_msg: str | None = None
    detail: str | None = None
    log: str | None = None
    buttons: tuple[bool, bool] | None = None
    stopping: tuple[str | None] | None = None
    confirm: tuple[bool, str] | None = None
    clear_run_name: bool = False
    names: tuple[list[str], str | None] | None = None


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
        total = "" if seen[1] is None else f" / {run_reader.kimg_amount(seen[1])}"
        parts.append(f"{run_reader.kimg_amount(seen[0])}{total} kimg seen in this stage")
    eta = run_reader.fmt_duration(st.get("eta_s")) if state == "running" else ""
    if eta:
        parts.append(f"ETA {eta}")
    beat = st.get("generator_beats_teacher")
    if isinstance(beat, dict):
        parts.append(
            f"generator's live FID first below the {beat.get('teacher_model')}'s (n={beat.get('n')}) "
            f"{run_reader.crossing_text(beat)} of distillation"
        )
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


def select(wb: Workbench, run: str | None) -> Selection:
    """Everything that follows the choice of ``run`` (``None``: no run)."""
    can_stop, can_resume = buttons_for(wb, run)
    return Selection(run, wb.run_names(), detail_md(wb, run) if run else NO_RUNS, wb.log_tail(run) if run else "", can_stop, can_resume)


def page_load(wb: Workbench) -> RunsOutcome:
    """A page opened: fresh table and run lists, the preferred run (:func:`preferred_run`) selected."""
    return RunsOutcome(selection=select(wb, preferred_run(wb)), table=run_reader.runs_frame(wb.run_rows()), confirm=(False, ""))


def launch(wb: Workbench, text: str, run_name: str, unwritten: dict[str, str] | None = None) -> RunsOutcome:
    """Launch preset ``text`` as a new run (``run_name`` "" = ``<run.name>-<date>-<time>``) and select it.
    Refused while the Presets form holds values that are not in the TOML (``unwritten``, field → message):
    it would start something other than what the form shows."""
    if unwritten:  # the same problems, in the same order, as the Presets tab's verdict and the launch line count
        problems = form_validation(wb.validate(text), unwritten).problems
        listed = "; ".join(f"{field} {message}" for field, message in problems)
        return RunsOutcome(
            launch_msg=err_md(f"not launched: the preset in the Presets tab has {len(problems)} problem(s): {listed}; fix them there"),
            action_msg="",
        )
    try:
        info = wb.launch(text, run_name)
    except WorkbenchError as e:
        return RunsOutcome(launch_msg=err_md(e), action_msg="")
    return RunsOutcome(
        selection=select(wb, info["run"]),
        table=run_reader.runs_frame(wb.run_rows()),
        action_msg="",
        clear_run_name=True,
        confirm=(False, ""),
        launch_msg=ok_md(
            f"Launched **{info['run']}** (process group {info['pid']}). It runs on its own: closing this page does not stop it."
        ),
    )


def stop(wb: Workbench, run: str | None) -> RunsOutcome:
    """Stop the selected run (its whole process group: SIGTERM, the final checkpoint, SIGKILL after the grace period)."""
    if not run:
        return RunsOutcome(action_msg=err_md("select a run first"), launch_msg="")
    try:
        res = wb.stop(run, wait_s=3.0)
    except WorkbenchError as e:
        return RunsOutcome(action_msg=err_md(e), launch_msg="")
    if res["state"] != "stopping":
        message, stopping = ended_md(wb, run), None
    else:
        message, stopping = ok_md(f"{run} is stopping (final checkpoint being written); its whole process group was signalled."), run
    return RunsOutcome(
        action_msg=message,
        launch_msg="",
        detail=detail_md(wb, run),
        table=run_reader.runs_frame(wb.run_rows()),
        buttons=(False, False),
        stopping=(stopping,),
    )


def resume(wb: Workbench, run: str | None) -> RunsOutcome:
    """Resume the selected run from its latest checkpoint."""
    if not run:
        return RunsOutcome(action_msg=err_md("select a run first"), launch_msg="")
    try:
        info = wb.resume(run)
    except WorkbenchError as e:
        return RunsOutcome(action_msg=err_md(e), launch_msg="")
    return RunsOutcome(
        action_msg=ok_md(f"Resumed {info['run']} from its latest checkpoint (process group {info['pid']})."),
        launch_msg="",
        detail=detail_md(wb, run),
        table=run_reader.runs_frame(wb.run_rows()),
        buttons=(True, False),
        stopping=(None,),
    )


def ask_delete(run: str | None) -> RunsOutcome:
    """Ask before deleting the selected run's folder."""
    if not run:
        return RunsOutcome(action_msg=err_md("select a run first"))
    return RunsOutcome(
        action_msg="", confirm=(True, f"Delete the run **{html.escape(run)}** and its whole folder (checkpoints, samples, log)?")
    )


def delete(wb: Workbench, run: str) -> RunsOutcome:
    """Delete the run and its folder (after confirmation) and select the newest remaining run."""
    try:
        wb.delete_run(run, run)
    except WorkbenchError as e:
        return RunsOutcome(action_msg=err_md(e), confirm=(False, ""))
    names = wb.run_names()
    return RunsOutcome(
        selection=select(wb, names[0] if names else None),
        table=run_reader.runs_frame(wb.run_rows()),
        action_msg=ok_md(f"Deleted {run}."),
        launch_msg="",
        confirm=(False, ""),
    )


def tick(wb: Workbench, selected: str | None, sig: dict, stopping: str | None) -> tuple[RunsOutcome, dict]:
    """The timer's refresh: what changed since the last tick (``sig``, this viewer's memory of what it
    was sent) among the table, the run names (new names keep the selection where it still exists,
    else the newest run), the detail and the log tail; the Stop and Resume buttons every time; and
    the "is stopping" message replaced once that run has ended.

    Returns:
        (the outcome, the new ``sig``).
    """
    sig = dict(sig or {})
    out = RunsOutcome()
    if stopping:
        try:
            st = wb.run_status(stopping)
            ended = not st["alive"] and st["state"] in FINAL_STATES
        except WorkbenchError:
            ended = True
        if ended:
            out = replace(out, action_msg=ended_md(wb, stopping), stopping=(None,))
    rows = wb.run_rows()
    names = [r["run"] for r in rows]
    frame = run_reader.runs_frame(rows)
    key = frame.drop(columns=["updated"]).to_json()
    if key != sig.get("table"):
        out, sig["table"] = replace(out, table=frame), key
    if names != sig.get("names"):
        sig["names"] = names
        selected = selected if selected in names else (names[0] if names else None)
        out = replace(out, names=(names, selected))
    detail = detail_md(wb, selected) if selected else NO_RUNS
    if detail != sig.get("detail"):
        out, sig["detail"] = replace(out, detail=detail), detail
    log = wb.log_tail(selected) if selected else ""
    if log != sig.get("log"):
        out, sig["log"] = replace(out, log=log), log
    # always sent: a launch or a click may have set the buttons since the last tick, so a memory of what
    # this tick sent last cannot tell whether they still show the run's state (a run failing at start-up)
    return replace(out, buttons=buttons_for(wb, selected)), sig
