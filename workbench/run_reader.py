"""What a run folder says, in the shapes the page shows: table rows, plot data, gallery, metrics, log.

Reads only ``status.json``, ``events.jsonl``, ``metrics.json``, ``samples/*.png``, ``log.txt``,
``console.txt`` and ``workbench.json`` of folders inside the runs folder, the engine's files through
the engine's own readers (:class:`rsd_engine.io.runs.RunDir`). Never writes. Missing or partial files
give empty results, never errors, because the engine may be writing them at the same moment.
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import pandas as pd

from rsd_engine.io.runs import (
    CLEAN_GRID,
    GENERATOR,
    MEASUREMENTS_GRID,
    MODELS,
    RACE,
    TEACHER_FULL,
    TEACHER_TRUNCATED,
    RunDir,
    first_crossing,
    is_valid_name,
    read_json_object,
    run_state,
    teacher_baseline,
)
from rsd_engine.io.timing import TIMING, split_table, time_split

from .launcher import RECORD_NAME, describe_exit

__all__ = [
    "GALLERY_MODELS",
    "MODEL_LABELS",
    "list_runs",
    "list_studies",
    "run_row",
    "runs_frame",
    "crossing_text",
    "run_points",
    "smooth",
    "compare_figure",
    "COMPARE_PLOTS",
    "compare_row",
    "compare_frame",
    "preset_differences",
    "snapshots",
    "gallery_paths",
    "MODEL_NOTES",
    "latest_values",
    "metrics_rows",
    "metrics_frame",
    "log_tail",
    "fmt_duration",
    "progress_text",
    "stage_kimg",
    "kimg_text",
    "kimg_amount",
    "wall_duration",
    "time_split_md",
]

#: Side-by-side order of the gallery (issue 4): what the teacher saw, then the two teacher samplers, then the generator.
GALLERY_MODELS = (MEASUREMENTS_GRID, TEACHER_TRUNCATED, TEACHER_FULL, GENERATOR)

#: Short labels above each grid (the gallery explains them once in full, see MODEL_NOTES).
MODEL_LABELS = {
    MEASUREMENTS_GRID: "Measurements (training data)",
    TEACHER_TRUNCATED: "Teacher · truncated",
    TEACHER_FULL: "Teacher · full",
    GENERATOR: "Generator · one step",
    CLEAN_GRID: "Clean held-out (reference)",
}

#: One line per model: what the grid is and which weights made it.
MODEL_NOTES = {
    MEASUREMENTS_GRID: "y = A(x) + σε, the only images training sees (MRI: their zero-filled magnitudes |Aᴴy|; complex images appear as "
    "magnitudes)",
    TEACHER_TRUNCATED: "teacher EMA, Heun sampler stopped at σ_c (what the teacher learnt: the noisy distribution)",
    TEACHER_FULL: "teacher EMA, Heun sampler down to σ = 0",
    GENERATOR: "generator EMA, one network evaluation (NFE = 1)",
    CLEAN_GRID: "held-out clean images, used only as the FID reference",
}


def _is_run(folder: Path) -> bool:
    """Whether ``folder`` is a run folder (it has a frozen preset, a status or a launch record)."""
    run = RunDir(folder)
    return run.preset_path.exists() or run.status_path.exists() or (folder / RECORD_NAME).exists()


def list_runs(runs_dir: str | Path) -> list[str]:
    """Names of the run folders under ``runs_dir``, newest first (folders whose name breaks the run-name
    rule, such as the hidden ``.workbench``, are skipped)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.is_dir() and is_valid_name(child.name) and _is_run(child):
            record = read_json_object(child / RECORD_NAME)
            started = record.get("launched") or _mtime(child)
            found.append((started, child.name))
    return [name for _, name in sorted(found, reverse=True)]


#: How many folders below a study folder its runs may lie (``study/setting``, ``study/teachers/name``).
STUDY_DEPTH = 2


