"""EDM-format pickles: the restricted reader, the import into our DDPM++ and the import-teacher run folder.

The pickles are written here in EDM's layout (persistence records ``torch_utils.persistence.
_reconstruct_persistent_obj(meta)`` holding class name, module source and state; blocks in
``torch.nn.ModuleDict``; ``dnnlib.util.EasyDict`` and numpy scalars inside), from our own network's
weights and with stand-in modules for the names, without EDM's code.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from conftest import sets
from torch import nn

from rsd_engine import load_edm_teacher
from rsd_engine.cli import main
from rsd_engine.io import config as cfg
from rsd_engine.io.runs import FINAL_NETWORK, TEACHER_FINAL, RunDir
from rsd_engine.models.edm_pickle import EDMPickleError, read_pickle
from rsd_engine.models.networks import SongUNetPrecond
from rsd_engine.train.checkpoints import load_network

SIZES = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[16], dropout=0.1, augment_dim=9)


class _Record:
    """Pickles as EDM's persistence record: ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, meta: dict):
        self.meta = meta

    def __reduce__(self):
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,)


@pytest.fixture
def edm_names(monkeypatch):
    """Stand-ins for EDM's ``torch_utils.persistence`` and ``dnnlib.util`` so that pickle can write their names."""

    def _reconstruct_persistent_obj(meta):  # never called: the reader resolves the name to its own record
        raise AssertionError("EDM's reconstruct function must not run")

    persistence = types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__, _reconstruct_persistent_obj.__qualname__ = (
        "torch_utils.persistence",
        "_reconstruct_persistent_obj",
    )
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict
    for name, mod in {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return types.SimpleNamespace(EasyDict=EasyDict)


_EDM_CLASS = {
    "SongUNetPrecond": "EDMPrecond",
    "SongUNet": "SongUNet",
    "UNetBlock": "UNetBlock",
    "Conv2d": "Conv2d",
    "Linear": "Linear",
    "GroupNorm": "GroupNorm",
    "FourierFeatures": "FourierEmbedding",
}


def _record_of(module: nn.Module, module_src: str, init_kwargs: dict | None = None):
    """A module as EDM pickles it: persistent classes as records, ``ModuleDict`` as itself, children recursively."""
    children = {k: _record_of(v, module_src) for k, v in module._modules.items()}
    if isinstance(module, nn.ModuleDict):
        md = nn.ModuleDict()
        md.__dict__["_modules"] = children
        return md
    state = {
        "training": False,
        "_parameters": dict(module._parameters),
        "_buffers": dict(module._buffers),
        "_non_persistent_buffers_set": set(),
        "_forward_hooks": {},
        "_modules": children,
        "_init_args": (),
        "_init_kwargs": init_kwargs or {},
        "skip_scale": np.float64(math.sqrt(0.5)),
    }
    return _Record(
        {"type": "class", "version": 6, "module_src": module_src, "class_name": _EDM_CLASS[type(module).__name__], "state": state}
    )


def edm_snapshot(net: SongUNetPrecond, module_src: str = "") -> dict:
    """``dict(ema=EDMPrecond(...), ...)`` as EDM's training loop pickles it, from our network's weights."""
    c = net.config
    model = _record_of(
        net.model,
        module_src,
        {
            "img_resolution": c.resolution,
            "in_channels": c.channels + c.cond_channels,
            "out_channels": c.channels,
            "label_dim": 0,
            "model_channels": c.model_channels,
            "channel_mult": list(c.channel_mult),
            "channel_mult_emb": c.channel_mult_emb,
            "num_blocks": c.num_blocks,
            "attn_resolutions": list(c.attn_resolutions),
            "dropout": c.dropout,
            "augment_dim": c.augment_dim,
            "embedding_type": c.embedding_type,
            "channel_mult_noise": c.channel_mult_noise,
            "encoder_type": c.encoder_type,
            "decoder_type": "standard",
            "resample_filter": list(c.resample_filter),
        },
    )
    state = {
        "training": False,
        "_parameters": {},
        "_buffers": {},
        "_modules": {"model": model},
        "img_resolution": c.resolution,
        "img_channels": c.channels,
        "label_dim": 0,
        "use_fp16": False,
        "sigma_min": 0,
        "sigma_max": float("inf"),
        "sigma_data": 0.5,
    }
    ema = _Record({"type": "class", "version": 6, "module_src": module_src, "class_name": "EDMPrecond", "state": state})
    easy = sys.modules["dnnlib.util"].EasyDict(class_name="training.dataset.ImageFolderDataset", path="x.zip")
    return {"ema": ema, "loss_fn": None, "augment_pipe": None, "dataset_kwargs": easy}


def write_edm_pickle(path, net: SongUNetPrecond, module_src: str = "") -> None:
    """:func:`edm_snapshot` written with pickle's default protocol, as EDM's training loop does."""
    with open(path, "wb") as f:
        pickle.dump(edm_snapshot(net, module_src), f)


def _tiny(variant: str = "ddpmpp", channels: int = 1, seed: int = 0) -> SongUNetPrecond:
    torch.manual_seed(seed)
    net = SongUNetPrecond(resolution=32, channels=channels, **SIZES, **SongUNetPrecond.VARIANTS[variant]).eval()
    with torch.no_grad():  # the zero-initialised output layers would hide wrong weights
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("variant", ["ddpmpp", "ncsnpp"])
def test_edm_pickle_imports_with_the_same_output(tmp_path, edm_names, variant):
    net = _tiny(variant)
    marker = tmp_path / "code-ran"
    write_edm_pickle(tmp_path / "snap.pkl", net, module_src=f"open({str(marker)!r}, 'w').write('ran')\nimport os\nos.system('true')\n")
    loaded = load_edm_teacher(tmp_path / "snap.pkl")
    assert not marker.exists()
    assert (
        isinstance(loaded, SongUNetPrecond) and loaded.config.augment_dim == 9 and loaded.config.embedding_type == net.config.embedding_type
    )
    assert (loaded.sigma_min, loaded.sigma_max) == (0.002, 80.0)  # EDMPrecond's 0 / ∞ → EDM's sampler range
    sigma = torch.tensor([0.002, 0.1, 1.0, 80.0])
    x = torch.randn(4, 1, 32, 32) * sigma.view(-1, 1, 1, 1)
    with torch.no_grad():
        assert torch.equal(loaded(x, sigma), net(x, sigma))


def test_import_teacher_writes_a_run_that_resumes_into_distillation(tmp_path, edm_names, tiny_preset_text):
    net = _tiny()
    write_edm_pickle(tmp_path / "snap.pkl", net)
    preset_file = tmp_path / "p.toml"
    preset_file.write_text(tiny_preset_text)
    out = tmp_path / "run"
    assert (
        main(
            [
                "import-teacher",
                str(tmp_path / "snap.pkl"),
                "--preset",
                str(preset_file),
                "--out",
                str(out),
                *sets("eval.final_fid_n=0", "eval.models=['generator']", "eval.psnr_n=0", "distill.kimg=0.008"),
            ]
        )
        == 0
    )
    run = RunDir(out)
    preset = cfg.load(run.preset_path)
    assert preset.network.architecture == "ddpmpp" and preset.network.model_channels == 16 and preset.network.augment_dim == 9
    teacher = load_network(run.checkpoint(TEACHER_FINAL), FINAL_NETWORK[TEACHER_FINAL])
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), net.state_dict().values()))
    assert main(["run", "--resume", str(out)]) == 0
    assert run.read_status()["state"] == "done"
    kinds = [e["kind"] for e in run.read_events()]
    assert "teacher_imported" in kinds and not any(e["stage"] == "teacher" and e["kind"] == "progress" for e in run.read_events())
    assert (run.checkpoints / "generator-final").is_dir()


