"""Teacher-against-generator quality table over finished runs.

Reads each run folder's ``preset.toml``, ``metrics.json`` and ``events.jsonl`` (written by
``rsd-engine run``) and prints one Markdown row per run: the corruption, the training budget, FID
(with n) of the teacher sampler that stops at σ_c (``teacher-truncated``; for σ = 0 this is
``teacher-full``) and of the one-step generator, the generator's proximal FID against the corrupted
training measurements, whether the generator wins, and the run's wall time (first to last event,
plus the time the first progress report had already taken). The table is also written, with the
command, at the top of benchmarks/RESULTS.md (or --out).

    python benchmarks/quality_table.py runs/fmnist-deblur-0.0 runs/fmnist-deblur-0.2 ... [--title T]

Exits with status 1 and a message naming the file when a run has no metrics.json (not finished) or
its preset.toml does not load.
"""

from __future__ import annotations

import sys
from pathlib import Path

from results_file import table_main

from rsd_engine.io import config as cfg
from rsd_engine.io.runs import GENERATOR, TEACHER_FULL, TEACHER_TRUNCATED, RunDir

ROOT = Path(__file__).resolve().parents[1]

HEADER = (
    "| preset | operator | σ | teacher kimg | RSD kimg | teacher FID (sampler) | generator FID | "
    "generator proximal FID | n (reference n) | generator better | wall |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def wall_seconds(run: RunDir) -> float:
    """Seconds from the run's start to its last event.

    The start is the first progress event's time less the time its ``kimg`` took at its
    ``images_per_s``. Returns NaN for a run without events.
    """
    events = run.read_events()
    if not events:
        return float("nan")
    first = next((e for e in events if e.get("kind") == "progress" and e.get("images_per_s")), events[0])
    start = first["time"] - 1000.0 * first.get("kimg", 0.0) / first.get("images_per_s", float("inf"))
    return events[-1]["time"] - start


def row(run: Path) -> str:
    """One Markdown table row for a finished run folder.

    Raises SystemExit (status 1, message naming the file) if ``run/metrics.json`` is missing or
    ``run/preset.toml`` does not load.
    """
    folder = RunDir(run)
    if not folder.metrics_path.is_file():
        raise SystemExit(f"{folder.metrics_path}: missing; is the run finished? (rsd-engine run … then rsd-engine evaluate)")
    metrics = folder.read_metrics()
    try:
        preset = cfg.load(folder.preset_path)
    except (OSError, cfg.PresetError) as err:
        raise SystemExit(str(err)) from None
    sigma = preset.corruption.noise_sigma
    teacher_key = TEACHER_TRUNCATED if sigma > 0 and TEACHER_TRUNCATED in metrics else TEACHER_FULL
    teacher, gen = metrics[teacher_key], metrics[GENERATOR]
    op = preset.corruption.operator
    params = getattr(preset.corruption, op, None)
    op_text = op if params is None else f"{op} ({', '.join(f'{k}={v}' for k, v in params.model_dump().items())})"
    wall = wall_seconds(folder)
    ref_n = teacher["reference"].rsplit("n=", 1)[-1].rstrip(")")
    better = "yes" if gen["fid"] < teacher["fid"] else "no"
    return (
        f"| {preset.run.name} | {op_text} | {sigma:g} | {preset.teacher.kimg:g} | {preset.distill.kimg:g} | "
        f"{teacher['fid']:.1f} ({teacher_key}, NFE {teacher['nfe']}) | {gen['fid']:.1f} | "
        f"{gen.get('proximal_fid', float('nan')):.1f} | {gen['n']} ({ref_n}) | {better} | {wall / 60:.1f} min |\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Print the table for the given run folders and prepend it to --out. Returns 0."""
    return table_main(
        argv,
        "benchmarks/quality_table.py",
        __doc__.split("\n\n")[0],
        "Teacher against generator on finished runs",
        HEADER,
        row,
        ROOT / "benchmarks" / "RESULTS.md",
    )


if __name__ == "__main__":
    sys.exit(main())
