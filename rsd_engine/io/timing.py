"""Where a run's time goes: the ``timing`` events the engine writes and the table built from them.

Every part of a run that is not a training step logs its wall seconds in events.jsonl as one event
``{"kind": "timing", "part": …, "seconds": …}`` (with ``model`` and ``kimg`` where they apply, and
``reused_from`` when an evaluation took an earlier figure instead of computing it again); checkpoint
events carry their own ``seconds``; the training steps' seconds are the stages' ``train_seconds``
(progress events, carried across resumes). :func:`time_split` turns these into the rows of
``rsd-engine time-split RUN_DIR`` and of the workbench's time table. This module imports no torch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

__all__ = ["TIMING", "STARTUP", "LIVE", "BASELINE", "FINAL", "REFERENCE", "WALL", "process_seconds", "time_split", "split_table"]

#: Event kind of a timed part.
TIMING = "timing"
#: Parts: from the process's start to its first stage (imports, data, measurements, networks).
STARTUP = "start-up"
#: A live evaluation during training (grid and live FID) of the stage's model.
LIVE = "live evaluation"
#: The teacher baseline of the generator's live FIDs (taken from the events, or computed).
BASELINE = "teacher baseline"
#: The final evaluation of one model (``model`` set) or its shared remainder (grids, summaries: no model).
FINAL = "final evaluation"
#: Features of a reference (clean held-out images, or measurements for the proximal FID): computed once
#: and cached on disk (``eval.fid_cache_dir``), so a later run on the same machine reads them in moments.
REFERENCE = "reference features"
#: The whole wall time of one engine process (``rsd-engine run``, resumed runs add one each).
WALL = "wall"


def process_seconds() -> float:
    """Wall seconds since this process started (Linux ``/proc/self/stat``; elsewhere since this module's
    import, which happens early in every engine command)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return time.time() - _IMPORTED


_IMPORTED = time.time()


def _last_train_seconds(events: list[dict], stage: str) -> float | None:
    """The stage's training seconds (the last progress event's ``train_seconds``), ``None`` without one."""
    for e in reversed(events):
        if e.get("kind") == "progress" and e.get("stage") == stage and isinstance(e.get("train_seconds"), (int, float)):
            return float(e["train_seconds"])
    return None


def _sum(events: Iterable[dict]) -> float:
    return float(sum(e.get("seconds") or 0.0 for e in events))


def time_split(events: list[dict]) -> dict:
    """The split of a run's wall time from its events.

    Rows, in this order (a row is left out when the run has no such part): start-up, teacher training,
    distillation training, teacher live evaluation, generator live evaluation (with the teacher
    baseline), final evaluation of each model (noted when its FID was taken from an earlier
    evaluation), final evaluation's grids and summaries, reference features, checkpoints, and the rest of the wall
    (progress reports, guards, waiting: wall minus the parts).

    Args:
        events: the run's events (:meth:`rsd_engine.io.runs.RunDir.read_events`).

    Returns:
        ``{"rows": [{"part", "seconds", "share", "count" (events summed), "note"}], "wall": seconds or None,
        "wall_source": how the wall was found, "evaluation_and_checkpoints": seconds,
        "evaluation_and_checkpoints_share": share or None}``. ``share`` is seconds / wall (``None`` without
        a wall). The wall is the sum of the runs' ``wall`` events (one per engine process); for a run
        still going, or made before timing events existed, the span of its events plus its start-up.
    """
    timing = [e for e in events if e.get("kind") == TIMING]
    rows: list[dict] = []

    def add(part: str, seconds: float | None, count: int = 1, note: str = "", evaluation: bool = False) -> None:
        if seconds is not None and count:
            rows.append({"part": part, "seconds": round(seconds, 1), "count": count, "note": note, "evaluation": evaluation})

    startup = [e for e in timing if e.get("part") == STARTUP]
    add("start-up", _sum(startup), len(startup))
    add("teacher training", _last_train_seconds(events, "teacher"), note="training steps (EMA included)")
    add("distillation training", _last_train_seconds(events, "distill"), note="fake-score and generator steps (EMA included)")
    for stage, label in (("teacher", "teacher live evaluation"), ("distill", "generator live evaluation")):
        live = [e for e in timing if e.get("part") == LIVE and e.get("stage") == stage]
        kimgs = ", ".join(f"{e['kimg']:g}" for e in live if isinstance(e.get("kimg"), (int, float)))
        note = f"at {kimgs} kimg" if kimgs else ""
        if stage == "distill":
            base = [e for e in timing if e.get("part") == BASELINE]
            if base:
                note += f"{'; ' if note else ''}teacher baseline {_sum(base):.1f} s"
            live += base
        add(label, _sum(live), len(live), note, evaluation=True)
    finals = [e for e in timing if e.get("part") == FINAL]
    for model in dict.fromkeys(e.get("model") for e in finals if e.get("model")):
        mine = [e for e in finals if e.get("model") == model]
        reused = sum(1 for e in mine if e.get("reused_from"))
        add(f"final evaluation: {model}", _sum(mine), len(mine), "FID reused from an earlier evaluation" if reused else "", evaluation=True)
    rest = [e for e in finals if not e.get("model")]
    add("final evaluation: grids and summaries", _sum(rest), len(rest), evaluation=True)
    refs = [e for e in timing if e.get("part") == REFERENCE]
    add("reference features", _sum(refs), len(refs), "computed once, then read from the on-disk cache", evaluation=True)
    checkpoints = [e for e in events if e.get("kind") == "checkpoint" and isinstance(e.get("seconds"), (int, float))]
    add("checkpoints", _sum(checkpoints), len(checkpoints), f"{len(checkpoints)} written", evaluation=True)

    walls = [e for e in timing if e.get("part") == WALL]
    if walls:
        wall, source = _sum(walls), f"{len(walls)} engine process{'es' if len(walls) > 1 else ''}"
    else:
        times = [e["time"] for e in events if isinstance(e.get("time"), (int, float))]
        wall = (max(times) - min(times) + _sum(startup)) if times else None
        source = "span of the events (no wall recorded: the run is going on or ended without one)" if times else "no events"
    if wall:
        add("rest (reports, guards, waiting)", max(wall - sum(r["seconds"] for r in rows), 0.0))
    for r in rows:
        r["share"] = r["seconds"] / wall if wall else None
    costly = sum(r["seconds"] for r in rows if r.pop("evaluation"))
    return {
        "rows": rows,
        "wall": round(wall, 1) if wall else None,
        "wall_source": source,
        "evaluation_and_checkpoints": round(costly, 1),
        "evaluation_and_checkpoints_share": costly / wall if wall else None,
    }


def split_table(split: dict) -> str:
    """A :func:`time_split` result as a Markdown table (part | seconds | share | note), with the wall
    and the share of evaluation and checkpoints below it."""
    lines = ["| part | seconds | share | note |", "|---|---|---|---|"]
    for r in split["rows"]:
        share = "–" if r["share"] is None else f"{100 * r['share']:.1f} %"
        lines.append(f"| {r['part']} | {r['seconds']:.1f} | {share} | {r['note']} |".replace("|  |", "| |"))
    wall = split["wall"]
    share = split["evaluation_and_checkpoints_share"]
    lines.append("")
    lines.append(
        f"wall: {'unknown' if wall is None else f'{wall:.1f} s ({wall / 60:.1f} min)'} ({split['wall_source']}); "
        f"evaluation and checkpoints: {split['evaluation_and_checkpoints']:.1f} s"
        + ("" if share is None else f" = {100 * share:.1f} % of the wall")
    )
    return "\n".join(lines)