def list_studies(runs_dir: str | Path) -> dict[str, list[str]]:
    """Study folders under ``runs_dir`` (written by ``benchmarks/fidelity_study.py``: a folder that is
    not a run, holding runs one or two levels deeper) and their runs.

    Returns:
        study folder name → run names relative to ``runs_dir`` with '/' separators
        (``"study-x/setting"``, then ``"study-x/teachers/t"``), in name order; studies without runs
        are left out.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        return {}
    studies = {}
    for child in sorted(root.iterdir()):
        if not child.is_dir() or not is_valid_name(child.name) or _is_run(child):
            continue
        found, level = [], [child]
        for _ in range(STUDY_DEPTH):
            below = [d for folder in level for d in sorted(folder.iterdir()) if d.is_dir() and is_valid_name(d.name)]
            found += [d.relative_to(root).as_posix() for d in below if _is_run(d)]
            level = [d for d in below if not _is_run(d)]
        if found:
            studies[child.name] = found
    return studies


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def fmt_duration(seconds: Any) -> str:
    """``5400`` → ``"1 h 30 min"``; empty for missing or negative values."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return ""
    if not math.isfinite(s) or s < 0:
        return ""
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def progress_text(progress: Any) -> str:
    """``"37 %"`` for a status ``progress`` (a fraction of the stage), clipped to 0–100 %; ``""`` when
    missing or not a finite number."""
    p = _finite(progress)
    if p is None:
        return ""
    percent = min(max(p, 0.0), 1.0) * 100
    return f"{percent:.1f} %" if 0 < percent < 10 else f"{percent:.0f} %"  # a long stage's first steps are not "0 %"


def kimg_amount(kimg: Any) -> str:
    """Images seen (kimg) as plain text: three significant digits below 100, whole numbers above
    (``1.86``, ``40``, ``1600``; never ``1.6e+03``); ``""`` when not a finite number."""
    k = _finite(kimg)
    return "" if k is None else f"{k:.0f}" if abs(k) >= 100 else f"{k:.3g}"


def stage_kimg(status: dict) -> tuple[float, float | None] | None:
    """(images seen, the stage's length or ``None``) in kimg from a status, for the training stages
    only: during the evaluation (and before the first stage) there is no stage kimg, so ``None``."""
    kimg = _finite(status.get("kimg"))
    if status.get("stage") not in ("teacher", "distill") or kimg is None:
        return None
    return kimg, _finite(status.get("kimg_total"))


def kimg_text(kimg: float) -> str:
    """A snapshot's kimg as shown and as the gallery's choice value: to the image, no trailing zeros
    (``1``, ``1.6``, ``0.016``)."""
    return f"{kimg:.3f}".rstrip("0").rstrip(".")


def _num(value: Any, fmt: str = "{:.3g}") -> str:
    if value is None or value == "":
        return ""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return str(v)
    return fmt.format(v)


def run_row(run_dir: Path, state_override: str | None = None) -> dict:
    """One row of the runs table for ``run_dir``.

    Returns:
        ``{"run", "state", "stage", "progress", "kimg", "kimg_total", "images_per_s", "it_per_s",
        "eta_s", "updated", "error", "exit_code", "beats_teacher", "race", "final", "duration_s"}``; numbers may be ``None`` (``kimg``
        and ``kimg_total`` outside the training stages, :func:`stage_kimg`); ``exit_code`` is the
        engine process's, when the workbench saw it end; ``beats_teacher`` is the status's
        ``generator_beats_teacher`` (kimg, minutes, FIDs of the first live FID of the generator below
        its teacher's) or ``None``; ``race`` the same as the comparison table words it (:func:`_race_text`).
    """
    run = RunDir(run_dir)
    status = run.read_status()
    kimg, kimg_total = stage_kimg(status) or (None, None)
    state = run_state(status) or state_override or "unknown"
    images_per_s = status.get("images_per_s")
    if images_per_s is None:
        last = run.last_event("progress")
        if last and status.get("stage") in (None, last.get("stage")):
            images_per_s = last.get("images_per_s")
    return {
        "run": run_dir.name,
        "state": state,
        "stage": status.get("stage") or "",
        "progress": status.get("progress"),
        "kimg": kimg,
        "kimg_total": kimg_total,
        "images_per_s": images_per_s,
        "it_per_s": status.get("it_per_s"),
        "eta_s": status.get("eta_s") if state == "running" else None,
        "updated": status.get("updated"),
        "error": status.get("error") or "",
        "exit_code": read_json_object(run_dir / RECORD_NAME).get("exit_code"),
        "beats_teacher": status.get("generator_beats_teacher"),
        "race": _race_text(status, _events_if_changed(run)),
        "final": (run.read_metrics().get(RACE) or {}).get("final") if state == "done" else None,
        "duration_s": wall_duration(run_dir, status),
    }


