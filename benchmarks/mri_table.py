"""The multi-coil MRI table: teacher, generator and the two restorations of finished MRI runs.

Reads each run folder's ``preset.toml``, ``metrics.json`` and ``events.jsonl`` (written by
``rsd-engine run`` on a ``multicoil_mri`` preset) and prints one Markdown row per run: acceleration R,
training budget, FID on magnitudes of the teacher (full Heun sampler), the one-step generator, the
zero-filled baseline |Aᴴy| and the teacher's one-step reconstruction (each with its n and the
reference n), the PSNR/SSIM of the two restorations, the generator's proximal FID and the wall time
(:func:`quality_table.wall_seconds`). The table is also written, with the command, at the top of
benchmarks/RESULTS.md (or --out).

    python benchmarks/mri_table.py runs/mri-brain-r4 [runs/mri-brain-r2 …] [--title T]

Exits with status 1 and a message naming the file when a run has no metrics.json (not finished), its
preset.toml does not load, or it is not an MRI run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from quality_table import wall_seconds
from results_file import table_main

from rsd_engine.io import config as cfg
from rsd_engine.io.runs import GENERATOR, TEACHER_FULL, RunDir

ROOT = Path(__file__).resolve().parents[1]

HEADER = (
    "| preset | R | teacher kimg | RSD kimg | teacher FID (NFE) | generator FID | zero-filled FID | teacher-reconstruction FID | "
    "n (reference n) | zero-filled PSNR / SSIM | teacher-reconstruction PSNR / SSIM | generator proximal FID | wall |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def row(run: Path) -> str:
    """One Markdown table row for a finished MRI run folder.

    Raises SystemExit (status 1, message naming the file) for a missing ``metrics.json``, a
    ``preset.toml`` that does not load, or a run whose operator is not ``multicoil_mri``.
    """
    folder = RunDir(run)
    if not folder.metrics_path.is_file():
        raise SystemExit(f"{folder.metrics_path}: missing; is the run finished? (rsd-engine run … then rsd-engine evaluate)")
    try:
        preset = cfg.load(folder.preset_path)
    except (OSError, cfg.PresetError) as err:
        raise SystemExit(str(err)) from None
    if preset.corruption.operator != "multicoil_mri":
        raise SystemExit(f"{folder.preset_path}: operator {preset.corruption.operator!r}, not multicoil_mri")
    m = folder.read_metrics()
    teacher, gen, zero, recon = m[TEACHER_FULL], m[GENERATOR], m["zero-filled"], m["teacher-reconstruction"]
    ref_n = teacher["reference"].rsplit("n=", 1)[-1].rstrip(")")
    return (
        f"| {preset.run.name} | {preset.corruption.multicoil_mri.acceleration} | {preset.teacher.kimg:g} | {preset.distill.kimg:g} | "
        f"{teacher['fid']:.1f} ({teacher['nfe']}) | {gen['fid']:.1f} | {zero['fid']:.1f} | {recon['fid']:.1f} | "
        f"{gen['n']}, restorations {zero['n']} ({ref_n}) | {zero['psnr']:.2f} dB / {zero['ssim']:.3f} | "
        f"{recon['psnr']:.2f} dB / {recon['ssim']:.3f} | {gen.get('proximal_fid', float('nan')):.1f} | {wall_seconds(folder) / 60:.1f} "
        "min |\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Print the table for the given run folders and prepend it to --out. Returns 0."""
    return table_main(
        argv,
        "benchmarks/mri_table.py",
        __doc__.split("\n\n")[0],
        "Multi-coil MRI: teacher, generator and zero-filled baseline",
        HEADER,
        row,
        ROOT / "benchmarks" / "RESULTS.md",
    )


if __name__ == "__main__":
    sys.exit(main())
