"""Shared fixtures: tiny presets and networks so the suite runs in minutes on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from rsd_engine.io import config as cfg
from rsd_engine.io.runs import GENERATOR_FINAL, TEACHER_FINAL, RunDir
from rsd_engine.models.networks import EDMPrecond
from rsd_engine.operators import OPERATORS
from rsd_engine.train.checkpoints import save_checkpoint

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


def sets(*overrides: str) -> list[str]:
    """Command-line overrides ``--set key=value`` for ``rsd-engine``, one pair per override."""
    return [arg for override in overrides for arg in ("--set", override)]


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


def write_nifti(path, shape=(20, 24, 18), zooms=(1.0, 1.0, 1.0)):
    """Write a small synthetic T1-like volume (an ellipsoid 'head' with a brighter core) as NIfTI; returns the path."""
    import nibabel
    import numpy as np

    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum(g**2 / a for g, a in zip(grids, (0.7, 0.8, 0.6)))
    vol = np.where(r2 < 1, 60.0 + 60.0 * (r2 < 0.4) + 20.0 * grids[0], 0.0).astype(np.float32)
    affine = np.diag([*zooms, 1.0])
    nibabel.save(nibabel.Nifti1Image(vol, affine), str(path))
    return path


@pytest.fixture
def tiny_nifti(tmp_path):
    """A folder holding one small synthetic NIfTI volume (20×24×18 voxels of 1 mm)."""
    folder = tmp_path / "volumes"
    folder.mkdir()
    write_nifti(folder / "head.nii.gz")
    return folder


TINY_MRI_PRESET = """
[run]
name = "tiny-mri"
seed = 3
[data]
source = "mri-nifti"
path = "{path}"
channels = 2
resolution = 16
[corruption]
operator = "multicoil_mri"
noise_sigma = 0.0
[network]
block_out_channels = [16, 32]
norm_groups = 8
dropout = 0.0
[teacher]
kimg = 0.032
batch_size = 8
lr_warmup_kimg = 0.008
ema_halflife_kimg = 0.05
checkpoint_every_kimg = 0.016
[distill]
kimg = 0.016
batch_size = 8
lr_generator = 1e-4
lr_fake_score = 1e-4
checkpoint_every_kimg = 0.008
[eval]
teacher_every_kimg = 1000
distill_every_kimg = 1000
live_fid_n = 0
final_fid_n = 4
reference_n = 6
kid_subset_size = 4
grid_n = 4
psnr_n = 0
teacher_steps = 3
batch_size = 8
"""


@pytest.fixture
def tiny_mri_preset_text(tiny_nifti) -> str:
    """TOML of a tiny MRI preset (16×16 slices of the synthetic volume, R = 4, a few steps per stage)."""
    return TINY_MRI_PRESET.format(path=tiny_nifti)


@pytest.fixture
def finished_run():
    """Factory ``finished_run(path, preset_text=TINY_PRESET) -> RunDir``: a run folder with final
    teacher and generator checkpoints of freshly initialised networks (no training; mask channels as the
    preset's operator takes them), for tests of what reads finished runs (export, workbench)."""

    def make(path, preset_text: str = TINY_PRESET) -> RunDir:
        preset = cfg.loads(preset_text)
        toml = cfg.dumps(preset)
        run = RunDir.create(path, toml)
        op = OPERATORS[preset.corruption.operator]
        torch.manual_seed(0)
        teacher, generator = (EDMPrecond.from_preset(preset, op.cond_channels, op.cond_kind) for _ in range(2))
        save_checkpoint(run.checkpoint(TEACHER_FINAL), {"ema": teacher}, {"stage": "teacher", "images_seen": 64}, toml)
        save_checkpoint(
            run.checkpoint(GENERATOR_FINAL), {"generator_ema": generator}, {"stage": "distill", "images_seen": 32, "sigma_init": 2.5}, toml
        )
        return run

    return make
