"""Data: readers of every format (tiny files written here), the frozen per-index corruption, data order."""

import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from rsd_engine import assembly
from rsd_engine.data import CorruptedDataset, DataError, IndexStream, read_images, training_measurements
from rsd_engine.io import config as cfg
from rsd_engine.operators import OPERATORS
from rsd_engine.operators.measurement import Measurement


def _write_idx(path, images):
    n, h, w = images.shape
    header = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + h.to_bytes(4, "big") + w.to_bytes(4, "big")
    with gzip.open(path, "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_is_padded_to_32(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs)
    x = read_images("fashion-mnist", str(tmp_path), "train", 1, 32)
    assert x.shape == (5, 1, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0, 2:30, 2:30], torch.from_numpy(imgs.astype(np.uint8)))
    assert int(x[:, :, :2].max()) == 0


def test_missing_fashion_mnist_names_place_and_package(tmp_path):
    with pytest.raises(DataError) as e:
        read_images("fashion-mnist", str(tmp_path), "test", 1, 32)
    assert str(tmp_path) in str(e.value) and "dataset-fashion-mnist" in str(e.value)


def test_truncated_idx_is_refused(tmp_path):
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write((2051).to_bytes(4, "big") + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    with pytest.raises(DataError, match="truncated"):
        read_images("fashion-mnist", str(tmp_path), "train", 1, 32)


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [0, 1, 2]}, f)
    train = read_images("cifar10", str(tmp_path), "train", 3, 32)
    test = read_images("cifar10", str(tmp_path), "test", 3, 32)
    assert train.shape == (15, 3, 32, 32) and test.shape == (3, 3, 32, 32)


def test_cifar10_missing_batch_is_named(tmp_path):
    with pytest.raises(DataError, match="data_batch_1"):
        read_images("cifar10", str(tmp_path), "train", 3, 32)


def test_npz_nhwc_float_and_grey_conversion(tmp_path):
    arr = np.random.default_rng(2).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", images=arr)
    x = read_images("npz", str(tmp_path / "d.npz"), "train", 3, 16)
    assert x.shape == (4, 3, 16, 16)
    expected = np.clip(np.round(arr * 127.5 + 128), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    assert np.array_equal(x.numpy(), expected)
    grey = read_images("npz", str(tmp_path / "d.npz"), "train", 1, 8)
    assert grey.shape == (4, 1, 8, 8)


def test_npz_without_known_key(tmp_path):
    np.savez(tmp_path / "d.npz", other=np.zeros((2, 8, 8)))
    with pytest.raises(DataError, match="other"):
        read_images("npz", str(tmp_path / "d.npz"), "train", 1, 8)


def test_image_folder(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    x = read_images("image-folder", str(tmp_path), "train", 3, 16)
    assert x.shape == (3, 3, 16, 16)
    assert int(x[2].float().mean().round()) == 80


def test_empty_image_folder(tmp_path):
    with pytest.raises(DataError, match="no images"):
        read_images("image-folder", str(tmp_path), "train", 1, 16)


def _dataset(seed=0, sigma=0.2):
    clean = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    return CorruptedDataset(clean, Measurement(OPERATORS["identity"](1, 8), sigma, seed))


def test_measurement_of_an_index_is_frozen_across_calls_and_batches():
    ds = _dataset()
    a, _ = ds.measurements([3, 5])
    b, _ = ds.measurements([5])
    c, _ = ds.measurements([7, 3])
    assert torch.equal(a[1], b[0]) and torch.equal(a[0], c[1])


def test_two_indices_get_different_noise_and_seed_changes_it():
    ds = _dataset()
    y, _ = ds.measurements([0, 1])
    x = ds._clean[:2].float() / 127.5 - 1
    assert not torch.allclose(y[0] - x[0], y[1] - x[1])
    y_other, _ = _dataset(seed=1).measurements([0])
    assert not torch.equal(y[0], y_other[0])


def test_noise_has_the_preset_sigma_and_is_not_clipped():
    clean = torch.full((400, 1, 8, 8), 255, dtype=torch.uint8)
    ds = CorruptedDataset(clean, Measurement(OPERATORS["identity"](1, 8), 0.2, 0))
    y, _ = ds.measurements(range(400))
    noise = y - 1.0
    assert abs(float(noise.std()) - 0.2) < 0.01
    assert float(y.max()) > 1.0


def test_out_of_range_index():
    with pytest.raises(IndexError):
        _dataset().measurements([10])


def test_index_stream_covers_each_epoch_once_and_is_positional():
    s = IndexStream(10, seed=4)
    first = torch.cat([s.batch(p, 5) for p in (0, 5)])
    assert sorted(first.tolist()) == list(range(10))
    again = IndexStream(10, seed=4).batch(5, 5)
    assert torch.equal(again, first[5:])
    crossing = s.batch(8, 5)
    assert crossing[:2].tolist() == first[8:].tolist()


def test_index_stream_shards_global_batch_across_processes():
    s = IndexStream(100, seed=0)
    whole = s.batch(0, 8)
    shards = torch.cat([s.batch(0, 8, rank=r, world=2) for r in range(2)])
    assert torch.equal(whole, shards)


def test_training_measurements_from_fashion_mnist(tiny_preset):
    ds = training_measurements(tiny_preset, assembly.build_measurement(tiny_preset))
    assert len(ds) == 128
    y, _ = ds.measurements([0])
    assert y.shape == (1, 1, 32, 32)


def test_fashion_mnist_source_with_custom_path_in_preset(tmp_path):
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    p = cfg.loads(f'[data]\npath = "{tmp_path}"\n')
    assert len(training_measurements(p, assembly.build_measurement(p))) == 3