def _events_if_changed(run: RunDir) -> list[dict]:
    """The run's events, read again only when events.jsonl changed (size or time): the runs table is
    refreshed every 2 s for every run, and a finished run's file never changes."""
    try:
        st = run.events_path.stat()
    except OSError:
        return []
    return _read_events(str(run.events_path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _read_events(path: str, size: int, mtime_ns: int) -> list[dict]:
    """:meth:`RunDir.read_events` of the run whose events.jsonl is ``path`` (``size`` and ``mtime_ns``
    make the cache key; callers must not change the list)."""
    return RunDir(Path(path).parent).read_events()


def wall_duration(run_dir: Path, status: dict) -> float | None:
    """Wall seconds from the run's first launch (kept across resumes; else its first event or its
    folder) to its last status update, or to now while it runs; stopped periods are included.
    ``None`` when neither end is known."""
    record = read_json_object(run_dir / RECORD_NAME)
    first = _finite(record.get("first_launched")) or _finite(record.get("launched"))
    if first is None:
        times = [t for t in (_finite(e.get("time")) for e in RunDir(run_dir).read_events()) if t is not None]
        first = min(times) if times else _mtime(run_dir / "preset.toml") or None
    end = time.time() if status.get("state") in ("running", "starting") else _finite(status.get("updated"))
    return None if first is None or end is None else max(end - first, 0.0)


RUNS_COLUMNS = [
    "run",
    "state",
    "stage",
    "progress",
    "images seen (kimg)",
    "throughput",
    "ETA",
    "generator below teacher",
    "final FID",
    "duration",
    "updated",
]


def final_text(final: dict | None) -> str:
    """``"generator 12.1 vs teacher 13.4 (n=150) ✓"`` for the final race record of metrics.json (✓ when
    the generator is better), else ``""``."""
    if not isinstance(final, dict) or _finite(final.get("generator_fid")) is None:
        return ""
    mark = "✓" if final.get("generator_better") else "✗"
    return (
        f"generator {_num(final['generator_fid'], '{:.1f}')} vs teacher {_num(final.get('teacher_fid'), '{:.1f}')} "
        f"(n={final.get('n')}) {mark}"
    )


def crossing_text(crossing: dict | None) -> str:
    """``"at 4.8 kimg, 3.2 min"`` for a generator-beats-teacher record (status field or event), else ``""``."""
    if not isinstance(crossing, dict):
        return ""
    return f"at {_num(crossing.get('kimg'), '{:.3g}')} kimg, {_num(crossing.get('minutes'), '{:.1f}')} min"


def runs_frame(rows: list[dict]) -> pd.DataFrame:
    """The runs table as shown: one line per run, numbers as readable text."""
    out = []
    now = time.time()
    for r in rows:
        progress = progress_text(r.get("progress"))
        kimg = kimg_amount(r.get("kimg"))
        if kimg and r.get("kimg_total") is not None:
            kimg += f" / {kimg_amount(r.get('kimg_total'))}"
        thr = []
        if r.get("images_per_s") is not None:
            thr.append(f"{_num(r['images_per_s'], '{:.1f}')} img/s")
        if r.get("it_per_s") is not None:
            thr.append(f"{_num(r['it_per_s'], '{:.2f}')} it/s")
        if thr and r.get("state") in ("done", "stopped", "failed"):
            thr = [f"last {thr[0]}", *thr[1:]]  # the run has ended: the figure of its last steps, not a current speed
        updated = r.get("updated")
        ago = fmt_duration(now - float(updated)) + " ago" if isinstance(updated, (int, float)) else ""
        state = r.get("state", "")
        if state == "failed":
            state = " ".join(filter(None, ["failed", "⚠" if r.get("error") else "", describe_exit(r.get("exit_code"))]))
        out.append(
            [
                r["run"],
                state,
                r.get("stage", ""),
                progress,
                kimg,
                " · ".join(thr),
                fmt_duration(r.get("eta_s")),
                r.get("race") or crossing_text(r.get("beats_teacher")),
                final_text(r.get("final")),
                fmt_duration(r.get("duration_s")),
                ago,
            ]
        )
    return pd.DataFrame(out, columns=RUNS_COLUMNS)


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def latest_values(events: list[dict]) -> str:
    """A Markdown line with the latest loss, live FID (with n) and throughput of each stage."""
    last: dict[str, dict] = {}
    for e in events:
        kind = e.get("kind")
        if kind == "progress":
            last[f"progress-{e.get('stage')}"] = e
        elif kind == "fid":
            last[f"fid-{e.get('model')}"] = e
        elif kind == "warning":
            last["warning"] = e
    parts = []
    t = last.get("progress-teacher")
    if t:
        parts.append(
            f"teacher loss **{_num(t.get('loss'), '{:.4g}')}** at {_num(t.get('kimg'), '{:.3g}')} kimg "
            f"({_num(t.get('images_per_s'), '{:.1f}')} img/s)"
        )
    d = last.get("progress-distill")
    if d:
        nan = f", {d['nan_count']} NaN samples dropped" if d.get("nan_count") else ""
        parts.append(
            f"fake-score loss **{_num(d.get('loss_fake_score'), '{:.4g}')}**, generator loss **{_num(d.get('loss_generator'), '{:.4g}')}** "
            f"at {_num(d.get('kimg'), '{:.3g}')} kimg ({_num(d.get('images_per_s'), '{:.1f}')} img/s{nan})"
        )
    for key, e in sorted(last.items()):
        if key.startswith("fid-"):
            parts.append(
                f"live FID {e.get('model')} **{_num(e.get('fid'), '{:.2f}')}** (n={e.get('n')}) at {_num(e.get('kimg'), '{:.3g}')} kimg"
            )
    if not any(k.startswith("fid-") for k in last):
        parts.append("no live FID yet (eval.live_fid_n = 0, or the first eval.teacher_every_kimg / eval.distill_every_kimg not reached)")
    base = teacher_baseline(events)
    if base is not None:
        crossing = first_crossing(events)
        target = f"{base.get('model')} FID {_num(base.get('fid'), '{:.2f}')} (n={base.get('n')})"
        parts.append(
            f"generator first below the {target} **{crossing_text(crossing)}** of distillation"
            if crossing
            else f"generator not yet below the {target}"
        )
    if "warning" in last:
        parts.append(f"⚠ last warning: {last['warning'].get('message', '')}")
    return "Latest: " + " · ".join(parts) if events else "No events yet."


def snapshots(run_dir: Path) -> list[float]:
    """kimg values (to the image) of the snapshot grids in ``samples/``, ascending."""
    return sorted({kimg for _, kimg, _ in RunDir(run_dir).snapshots()})


def gallery_paths(run_dir: Path, snapshot: float | None = None, models: tuple[str, ...] = GALLERY_MODELS) -> dict[str, Path | None]:
    """The PNG grid of each model: ``samples/{model}.png`` (latest) or the snapshot at ``snapshot`` kimg.

    Measurements do not change during training, so they always come from ``measurements.png``
    when no snapshot of them exists. Missing grids are ``None``.
    """
    run = RunDir(run_dir)
    written = {(model, kimg): path for model, kimg, path in run.snapshots()} if snapshot is not None else {}
    out: dict[str, Path | None] = {}
    for model in models:
        candidates = []
        if (model, snapshot) in written:
            candidates.append(written[model, snapshot])
        if snapshot is None or model in (MEASUREMENTS_GRID, CLEAN_GRID):
            candidates.append(run.grid_path(model))
        out[model] = next((p for p in candidates if p.is_file()), None)
    return out


METRICS_COLUMNS = ["run", "model", "weights", "FID", "KID ×10³", "proximal FID", "n", "seeds", "NFE", "images/s", "reference", "note"]


def metrics_rows(run: str, metrics: dict) -> list[list[str]]:
    """Rows of the metrics table for one run (FID, KID, proximal FID, NFE, images/s, each with n); the
    teacher's one-step denoiser (a restoration, not a sampler) gives its PSNR and SSIM in the note."""
    out = []
    for model in (*MODELS, *sorted(k for k in metrics if k not in MODELS and k not in ("teacher-denoiser", RACE))):
        m = metrics.get(model)
        if not isinstance(m, dict):
            continue
        kid = ""
        if _finite(m.get("kid")) is not None:
            kid = f"{float(m['kid']) * 1e3:.2f}"
            if _finite(m.get("kid_std")) is not None:
                kid += f" ± {float(m['kid_std']) * 1e3:.2f}"
        seeds = m.get("seeds")
        if isinstance(seeds, (list, tuple)) and len(seeds) == 2:
            seeds = f"{seeds[0]}–{seeds[1]}"
        out.append(
            [
                run,
                model,
                str(m.get("weights", "")),
                _num(m.get("fid"), "{:.2f}"),
                kid,
                _num(m.get("proximal_fid"), "{:.2f}") or ("generator only" if model != GENERATOR else ""),
                str(m.get("n", "")),
                "" if seeds is None else str(seeds),
                str(m.get("nfe", "")),
                _num(m.get("images_per_s"), "{:.1f}"),
                _short(m.get("reference")),
                str(m.get("note") or ""),
            ]
        )
    den = metrics.get("teacher-denoiser")
    if isinstance(den, dict):
        out.append(
            [
                run,
                "teacher-denoiser",
                str(den.get("weights", "teacher EMA")),
                "",  # not a sampler: no FID or KID; its PSNR and SSIM lead the note
                "",
                "",
                str(den.get("n", "")),
                "",
                str(den.get("nfe", "1")),
                _num(den.get("images_per_s"), "{:.1f}"),
                _short(den.get("reference")),
                "; ".join(
                    filter(
                        None, [f"PSNR {_num(den.get('psnr'), '{:.2f}')} dB, SSIM {_num(den.get('ssim'), '{:.3f}')}", _denoiser_note(den)]
                    )
                ),
            ]
        )
    race = metrics.get(RACE)
    final = race.get("final") if isinstance(race, dict) else None
    if isinstance(final, dict):
        live = race.get("live") or {}
        note = f"ratio {_num(final.get('ratio'), '{:.3f}')} (generator / teacher): " + (
            "generator better" if final.get("generator_better") else "teacher better"
        )
        if live.get("first_below"):
            note += f"; live FID (n={live.get('n')}) first below the teacher's {crossing_text(live['first_below'])}"
        out.append(
            [
                run,
                f"generator vs {race.get('teacher_model')}",
                "EMA",
                f"{_num(final.get('generator_fid'), '{:.2f}')} vs {_num(final.get('teacher_fid'), '{:.2f}')}",
                "",
                "",
                str(final.get("n", "")),
                "",
                "",
                "",
                "",
                note,
            ]
        )
    return out


def _denoiser_note(den: dict) -> str:
    parts = ["teacher D(y; σ_c) on noisy held-out images"]
    if _finite(den.get("psnr_noisy_input")) is not None:
        parts.append(f"noisy input: PSNR {float(den['psnr_noisy_input']):.2f} dB")
    if _finite(den.get("ssim_noisy_input")) is not None:
        parts.append(f"SSIM {float(den['ssim_noisy_input']):.3f}")
    return ", ".join(parts)


def _short(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def metrics_frame(rows: list[list[str]], drop_empty: bool = True) -> pd.DataFrame:
    """The metrics table as a DataFrame (columns :data:`METRICS_COLUMNS`); columns empty in every
    row are left out (``run``, ``model`` and ``n`` always stay)."""
    frame = pd.DataFrame(rows, columns=METRICS_COLUMNS)
    if drop_empty and rows:
        keep = [c for c in METRICS_COLUMNS if c in ("run", "model", "n") or (frame[c].astype(str).str.strip() != "").any()]
        frame = frame[keep]
    return frame


def log_tail(run_dir: Path, lines: int = 200) -> str:
    """The last ``lines`` lines of log.txt, followed by the end of console.txt when it holds an error."""
    parts = []
    log = _tail(RunDir(run_dir).log_path, lines)
    if log:
        parts.append(log)
    console = _tail(run_dir / "console.txt", 60)
    status = RunDir(run_dir).read_status()
    if console and (not log or status.get("state") == "failed" or "Traceback" in console):
        parts.append("── console.txt (stdout/stderr of the processes) ──\n" + console)
    return "\n\n".join(parts) if parts else "(no log yet)"


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(deque(data.splitlines(), maxlen=lines)).strip()


# ---------------------------------------------------------------------------------------------
# Comparing runs: one global x axis per run (images seen since its start, teacher then distillation)

#: What each comparison plot shows: title, y title, whether its y axis may be logarithmic and smoothed.
COMPARE_PLOTS = {
    "fid": ("Live FID (small n: compare runs with each other, not with 50k figures)", "FID", False),
    "loss": ("Losses: teacher, then fake score and generator", "loss", True),
    "throughput": ("Throughput", "images / s", False),
}


def run_points(events: list[dict], teacher_kimg: float | None = None) -> list[dict]:
    """The plotted points of one run on a global axis.

    Args:
        events: the run's events.jsonl.
        teacher_kimg: the teacher stage's length (kimg); the distillation's points start there.
            Default: the last teacher-stage kimg in the events (0 when the teacher came from
            another run).

    Returns:
        dicts ``{"plot", "series", "kimg", "minutes", "value", "n"}``: ``plot`` is a key of
        :data:`COMPARE_PLOTS`; ``kimg`` is images seen since the start of the run (thousands);
        ``minutes`` the wall-clock minutes since its first event; ``n`` the FID's sample count.
        Points a resumed run logged again replace the earlier ones (:func:`_drop_replayed`).
    """
    if teacher_kimg is None:
        teacher_kimg = max((_finite(e.get("kimg")) or 0.0 for e in events if e.get("stage") == "teacher"), default=0.0)
    start = min((_finite(e.get("time")) for e in events if _finite(e.get("time")) is not None), default=0.0)
    out = []
    for e in events:
        kimg, stage = _finite(e.get("kimg")), e.get("stage")
        if kimg is None or stage not in ("teacher", "distill"):
            continue
        x = kimg + (teacher_kimg if stage == "distill" else 0.0)
        minutes = ((_finite(e.get("time")) or start) - start) / 60

        def add(plot: str, series: str, value: Any, n: Any = None) -> None:
            v = _finite(value)
            if v is not None:
                out.append({"plot": plot, "series": series, "kimg": x, "minutes": minutes, "value": v, "n": n})

        if e.get("kind") == "progress":
            if stage == "teacher":
                add("loss", "teacher loss", e.get("loss"))
            else:
                add("loss", "fake-score loss", e.get("loss_fake_score"))
                add("loss", "generator loss", e.get("loss_generator"))
            add("throughput", f"{stage} img/s", e.get("images_per_s"))
        elif e.get("kind") == "fid":
            add("fid", f"{e.get('model', stage)} (n={e.get('n')})", e.get("fid"), e.get("n"))
    return _drop_replayed(out)


def _drop_replayed(points: list[dict]) -> list[dict]:
    """A resumed run trains again from its checkpoint, so its events go back in images seen and
    repeat what was logged after that checkpoint: in each series the later record replaces the
    earlier ones at or beyond its ``kimg`` (plots then run forward, never back to an earlier x)."""
    kept: dict[tuple[str, str], list[dict]] = {}
    for p in points:
        series = kept.setdefault((p["plot"], p["series"]), [])
        while series and series[-1]["kimg"] >= p["kimg"]:
            series.pop()
        series.append(p)
    survivors = {id(q) for series in kept.values() for q in series}
    return [p for p in points if id(p) in survivors]  # file order kept, one set lookup a point


def smooth(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing): ``weight`` in
    [0, 1), 0 = none. Returns a list of the same length."""
    if not 0 < weight < 1:
        return list(values)
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def _log_ticks(fig) -> dict:
    """Tick positions 1, 2, 5 × 10^k over the figure's positive y values, each labelled with its value
    (``0.2``, ``0.5``, ``1``, ``2``), for a logarithmic axis; ``{}`` when there are none."""
    ys = [y for t in fig.data for y in (t.y or ()) if isinstance(y, (int, float)) and math.isfinite(y) and y > 0]
    if not ys:
        return {}
    low, high = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    ticks = [m * 10.0**k for k in range(low, high + 1) for m in (1, 2, 5) if min(ys) / 2.5 <= m * 10.0**k <= max(ys) * 2.5]
    return {"tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}


#: Height of a comparison plot's drawing area and of one row of its legend (pixels).
PLOT_PX, LEGEND_ROW_PX = 260, 22


def compare_figure(runs: dict[str, list[dict]], plot: str, x: str = "kimg", log_y: bool = False, smoothing: float = 0.0):
    """A Plotly figure of several runs' ``plot`` (a key of :data:`COMPARE_PLOTS`) on a global axis.

    Each series has markers (one point is still visible) and hover values; the distillation's start
    of each run is a dotted vertical line (on either axis), and on the FID plot each run's teacher
    baseline (the truncated teacher's live FID at the same n) is a dashed horizontal line over its
    distillation.

    Args:
        runs: run name → its events.
        x: ``"kimg"`` (images seen since the run's start, thousands) or ``"minutes"`` (wall clock).
        log_y: logarithmic y axis (losses).
        smoothing: EMA weight in [0, 1) for the losses (:func:`smooth`); the raw points stay faint.
    """
    import plotly.graph_objects as go

    title, y_title, smoothable = COMPARE_PLOTS[plot]
    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    dashes = ["solid", "dash", "dot", "dashdot"]
    x_title = (
        "images seen since the start of the run (kimg): teacher, then distillation" if x == "kimg" else "wall-clock minutes since the start"
    )
    for i, (name, events) in enumerate(runs.items()):
        color = palette[i % len(palette)]
        every = run_points(events)
        points = [p for p in every if p["plot"] == plot]
        series = list(dict.fromkeys(p["series"] for p in points))
        for j, s in enumerate(series):
            pts = [p for p in points if p["series"] == s]
            xs, ys = [p[x] for p in pts], [p["value"] for p in pts]
            label = f"{name} · {s}" if len(runs) > 1 else s
            if smoothable and smoothing > 0:
                fig.add_trace(
                    go.Scatter(
                        x=xs,
                        y=ys,
                        mode="markers",
                        marker=dict(color=color, size=4, opacity=0.4),
                        showlegend=False,
                        hoverinfo="skip",
                        legendgroup=label,
                    )
                )
                ys = smooth(ys, smoothing)
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    line=dict(color=color, dash=dashes[j % len(dashes)]),
                    marker=dict(size=7),
                    hovertemplate=f"{label}<br>%{{x:.4g}} {'kimg' if x == 'kimg' else 'min'}: %{{y:.4g}}<extra></extra>",
                )
            )
        teacher_end = max((_finite(e.get("kimg")) or 0.0 for e in events if e.get("stage") == "teacher"), default=None)
        distill = [p for p in every if p["plot"] != "throughput" and p["kimg"] >= (teacher_end or 0)]
        times = [t for t in (_finite(e.get("time")) for e in events) if t is not None]
        distill_times = [t for t in (_finite(e.get("time")) for e in events if e.get("stage") == "distill") if t is not None]
        boundary = teacher_end if x == "kimg" else ((min(distill_times) - min(times)) / 60 if distill_times else None)
        if boundary and any(e.get("stage") == "distill" for e in events):
            label = dict(annotation_text="distillation starts", annotation_position="top left") if i == 0 else {}
            fig.add_vline(x=boundary, line=dict(color=color, dash="dot", width=1), **label)
        base = teacher_baseline(events)
        if plot == "fid" and base is not None and _finite(base.get("fid")) is not None and distill:
            xs = [p[x] for p in distill]
            label = (
                f"{name} · {base.get('model')} (n={base.get('n')}), the generator's target"
                if len(runs) > 1
                else f"{base.get('model')} (n={base.get('n')}), the generator's target"
            )
            fig.add_trace(
                go.Scatter(
                    x=[min(xs), max(xs)],
                    y=[base["fid"]] * 2,
                    mode="lines",
                    name=label,
                    line=dict(color=color, dash="longdash", width=1.5),
                    hovertemplate=f"{label}: %{{y:.4g}}<extra></extra>",
                )
            )
    entries = sum(1 for t in fig.data if t.showlegend is not False)
    legend_px = LEGEND_ROW_PX * math.ceil(entries / 2)  # two legend entries a row below the plot
    fig.update_layout(
        title=dict(text=title, font=dict(size=14)),
        height=PLOT_PX + 110 + legend_px,  # the plot area keeps its height however many runs are shown
        margin=dict(l=60, r=20, t=50, b=60 + legend_px),
        legend=dict(orientation="h", yanchor="top", y=-60 / PLOT_PX, font=dict(size=11)),
        showlegend=True,
        hovermode="closest",
        template="plotly_white",
    )
    fig.update_xaxes(title_text=x_title, title_standoff=8)
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear", **(_log_ticks(fig) if log_y else {}))
    return fig


COMPARE_COLUMNS = ["run", "state", "operator", "σ", "teacher FID (n)", "generator FID (n)", "ratio", "generator below teacher", "duration"]


def compare_row(run_dir: Path, name: str | None = None) -> list[str]:
    """One row of the comparison table (:data:`COMPARE_COLUMNS`) for the run in ``run_dir``, shown as
    ``name`` (default: the folder's name): state, operator and noise σ from the frozen preset, the
    final FIDs of the truncated teacher and the generator with their n, their ratio (generator /
    teacher, below 1 = generator better; "n differs" when the two FIDs were measured at different
    n), the first live FID of the generator below its teacher's (distillation kimg and training
    minutes), and the run's wall-clock duration (:func:`wall_duration`)."""
    run = RunDir(run_dir)
    try:
        import tomli

        preset = tomli.loads(run.preset_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        preset = {}
    corruption = preset.get("corruption", {}) if isinstance(preset.get("corruption"), dict) else {}
    metrics = run.read_metrics()
    race = metrics.get(RACE) if isinstance(metrics.get(RACE), dict) else {}
    finals = {"teacher": metrics.get(race.get("teacher_model") or TEACHER_TRUNCATED), "generator": metrics.get(GENERATOR)}
    finals = {k: m for k, m in finals.items() if isinstance(m, dict) and _finite(m.get("fid")) is not None}

    def fid(key: str) -> str:
        m = finals.get(key)
        return f"{_num(m['fid'], '{:.2f}')} (n={m.get('n')})" if m else ""

    ratio = ""
    if len(finals) == 2:
        t, g = finals["teacher"], finals["generator"]
        ratio = "n differs" if t.get("n") != g.get("n") else (_num(g["fid"] / t["fid"], "{:.3f}") if t["fid"] > 0 else "")
    events = run.read_events()
    status = run.read_status()
    return [
        name or run_dir.name,
        str(status.get("state") or "unknown"),
        str(corruption.get("operator", "")),
        _num(corruption.get("noise_sigma")),
        fid("teacher"),
        fid("generator"),
        ratio,
        _race_text(status, events),
        fmt_duration(wall_duration(run_dir, status)),
    ]


def _race_text(status: dict, events: list[dict]) -> str:
    """The "generator below teacher" cell: when the generator's live FID first went below its
    teacher's; else "not yet" (still running), "no" (ended without), or "not measured" (no teacher
    baseline was recorded: live FID was off)."""
    crossing = crossing_text(status.get("generator_beats_teacher"))
    if crossing:
        return crossing
    if not teacher_baseline(events):
        return "not measured"
    return "no" if status.get("state") in ("done", "stopped", "failed") else "not yet"


def compare_frame(runs: dict[str, Path]) -> pd.DataFrame:
    """The comparison table of several runs, run name → folder (one :func:`compare_row` each, in order)."""
    return pd.DataFrame([compare_row(path, name) for name, path in runs.items()], columns=COMPARE_COLUMNS)


def preset_differences(texts: dict[str, str]) -> pd.DataFrame:
    """The keys whose values differ between presets (TOML texts, run name → text), dotted, one column
    of values per run (``""`` where a preset does not set the key). Columns ``field`` and the run names;
    with fewer than two presets one row saying how to get a comparison."""
    import tomli

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    if len(texts) < 2:
        return pd.DataFrame([["(pick another run under Compare with to see the keys that differ)"]], columns=["field"])
    values = {name: flat(tomli.loads(text or "")) for name, text in texts.items()}
    keys = sorted(set().union(*values.values())) if values else []
    rows = [[k, *(_show(v.get(k)) for v in values.values())] for k in keys if len({repr(v.get(k)) for v in values.values()}) > 1]
    return pd.DataFrame(rows, columns=["field", *values])


def _show(value: Any) -> str:
    return "" if value is None else str(value)


def time_split_md(run_dir: Path) -> str:
    """Where the run's wall time went (:func:`rsd_engine.io.timing.time_split`: training, live and final
    evaluation per model, reference features, checkpoints, start-up; seconds and share) as the Markdown
    table of ``rsd-engine time-split``; ``""`` for a run without timing events (made before they existed)."""
    events = RunDir(run_dir).read_events()
    if not any(e.get("kind") == TIMING for e in events):
        return ""
    return split_table(time_split(events))
