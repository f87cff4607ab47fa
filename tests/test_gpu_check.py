"""benchmarks/gpu_check.py runs its whole code path at tiny sizes on a CPU (the GPU check's CI twin)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_gpu_check_quick_on_cpu(tmp_path):
    out = tmp_path / "RESULTS.md"
    assert gpu_check.main(["--device", "cpu", "--quick", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    text = out.read_text()
    assert "## gpu_check --quick on CPU" in text
    for check in (
        "smoke: cifar10-denoise-0.2.toml",
        "teacher training step",
        "RSD iteration",
        "peak memory",
        "FID features",
        "Fashion-MNIST denoising",
    ):
        assert check in text, check
    assert "FAILED" not in text
