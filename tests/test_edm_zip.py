"""data.source = "edm-zip": ZIPs in the layout of EDM's dataset_tool.py (PNG files in numbered folders, dataset.json)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from conftest import sets
from PIL import Image

from rsd_engine.cli import main
from rsd_engine.data import DataError, clean_reference, read_images
from rsd_engine.io import config as cfg


def write_edm_zip(path, n: int = 12, size: int = 16, mode: str = "RGB", labels: bool = True):
    """A zip as dataset_tool.py writes it: ``00000/img00000000.png`` … and ``dataset.json`` with labels."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        for i in range(n):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, format="png")
            z.writestr(f"{i // 1000:05d}/img{i:08d}.png", buf.getvalue())
        if labels:
            z.writestr("dataset.json", json.dumps({"labels": [[f"{i // 1000:05d}/img{i:08d}.png", i % 3] for i in range(n)]}))
    return path


def test_edm_zip_reads_rgb_and_grey_in_name_order(tmp_path):
    rgb = read_images("edm-zip", str(write_edm_zip(tmp_path / "rgb.zip")), "train", 3, 16)
    assert rgb.shape == (12, 3, 16, 16) and rgb.dtype.is_floating_point is False
    with zipfile.ZipFile(tmp_path / "rgb.zip") as z:
        first = np.asarray(Image.open(io.BytesIO(z.read("00000/img00000000.png"))))
    assert (rgb[0].permute(1, 2, 0).numpy() == first).all()
    grey = read_images("edm-zip", str(write_edm_zip(tmp_path / "grey.zip", mode="L", labels=False)), "train", 1, 16)
    assert grey.shape == (12, 1, 16, 16)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"no zip"), "not a zip file"),
        (lambda p: zipfile.ZipFile(p, "w").writestr("dataset.json", "{}"), "holds no images"),
        (lambda p: write_edm_zip(p, size=8), r"img00000000.png: image is 8×8, data.resolution = 16"),
    ],
)
def test_bad_zips_are_named(tmp_path, make, message):
    path = tmp_path / "data.zip"
    make(path)
    with pytest.raises(DataError, match=f"data.zip.*{message}"):
        read_images("edm-zip", str(path), "train", 3, 16)


def test_an_edm_zip_trains_a_tiny_run(tmp_path, tiny_preset_text):
    data = write_edm_zip(tmp_path / "train.zip", n=16, size=32, mode="L")
    evals = write_edm_zip(tmp_path / "eval.zip", n=8, size=32, mode="L")
    text = tiny_preset_text.replace("[data]\n", f'[data]\nsource = "edm-zip"\npath = "{data}"\neval_path = "{evals}"\n')
    text = text.replace("kimg = 0.064", "kimg = 0.016").replace("[distill]\nkimg = 0.032", "[distill]\nkimg = 0.008")
    preset_file = tmp_path / "p.toml"
    preset_file.write_text(text)
    p = cfg.load(preset_file)
    images, identity = clean_reference(p, 4)
    assert images.shape == (4, 1, 32, 32) and "eval.zip" in identity
    out = tmp_path / "run"
    assert (
        main(["run", str(preset_file), "--out", str(out), *sets("eval.final_fid_n=0", "eval.psnr_n=0", "eval.models=['generator']")]) == 0
    )
    assert (out / "checkpoints" / "generator-final").is_dir()
    assert main(["validate", str(preset_file), "--set", f"data.path='{tmp_path / 'none.zip'}'"]) == 2
