"""The quality table of benchmarks/: rows from run folders, the results file keeps older sections."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rsd_engine.io import config as cfg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality_table  # noqa: E402
from results_file import HEADER, prepend_section  # noqa: E402


def _record(model: str, fid: float, nfe: int) -> dict:
    return {"model": model, "fid": fid, "nfe": nfe, "n": 20, "reference": "fashion-mnist:… (clean, n=40)"}


def _fake_run(root: Path, preset_text: str, noise_sigma: float, teacher_fid: float, generator_fid: float) -> Path:
    run = root / f"run-{noise_sigma}-{generator_fid}"
    run.mkdir()
    preset = cfg.loads(preset_text, [f"corruption.noise_sigma={noise_sigma}"])
    cfg.save(preset, run / "preset.toml")
    metrics = {
        "teacher-full": _record("teacher-full", 500.0, 35),
        "teacher-truncated": _record("teacher-truncated", teacher_fid, 25),
        "generator": {**_record("generator", generator_fid, 1), "proximal_fid": 12.5},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    events = [{"kind": "progress", "kimg": 1.0, "images_per_s": 100.0, "time": 1000.0}, {"kind": "metrics", "time": 1290.0}]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


def test_row_compares_the_truncated_teacher_with_the_generator(tiny_preset_text, tmp_path):
    win = quality_table.row(_fake_run(tmp_path, tiny_preset_text, 0.2, 80.0, 60.0))
    loss = quality_table.row(_fake_run(tmp_path, tiny_preset_text, 0.2, 80.0, 95.0))
    assert "80.0 (teacher-truncated, NFE 25)" in win and "| 60.0 |" in win and "| yes |" in win
    assert "| no |" in loss
    assert "| 12.5 |" in win and "20 (40)" in win
    assert "5.0 min" in win  # 290 s of events + 10 s for the first kimg at 100 img/s


def test_row_uses_the_full_teacher_without_noise(tiny_preset_text, tmp_path):
    row = quality_table.row(_fake_run(tmp_path, tiny_preset_text, 0.0, 80.0, 60.0))
    assert "500.0 (teacher-full, NFE 35)" in row and "| yes |" in row


def test_unfinished_run_is_named(tmp_path):
    with pytest.raises(SystemExit, match="metrics.json"):
        quality_table.row(tmp_path)


def test_prepend_section_keeps_older_sections_newest_first(tmp_path):
    out = tmp_path / "RESULTS.md"
    prepend_section(out, "## old\n\nA\n")
    prepend_section(out, "## new\n\nB\n")
    text = out.read_text()
    assert text.startswith(HEADER) and text.index("## new") < text.index("## old") and text.count(HEADER) == 1
