"""MRI data sources (issue 8): the NIfTI slicer on a tiny synthetic volume, the fastMRI reader on a
small .h5 written in the fastMRI multi-coil layout, and their errors (each naming the file)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from conftest import write_nifti

from rsd_engine.data import DataError, check_data, clean_reference, read_images, source_identity
from rsd_engine.data.mri import FASTMRI_CROP, fastmri_slices, nifti_slices, smooth_phase
from rsd_engine.io import config
from rsd_engine.operators.coils import birdcage_maps
from rsd_engine.operators.fourier import fft2c, to_complex
from rsd_engine.seeding import item_rng


def test_nifti_slicer_splits_scales_and_is_deterministic(tiny_nifti):
    train = nifti_slices(str(tiny_nifti), "train", 16)
    test = nifti_slices(str(tiny_nifti), "test", 16)
    assert train.dtype == torch.float32 and train.shape[1:] == (2, 16, 16) and test.shape[1:] == (2, 16, 16)
    assert train.shape[0] > 2 * test.shape[0] > 0
    mag = to_complex(torch.cat([train, test])).abs()
    assert mag.max() <= 1 + 1e-6 and mag.max() > 0.9
    assert to_complex(train).angle().std() > 0.1  # a random phase, not a real image
    again = read_images("mri-nifti", str(tiny_nifti), "test", 2, 16)
    assert torch.equal(again, test)
    # no held-out slice equals a training slice
    flat_train = {tuple(r.flatten().tolist()) for r in train}
    assert not any(tuple(r.flatten().tolist()) in flat_train for r in test)
    assert read_images("mri-nifti", str(tiny_nifti), "train", 2, 16, limit=3).shape[0] == 3


def test_smooth_phase_is_frozen_and_smooth():
    a = smooth_phase(16, 16, item_rng(1, 2))
    assert torch.equal(a, smooth_phase(16, 16, item_rng(1, 2)))
    assert not torch.equal(a, smooth_phase(16, 16, item_rng(1, 3)))
    assert (a[:, 1:] - a[:, :-1]).abs().max() < 0.5 and (a[1:] - a[:-1]).abs().max() < 0.5


def test_nifti_errors_name_the_file(tmp_path):
    import nibabel

    flat = tmp_path / "flat.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), str(flat))
    with pytest.raises(DataError, match="flat.nii.gz.*3-D"):
        nifti_slices(str(flat), "train", 16)
    empty = tmp_path / "empty.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((8, 0, 8), np.float32), np.eye(4)), str(empty))
    with pytest.raises(DataError, match="empty.nii.gz.*empty"):
        nifti_slices(str(empty), "train", 16)
    dark = tmp_path / "dark.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(dark))
    with pytest.raises(DataError, match="dark.nii.gz"):
        nifti_slices(str(dark), "train", 16)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="nothing holds no .nii"):
        nifti_slices(str(tmp_path / "nothing"), "train", 16)
    with pytest.raises(DataError, match="does not exist"):
        nifti_slices(str(tmp_path / "missing.nii.gz"), "train", 16)


@functools.lru_cache(maxsize=2)
def _maps(coils: int, h: int, w: int) -> torch.Tensor:
    return birdcage_maps(coils, h, w)


def _write_fastmri(path, slices=2, coils=2, maps=True, key="kspace", size=FASTMRI_CROP):
    """A fastMRI-layout file: kspace (slices × coils × H × W) of a smooth complex ellipse; optional maps."""
    import h5py

    h, w = size
    v, u = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    x = torch.stack(
        [((u / 0.6) ** 2 + (v / (0.5 + 0.1 * s)) ** 2 < 1).float() * torch.polar(torch.ones(h, w), u + v) for s in range(slices)]
    )
    s_maps = _maps(coils, h, w)
    kspace = fft2c(s_maps[None] * x[:, None])
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=kspace.numpy().astype(np.complex64))
        if maps:
            f.create_dataset("sens_maps", data=np.broadcast_to(s_maps.numpy(), kspace.shape).astype(np.complex64))
    return x


def test_fastmri_reader_on_a_synthetic_file(tmp_path):
    x = _write_fastmri(tmp_path / "a.h5")
    images = fastmri_slices(str(tmp_path / "a.h5"), 32)
    assert images.shape == (2, 2, 32, 32) and images.dtype == torch.float32
    z = to_complex(images)[:, 0]
    assert z.abs().max() <= 1 + 1e-5 and z.abs().max() > 0.9
    # the crop is 384 × 320 padded to a square: the outer columns are empty, the phase is the file's
    assert z[:, :, :2].abs().max() < 1e-6 and z[:, :, -2:].abs().max() < 1e-6
    centre = z[0, 16, 16]
    truth = x[0, x.shape[1] // 2, x.shape[2] // 2]
    assert abs(torch.angle(centre) - torch.angle(truth)) < 0.2
    assert "fastmri" in source_identity("fastmri", str(tmp_path / "a.h5"), "train")


def test_fastmri_reader_estimates_maps_with_espirit(tmp_path):
    _write_fastmri(tmp_path / "b.h5", slices=1, maps=False)
    with_maps = tmp_path / "m"
    with_maps.mkdir()
    _write_fastmri(with_maps / "b.h5", slices=1, maps=True)
    estimated, stored = fastmri_slices(str(tmp_path / "b.h5"), 16), fastmri_slices(str(with_maps), 16)
    # ESPIRiT maps are unique up to a phase per pixel-smooth field: compare magnitudes
    assert torch.allclose(to_complex(estimated).abs(), to_complex(stored).abs(), atol=0.05)


def test_fastmri_errors_name_the_file(tmp_path):
    _write_fastmri(tmp_path / "nokspace.h5", key="data")
    with pytest.raises(DataError, match="nokspace.h5.*kspace"):
        fastmri_slices(str(tmp_path / "nokspace.h5"), 16)
    _write_fastmri(tmp_path / "small.h5", size=(FASTMRI_CROP[0] - 1, FASTMRI_CROP[1]))
    with pytest.raises(DataError, match="small.h5.*smaller than the fastMRI crop"):
        fastmri_slices(str(tmp_path / "small.h5"), 16)
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="junk.h5"):
        fastmri_slices(str(tmp_path / "junk.h5"), 16)


def test_bad_data_is_refused_before_a_run_folder_exists(tmp_path, tiny_mri_preset_text, capsys):
    from rsd_engine.cli import main

    flat = tmp_path / "flat"
    flat.mkdir()
    import nibabel

    nibabel.save(nibabel.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), str(flat / "two_d.nii.gz"))
    preset = tmp_path / "p.toml"
    preset.write_text(tiny_mri_preset_text)
    out = tmp_path / "run"
    assert main(["run", str(preset), "--out", str(out), "--set", f"data.path={flat}"]) == 2
    assert "two_d.nii.gz" in capsys.readouterr().err and not out.exists()
    p = config.loads(tiny_mri_preset_text)
    check_data(p)  # the good volume passes
    images, identity = clean_reference(p, 4)
    assert images.shape == (4, 2, 16, 16) and "mri-nifti" in identity and ":test:" in identity and "res16" in identity
    other = tmp_path / "other"
    other.mkdir()
    write_nifti(other / "head2.nii.gz", shape=(22, 24, 18))
    assert clean_reference(config.loads(tiny_mri_preset_text, [f"data.path={other}"]), 4)[1] != identity
