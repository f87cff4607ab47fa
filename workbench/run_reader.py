"""What a run folder says, in the shapes the page shows: table rows, plot data, gallery, metrics, log.

Reads only ``status.json``, ``events.jsonl``, ``metrics.json``, ``samples/*.png``, ``log.txt``,
``console.txt`` and ``workbench.json`` of folders inside the runs folder, the engine's files through
the engine's own readers (:class:`rsd_engine.runs.RunDir`). Never writes. Missing or partial files
give empty results, never errors, because the engine may be writing them at the same moment.
"""

from __future__ import annotations

import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import pandas as pd

from rsd_engine.runs import (
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

from .launcher import RECORD_NAME, describe_exit

__all__ = [
    "GALLERY_MODELS",
    "MODEL_LABELS",
    "list_runs",
    "run_row",
    "runs_frame",
    "crossing_text",
    "plot_frames",
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
    MEASUREMENTS_GRID: "y = A(x) + σε, the only images training sees (MRI: their zero-filled magnitudes |Aᴴy|; complex images appear as magnitudes)",
    TEACHER_TRUNCATED: "teacher EMA, Heun sampler stopped at σ_c (what the teacher learnt: the noisy distribution)",
    TEACHER_FULL: "teacher EMA, Heun sampler down to σ = 0",
    GENERATOR: "generator EMA, one network evaluation (NFE = 1)",
    CLEAN_GRID: "held-out clean images, used only as the FID reference",
}

def list_runs(runs_dir: str | Path) -> list[str]:
    """Names of the run folders under ``runs_dir``, newest first (folders whose name breaks the run-name
    rule, such as the hidden ``.workbench``, are skipped)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if not child.is_dir() or not is_valid_name(child.name):
            continue
        run = RunDir(child)
        if run.preset_path.exists() or run.status_path.exists() or (child / RECORD_NAME).exists():
            record = read_json_object(child / RECORD_NAME)
            started = record.get("launched") or _mtime(child)
            found.append((started, child.name))
    return [name for _, name in sorted(found, reverse=True)]


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
    return "" if p is None else f"{min(max(p, 0.0), 1.0) * 100:.0f} %"


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
        "eta_s", "updated", "error", "exit_code", "beats_teacher"}``; numbers may be ``None`` (``kimg``
        and ``kimg_total`` outside the training stages, :func:`stage_kimg`); ``exit_code`` is the
        engine process's, when the workbench saw it end; ``beats_teacher`` is the status's
        ``generator_beats_teacher`` (kimg, minutes, FIDs of the first live FID of the generator below
        its teacher's) or ``None``.
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
    }


RUNS_COLUMNS = ["run", "state", "stage", "progress", "images seen (kimg)", "throughput", "ETA", "generator below teacher", "updated"]


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
        kimg = _num(r.get("kimg"), "{:.3g}")
        if kimg and r.get("kimg_total") is not None:
            kimg += f" / {_num(r.get('kimg_total'), '{:.3g}')}"
        thr = []
        if r.get("images_per_s") is not None:
            thr.append(f"{_num(r['images_per_s'], '{:.1f}')} img/s")
        if r.get("it_per_s") is not None:
            thr.append(f"{_num(r['it_per_s'], '{:.2f}')} it/s")
        updated = r.get("updated")
        ago = fmt_duration(now - float(updated)) + " ago" if isinstance(updated, (int, float)) else ""
        state = r.get("state", "")
        if state == "failed":
            state = " ".join(filter(None, ["failed", "⚠" if r.get("error") else "", describe_exit(r.get("exit_code"))]))
        out.append([r["run"], state, r.get("stage", ""), progress, kimg, " · ".join(thr), fmt_duration(r.get("eta_s")),
                    crossing_text(r.get("beats_teacher")), ago])
    return pd.DataFrame(out, columns=RUNS_COLUMNS)


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def plot_frames(events: list[dict]) -> dict[str, pd.DataFrame]:
    """Plot data from events.

    Returns:
        ``{"teacher_loss", "distill_loss", "fid", "throughput"}``, each a DataFrame with columns
        ``kimg`` (images seen in that stage, thousands), ``value`` and ``series`` (the legend:
        loss name, ``"<model> FID (n=…)"``, or ``"<stage> img/s"``). The FID frame also holds the
        teacher baseline of the distillation (its final live FID at the same n) as a horizontal
        line over the distillation's kimg, the reference the generator's live FID is to go below.
    """
    rows: dict[str, list[tuple[float, float, str]]] = {"teacher_loss": [], "distill_loss": [], "fid": [], "throughput": []}
    for e in events:
        kimg = _finite(e.get("kimg"))
        if kimg is None:
            continue
        kind, stage = e.get("kind"), e.get("stage")
        if kind == "progress":
            if stage == "teacher" and _finite(e.get("loss")) is not None:
                rows["teacher_loss"].append((kimg, _finite(e["loss"]), "teacher loss"))
            if stage == "distill":
                for key, label in (("loss_fake_score", "fake-score loss"), ("loss_generator", "generator loss")):
                    if _finite(e.get(key)) is not None:
                        rows["distill_loss"].append((kimg, _finite(e[key]), label))
            if _finite(e.get("images_per_s")) is not None:
                rows["throughput"].append((kimg, _finite(e["images_per_s"]), f"{stage} img/s"))
        elif kind == "fid" and _finite(e.get("fid")) is not None:
            n = e.get("n")
            rows["fid"].append((kimg, _finite(e["fid"]), f"{e.get('model', stage)} FID (n={n})"))
    base = teacher_baseline(events)
    if base is not None and _finite(base.get("fid")) is not None:
        end = max((_finite(e.get("kimg")) or 0.0 for e in events if e.get("stage") == "distill"), default=0.0)
        label = f"{base.get('model')} FID (n={base.get('n')}), the generator's target"
        rows["fid"] += [(0.0, _finite(base["fid"]), label), (max(end, 1e-3), _finite(base["fid"]), label)]
    return {k: pd.DataFrame(v, columns=["kimg", "value", "series"]) for k, v in rows.items()}


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
        parts.append(f"teacher loss **{_num(t.get('loss'), '{:.4g}')}** at {_num(t.get('kimg'), '{:.3g}')} kimg ({_num(t.get('images_per_s'), '{:.1f}')} img/s)")
    d = last.get("progress-distill")
    if d:
        nan = f", {d['nan_count']} NaN samples dropped" if d.get("nan_count") else ""
        parts.append(f"fake-score loss **{_num(d.get('loss_fake_score'), '{:.4g}')}**, generator loss **{_num(d.get('loss_generator'), '{:.4g}')}** "
                     f"at {_num(d.get('kimg'), '{:.3g}')} kimg ({_num(d.get('images_per_s'), '{:.1f}')} img/s{nan})")
    for key, e in sorted(last.items()):
        if key.startswith("fid-"):
            parts.append(f"live FID {e.get('model')} **{_num(e.get('fid'), '{:.2f}')}** (n={e.get('n')}) at {_num(e.get('kimg'), '{:.3g}')} kimg")
    if not any(k.startswith("fid-") for k in last):
        parts.append("no live FID yet (eval.live_fid_n = 0, or the first eval.teacher_every_kimg / eval.distill_every_kimg not reached)")
    base = teacher_baseline(events)
    if base is not None:
        crossing = first_crossing(events)
        target = f"{base.get('model')} FID {_num(base.get('fid'), '{:.2f}')} (n={base.get('n')})"
        parts.append(f"generator first below the {target} **{crossing_text(crossing)}** of distillation" if crossing
                     else f"generator not yet below the {target}")
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
    """Rows of the metrics table for one run (FID, KID, proximal FID, NFE, images/s, each with n)."""
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
        out.append([
            run,
            model,
            str(m.get("weights", "")),
            _num(m.get("fid"), "{:.2f}"),
            kid,
            _num(m.get("proximal_fid"), "{:.2f}"),
            str(m.get("n", "")),
            "" if seeds is None else str(seeds),
            str(m.get("nfe", "")),
            _num(m.get("images_per_s"), "{:.1f}"),
            _short(m.get("reference")),
            str(m.get("note") or ""),
        ])
    den = metrics.get("teacher-denoiser")
    if isinstance(den, dict):
        out.append([
            run,
            "teacher-denoiser",
            str(den.get("weights", "teacher EMA")),
            f"PSNR {_num(den.get('psnr'), '{:.2f}')} dB",
            f"SSIM {_num(den.get('ssim'), '{:.3f}')}",
            "",
            str(den.get("n", "")),
            "",
            str(den.get("nfe", "1")),
            _num(den.get("images_per_s"), "{:.1f}"),
            _short(den.get("reference")),
            _denoiser_note(den),
        ])
    race = metrics.get(RACE)
    final = race.get("final") if isinstance(race, dict) else None
    if isinstance(final, dict):
        live = race.get("live") or {}
        note = "generator better" if final.get("generator_better") else "teacher better"
        if live.get("first_below"):
            note += f"; live FID (n={live.get('n')}) first below the teacher's {crossing_text(live['first_below'])}"
        out.append([
            run,
            f"generator vs {race.get('teacher_model')}",
            "EMA",
            f"{_num(final.get('generator_fid'), '{:.2f}')} vs {_num(final.get('teacher_fid'), '{:.2f}')}",
            f"ratio {_num(final.get('ratio'), '{:.3f}')}",
            "",
            str(final.get("n", "")),
            "",
            "",
            "",
            "",
            note,
        ])
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
