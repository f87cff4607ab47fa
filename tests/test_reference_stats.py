"""FID as the papers report it: EDM-format reference statistics (fid-ref, eval.reference_stats) and TF1's resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsd_engine import assembly
from rsd_engine.cli import main
from rsd_engine.data import training_measurements
from rsd_engine.evaluate import metrics as M
from rsd_engine.evaluate.evaluation import Evaluator
from rsd_engine.evaluate.generate import Samples
from rsd_engine.io import config as cfg


def test_fid_from_statistics_is_the_frechet_distance_of_torchmetrics():
    torch.manual_seed(0)
    real, fake = torch.randn(300, 16) * 0.3 + 1, torch.randn(200, 16) * 0.35 + 1.1
    mu, sigma = M.feature_statistics(real)
    assert M.fid_from_statistics(mu, sigma, fake) == pytest.approx(M.fid_from_features(real, fake), rel=1e-9)
    assert abs(M.fid_from_statistics(mu, sigma, real)) < 1e-9


def test_tf1_resize_samples_without_half_pixel_offset():
    x = torch.arange(4.0).reshape(1, 1, 1, 4).expand(1, 1, 4, 4)
    out = M.tf1_resize(x, 8)[0, 0, 0]  # output j samples input j·4/8 = j/2, clamped at the last pixel
    assert torch.allclose(out, torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3]))
    torch_bilinear = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)[0, 0, 0]
    assert not torch.allclose(out, torch_bilinear)


@pytest.mark.parametrize(
    "content, message", [(b"plain text", "not an .npz"), ("keys", "expected 'mu'"), ("shape", r"mu \(3,\), sigma \(2, 2\)")]
)
def test_bad_reference_files_are_named(tmp_path, content, message):
    path = tmp_path / "ref.npz"
    if content == "keys":
        np.savez(path, mean=np.zeros(3))
    elif content == "shape":
        np.savez(path, mu=np.zeros(3), sigma=np.eye(2))
    else:
        path.write_bytes(content)
    with pytest.raises(M.ReferenceStatsError, match=f"ref.npz: .*{message}"):
        M.load_reference_statistics(path)


def test_fid_ref_file_gives_the_fid_of_the_built_in_reference(tmp_path, tiny_preset_text, capsys):
    preset_file = tmp_path / "p.toml"
    preset_file.write_text(tiny_preset_text)
    out = tmp_path / "ref.npz"
    assert main(["fid-ref", str(preset_file), "--out", str(out)]) == 0
    assert "sha256" in capsys.readouterr().out
    with np.load(out) as z:
        assert z["mu"].shape == (2048,) and z["sigma"].shape == (2048, 2048) and z["sigma"].dtype == np.float64

    built_in = cfg.loads(tiny_preset_text)
    from_file = cfg.loads(tiny_preset_text, [f"eval.reference_stats={str(out)!r}"])
    torch.manual_seed(0)
    samples = Samples(torch.rand(6, 1, 32, 32) * 2 - 1, 1, 1.0)
    records = [
        Evaluator(p, training_measurements(p, assembly.build_measurement(p))).fid_record("generator", samples, range(6))
        for p in (built_in, from_file)
    ]
    assert records[0]["fid"] > 0 and abs(records[0]["fid"] - records[1]["fid"]) <= 1e-6
    assert str(out) in records[1]["reference"] and records[1]["reference_sha256"] == M.load_reference_statistics(out).sha256
    assert "(clean, n=8)" in records[0]["reference"]


def test_a_missing_reference_file_is_a_preset_error(tmp_path, tiny_preset_text):
    p = cfg.loads(tiny_preset_text, [f"eval.reference_stats={str(tmp_path / 'none.npz')!r}"])
    with pytest.raises(cfg.PresetError, match="eval.reference_stats"):
        cfg.check_paths(p)
