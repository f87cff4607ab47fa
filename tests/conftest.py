"""Shared fixtures: tiny presets and networks so the suite runs in minutes on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from rsd_engine import config as cfg
from rsd_engine.checkpoints import save_checkpoint
from rsd_engine.networks import EDMPrecond
from rsd_engine.runs import GENERATOR_FINAL, TEACHER_FINAL, RunDir

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


@pytest.fixture
def finished_run():
    """Factory ``finished_run(path, preset_text=TINY_PRESET, cond=0) -> RunDir``: a run folder with final
    teacher and generator checkpoints of freshly initialised networks (no training), for tests of what
    reads finished runs (export, workbench)."""

    def make(path, preset_text: str = TINY_PRESET, cond: int = 0) -> RunDir:
        preset = cfg.loads(preset_text)
        toml = cfg.dumps(preset)
        run = RunDir.create(path, toml)
        torch.manual_seed(0)
        teacher, generator = EDMPrecond.from_preset(preset, cond), EDMPrecond.from_preset(preset, cond)
        save_checkpoint(run.checkpoint(TEACHER_FINAL), {"ema": teacher}, {"stage": "teacher", "images_seen": 64}, toml)
        save_checkpoint(run.checkpoint(GENERATOR_FINAL), {"generator_ema": generator}, {"stage": "distill", "images_seen": 32, "sigma_init": 2.5}, toml)
        return run

    return make
