"""Issue 19: a fuzz of preset mutations — wrong types, values past every bound, missing and extra
sections, paths that are not there or not what they should be. Each mutated preset goes through what
``rsd-engine validate`` does (in-process: schema, paths, memory, data headers). It must be refused with
field-named problems, or accepted; an accepted one must then build everything a run builds and take a
first loss and a one-step sample without error, and its frozen form must read back the same. No
other exception (a traceback) is allowed anywhere."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import tomli
import torch

from rsd_engine import assembly
from rsd_engine.data import check_data, training_measurements
from rsd_engine.data.sources import DataError
from rsd_engine.evaluate.generate import ModelSampler
from rsd_engine.io import config as cfg
from rsd_engine.io.runs import GENERATOR
from rsd_engine.models.networks import EDMPrecond

BASE = """
[run]
name = "fuzz"
[data]
source = "npz"
path = "{npz}"
resolution = 16
[network]
block_out_channels = [8, 16]
norm_groups = 4
dropout = 0.0
[teacher]
kimg = 0.016
batch_size = 8
[distill]
kimg = 0.008
batch_size = 4
[eval]
live_fid_n = 0
final_fid_n = 4
reference_n = 8
kid_subset_size = 4
grid_n = 4
psnr_n = 4
teacher_steps = 3
batch_size = 4
fid_weights = "{missing}"
"""

INT_FIELDS = [
    "run.seed",
    "data.resolution",
    "data.max_images",
    "corruption.seed",
    "network.layers_per_block",
    "network.norm_groups",
    "teacher.batch_size",
    "distill.batch_size",
    "eval.live_fid_n",
    "eval.final_fid_n",
    "eval.reference_n",
    "eval.kid_subset_size",
    "eval.teacher_steps",
    "eval.grid_n",
    "eval.psnr_n",
    "eval.batch_size",
    "accelerate.num_processes",
]
FLOAT_FIELDS = [
    "corruption.noise_sigma",
    "network.sigma_data",
    "network.sigma_max",
    "teacher.kimg",
    "teacher.lr",
    "teacher.ema_halflife_kimg",
    "distill.kimg",
    "distill.alpha",
    "distill.sigma_init",
    "distill.t_max",
    "eval.teacher_every_kimg",
]
INT_VALUES = [True, "8", 2.5, -1, 0, 10**12, 2**63 - 1]
FLOAT_VALUES = [False, "0.1", -1.0, 0.0, 1e308, math.inf]


def _set(data: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(data)
    *tables, key = dotted.split(".")
    node = out
    for t in tables:
        node = node.setdefault(t, {})
    node[key] = value
    return out


def _drop(data: dict, section: str) -> dict:
    out = copy.deepcopy(data)
    out.pop(section, None)
    return out


def _mutations(base: dict, files: dict) -> list[tuple[str, dict]]:
    """(label, mutated preset dict): the fixed cases, then a seeded random sample of type and bound mutations."""
    cases = [(f"{s} missing", _drop(base, s)) for s in ("run", "data", "corruption", "network", "teacher", "distill", "eval", "accelerate")]
    cases += [
        ("extra section", {**base, "extras": {"a": 1}}),
        ("extra key", _set(base, "teacher.momentum", 0.9)),
        ("section as a number", {**base, "run": 5}),
        ("section as a list", {**base, "network": [1, 2]}),
        ("unknown operator", _set(base, "corruption.operator", "nope")),
        ("table of an unselected operator", _set(base, "corruption.gaussian_blur", {"std": 1.0})),
        ("unknown operator table", _set(base, "corruption.warp", {"k": 1})),
        ("blur", _set(_set(base, "corruption.operator", "gaussian_blur"), "corruption.gaussian_blur", {"kernel_size": 5, "std": 1.0})),
        ("blur kernel too wide", _set(_set(base, "corruption.operator", "gaussian_blur"), "corruption.gaussian_blur", {"kernel_size": 63})),
        ("super-resolution x4", _set(_set(base, "corruption.operator", "super_resolution"), "corruption.super_resolution", {"factor": 4})),
        ("inpainting", _set(_set(base, "corruption.operator", "random_inpainting"), "corruption.random_inpainting", {"p": 0.9})),
        ("box", _set(_set(base, "corruption.operator", "box_inpainting"), "corruption.box_inpainting", {"box_size": 15})),
        (
            "box as wide as the image",
            _set(_set(base, "corruption.operator", "box_inpainting"), "corruption.box_inpainting", {"box_size": 16}),
        ),
        ("mask operator with edm", _set(_set(base, "corruption.operator", "random_inpainting"), "teacher.objective", "edm")),
        ("mri operator on images", _set(base, "corruption.operator", "multicoil_mri")),
        ("no levels", _set(base, "network.block_out_channels", [])),
        ("channels as text", _set(base, "network.block_out_channels", "16")),
        ("channels as strings", _set(base, "network.block_out_channels", ["8", "16"])),
        ("channels as booleans", _set(base, "network.block_out_channels", [True, 16])),
        ("seven levels", _set(base, "network.block_out_channels", [8] * 7)),
        ("huge channels", _set(base, "network.block_out_channels", [4096, 4096])),
        ("attention", _set(base, "network.attention_levels", [1])),
        ("attention level out of range", _set(base, "network.attention_levels", [2])),
        ("resolution 24 with two levels", _set(base, "data.resolution", 24)),
        ("resolution 9", _set(base, "data.resolution", 9)),
        ("sigma_min above sigma_max", _set(base, "network.sigma_min", 90.0)),
        ("nan lr", _set(base, "teacher.lr", math.nan)),
        ("fp16 on CPU", _set(base, "accelerate.mixed_precision", "fp16")),
        ("a date for a seed", _set(base, "run.seed", __import__("datetime").date(2020, 1, 1))),
        ("description too long", _set(base, "run.description", "x" * 5000)),
        ("name with a slash", _set(base, "run.name", "a/b")),
        ("missing npz", _set(base, "data.path", files["missing"])),
        ("npz path is a folder", _set(base, "data.path", files["folder"])),
        ("npz path is text", _set(base, "data.path", files["text"])),
        ("npz of objects", _set(base, "data.path", files["objects"])),
        ("path too long", _set(base, "data.path", "p" * 5000)),
        ("empty image folder", _set(_set(base, "data.source", "image-folder"), "data.path", files["folder"])),
        ("image folder", _set(_set(base, "data.source", "image-folder"), "data.path", files["images"])),
        ("eval path missing", _set(base, "data.eval_path", files["missing"])),
        ("teacher checkpoint absent", _set(base, "teacher.checkpoint", files["folder"])),
        ("cache dir is a file", _set(base, "eval.fid_cache_dir", files["text"])),
        ("mri source on npz", _set(_set(base, "data.source", "mri-nifti"), "data.channels", 2)),
        ("more evaluation samples than references", _set(base, "eval.final_fid_n", 64)),
        ("models unknown", _set(base, "eval.models", ["teacher", "teacher"])),
    ]
    rng = random.Random(19)
    typed = [(f, v) for f in INT_FIELDS for v in INT_VALUES] + [(f, v) for f in FLOAT_FIELDS for v in FLOAT_VALUES]
    cases += [(f"{f}={v!r}", _set(base, f, v)) for f, v in rng.sample(typed, 60)]
    return cases


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    np.savez(root / "faces.npz", images=rng.integers(0, 256, (12, 16, 16), dtype=np.uint8))
    (root / "empty").mkdir()
    (root / "notes.npz").write_text("not an archive")
    np.savez(root / "objects.npz", images=np.array([{"a": 1}, None], dtype=object))
    from PIL import Image

    (root / "images").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(root / "images" / f"{i}.png")
    return {
        "npz": str(root / "faces.npz"),
        "missing": str(root / "gone.npz"),
        "folder": str(root / "empty"),
        "text": str(root / "notes.npz"),
        "objects": str(root / "objects.npz"),
        "images": str(root / "images"),
    }


def _named(fields: set[str], field: str) -> bool:
    """Whether ``field`` is a schema field, a table of them, or an entry of a list field (``….0``)."""
    return any(f == field or f.startswith(field + ".") or field.startswith(f + ".") for f in fields)


def _given(data, field: str) -> bool:
    """Whether the dotted ``field`` is a key path of the preset as given."""
    node = data
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _validate(data: dict):
    """What ``rsd-engine validate`` checks: the schema, this machine (paths, memory) and the data headers."""
    preset = assembly.check(cfg.from_dict(data))
    cfg.check_here(preset)
    check_data(preset)
    return preset


def _first_steps(preset) -> None:
    """What a run builds before its first step, one loss on two frozen measurements, one generator sample."""
    measurement = assembly.build_measurement(preset)
    data = training_measurements(preset, measurement)
    objective = assembly.build_objective(preset, measurement)
    sampler = ModelSampler.from_preset(preset, objective)
    torch.manual_seed(0)
    net = EDMPrecond.from_preset(preset, measurement.op.cond_channels, measurement.op.cond_kind)
    y, params = data.measurements(list(range(min(2, len(data)))))
    loss = objective.loss(net, y, params).mean()
    loss.backward()
    assert torch.isfinite(loss), loss
    with torch.no_grad():
        samples = sampler.generate(GENERATOR, net.eval(), range(1), "cpu")
    assert samples.images.shape == (1, preset.data.channels, preset.data.resolution, preset.data.resolution)


@pytest.fixture
def one_thread():
    """Tiny networks run fastest on one thread, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_preset_mutations_are_refused_by_field_or_run(fuzz_files, one_thread):
    base = tomli.loads(BASE.format(**fuzz_files))
    cases = _mutations(base, fuzz_files)
    assert len(cases) >= 60
    fields = {f"{e['section']}.{e['key']}" for e in cfg.schema_fields()}
    accepted, refused = [], []
    for label, data in cases:
        try:
            preset = _validate(data)
        except cfg.PresetError as e:
            assert e.problems, label
            for field, message in e.problems:  # a field of the schema, or the key the preset gave
                assert message and (_named(fields, field) or _given(data, field)), (label, field, message)
            refused.append(label)
            continue
        except DataError as e:
            assert "data." in str(e), (label, str(e))
            refused.append(label)
            continue
        assert assembly.loads(assembly.frozen_text(preset)) == preset, label  # the frozen preset of the run reads back
        _first_steps(preset)
        accepted.append(label)
    assert len(refused) >= 40 and len(accepted) >= 10, (accepted, refused)
    for must_refuse in (
        "table of an unselected operator",
        "channels as strings",
        "npz path is text",
        "npz of objects",
        "empty image folder",
        "huge channels",
        "description too long",
    ):
        assert must_refuse in refused, must_refuse
