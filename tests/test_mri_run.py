"""A tiny multi-coil MRI run through the command line (issue 8): teacher → RSD → evaluation with the
zero-filled baseline, then sample and preview; 16×16 slices of a synthetic volume. (Each FID costs an
eigen-decomposition of 2048 × 2048 matrices, so the test keeps to the five of the final evaluation;
the live FID and re-evaluation paths are the image operators', tested in test_cli.py.)"""

from __future__ import annotations

from rsd_engine.cli import main
from rsd_engine.io.runs import FINAL_NETWORK, TEACHER_FINAL, RunDir
from rsd_engine.train.checkpoints import load_checkpoint


def test_tiny_mri_run_end_to_end(tmp_path, tiny_mri_preset_text, capsys):
    preset = tmp_path / "mri.toml"
    preset.write_text(tiny_mri_preset_text)
    out = tmp_path / "run"
    assert main(["run", str(preset), "--out", str(out)]) == 0
    run = RunDir(out)
    assert run.read_status()["state"] == "done"
    metrics = run.read_metrics()
    assert "teacher-truncated" not in metrics  # σ_c = 0: the full sampler is the teacher
    for model in ("teacher-full", "generator", "zero-filled", "teacher-reconstruction"):
        assert metrics[model]["fid"] is not None and "reference" in metrics[model], model
    assert metrics["generator"]["nfe"] == 1 and "proximal_fid" in metrics["generator"]
    for model in ("zero-filled", "teacher-reconstruction"):
        rec = metrics[model]
        assert rec["n"] == 6 and 0 < rec["psnr"] < 60 and -1 <= rec["ssim"] <= 1 and "PSNR" in rec["note"]
    assert metrics["zero-filled"]["nfe"] == 0 and "images_per_s" not in metrics["zero-filled"]
    for grid in ("measurements", "clean", "teacher-full", "generator", "zero-filled", "teacher-reconstruction"):
        assert (run.samples / f"{grid}.png").is_file()
    stored = load_checkpoint(run.checkpoint(TEACHER_FINAL)).config(FINAL_NETWORK[TEACHER_FINAL])
    assert stored["cond_kind"] == "kspace_mask" and stored["channels"] == 2 and stored["cond_channels"] == 1
    capsys.readouterr()
    assert main(["sample", str(out), "--n", "3", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
    assert main(["preview", str(preset), "--n", "3", "--out", str(tmp_path / "p.png")]) == 0
    printed = capsys.readouterr().out
    assert "k-space line mask" in printed and "simulated" in printed and "zero-filled" in printed
    from PIL import Image

    with Image.open(tmp_path / "p.png") as im:
        assert im.size == (3 * 17 + 1, 4 * 17 + 1) and im.mode == "L"