def test_import_teacher_refuses_a_mismatching_preset(tmp_path, edm_names, tiny_preset_text, capsys):
    write_edm_pickle(tmp_path / "snap.pkl", _tiny(channels=3))
    preset_file = tmp_path / "p.toml"
    preset_file.write_text(tiny_preset_text)
    assert main(["import-teacher", str(tmp_path / "snap.pkl"), "--preset", str(preset_file), "--out", str(tmp_path / "run")]) == 2
    assert "data.channels" in capsys.readouterr().err and not (tmp_path / "run").exists()


class _System:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"ema": _System(f"touch {marker}")}, f)
    with pytest.raises(EDMPickleError, match=r"refused: (posix|os)\.system"):
        read_pickle(path)
    assert main(["import-teacher", str(path), "--preset", "presets/quickstart.toml", "--out", str(tmp_path / "run")]) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_storage_payload_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    inner = io.BytesIO()
    torch.save(_System(f"touch {marker}"), inner)

    class _Storage:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (inner.getvalue(),)

    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"ema": _Storage()}, f)
    with pytest.raises(EDMPickleError, match="weights_only"):
        read_pickle(tmp_path / "evil.pkl")
    assert not marker.exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(class_name="VPPrecond"), "VPPrecond"),
        (lambda m: m.update(class_name="VEPrecond"), "VEPrecond"),
        (lambda m: m.update(class_name="Evil"), "'Evil'"),
        (lambda m: m["state"]["_modules"]["model"].meta.update(class_name="DhariwalUNet"), "DhariwalUNet"),
        (lambda m: m["state"]["_modules"]["model"].meta["state"]["_init_kwargs"].update(label_dim=10), "label_dim = 10"),
        (lambda m: m["state"]["_modules"]["model"].meta["state"]["_init_kwargs"].update(fancy=1), "fancy"),
    ],
)
def test_other_classes_and_options_are_refused_by_name(tmp_path, edm_names, edit, message):
    snapshot = edm_snapshot(_tiny())
    edit(snapshot["ema"].meta)
    with open(tmp_path / "snap.pkl", "wb") as f:
        pickle.dump(snapshot, f)
    with pytest.raises(EDMPickleError, match=message):
        load_edm_teacher(tmp_path / "snap.pkl")


def test_garbage_and_missing_files_are_named(tmp_path):
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(EDMPickleError, match="junk.pkl: not a readable pickle"):
        read_pickle(tmp_path / "junk.pkl")
    with pytest.raises(EDMPickleError, match="no such file"):
        read_pickle(tmp_path / "absent.pkl")
