"""Shared fixtures: tiny presets and networks so the suite runs in minutes on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from rsd_engine import config as cfg

TINY_PRESET = """
[run]
name = "tiny"
seed = 3
[data]
max_images = 128
[network]
block_out_channels = [16, 32]
norm_groups = 8
dropout = 0.0
[teacher]
kimg = 0.064
batch_size = 16
lr_warmup_kimg = 0.016
ema_halflife_kimg = 0.05
checkpoint_every_kimg = 0.032
[distill]
kimg = 0.032
batch_size = 8
lr_generator = 1e-4
lr_fake_score = 1e-4
checkpoint_every_kimg = 0.016
[eval]
teacher_every_kimg = 1000
distill_every_kimg = 1000
live_fid_n = 0
final_fid_n = 4
reference_n = 8
kid_subset_size = 4
grid_n = 4
psnr_n = 4
teacher_steps = 3
batch_size = 8
"""


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Reference-feature cache in a per-session temporary folder, never the user's."""
    monkeypatch.setenv("RSD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "rsd-cache"))
    torch.set_num_threads(2)


@pytest.fixture
def tiny_preset_text() -> str:
    """TOML of a tiny Fashion-MNIST preset (≈160k-parameter UNet, a few steps per stage)."""
    return TINY_PRESET


@pytest.fixture
def tiny_preset(tiny_preset_text) -> cfg.Preset:
    """The validated tiny preset."""
    return cfg.loads(tiny_preset_text)
