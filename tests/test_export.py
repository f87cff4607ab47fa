"""Networks as diffusers models and the export of a run as a diffusers pipeline folder: save_pretrained /
from_pretrained round trips, old checkpoints, ``rsd-engine export`` of a real tiny run reproduced in a
fresh interpreter, the bare UNet with diffusers alone, the refusals, and the workbench's export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_PRESET
from PIL import Image
from safetensors.torch import load_file, safe_open, save_file

from rsd_engine import assembly
from rsd_engine.cli import main
from rsd_engine.evaluate.generate import ModelSampler, latents
from rsd_engine.evaluate.sampling import one_step_generate
from rsd_engine.export import ExportError, export_network, export_run
from rsd_engine.io import config as cfg
from rsd_engine.io.runs import GENERATOR_FINAL, RunDir
from rsd_engine.models.networks import EDMPrecond
from rsd_engine.operators import PixelMask
from rsd_engine.pipelines import RSDHeunPipeline, RSDOneStepPipeline
from rsd_engine.train.checkpoints import load_checkpoint, load_network, save_checkpoint

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def _tiny_net(cond: int = 0, seed: int = 0) -> EDMPrecond:
    torch.manual_seed(seed)
    return EDMPrecond(resolution=8, channels=1, cond_channels=cond, block_out_channels=(8, 16), attention_levels=[1], norm_groups=4).eval()


def _fresh(code: str, *args: str) -> str:
    """Run ``code`` in a new interpreter (hub access off); returns its stdout, fails the test on an error."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, env=OFFLINE)
    assert out.returncode == 0, out.stderr
    return out.stdout


# ------------------------------------------------------------------------------------------------
# EDMPrecond as a diffusers model
def test_save_pretrained_from_pretrained_is_bitwise(tmp_path):
    net = _tiny_net(cond=1)
    net.save_pretrained(tmp_path / "net")
    back = EDMPrecond.from_pretrained(tmp_path / "net")
    assert back.differences({k: v for k, v in net.config.items() if not k.startswith("_")}) == {}
    for key, value in net.state_dict().items():
        assert torch.equal(value, back.state_dict()[key]), key
    x, mask = torch.randn(3, 1, 8, 8), (torch.rand(3, 1, 8, 8) > 0.5).float()
    sigma = torch.tensor([0.05, 1.3, 40.0])
    with torch.no_grad():
        assert torch.equal(net(x, sigma, mask), back(x, sigma, mask))
    assert (back.sigma_data, back.sigma_min, back.sigma_max, back.cond_channels) == (0.5, 0.002, 80.0, 1)


def test_checkpoints_store_the_diffusers_config_and_old_checkpoints_still_load(tmp_path):
    net = _tiny_net()
    save_checkpoint(tmp_path / "ck", {"ema": net}, {"images_seen": 1}, "")
    with safe_open(str(tmp_path / "ck" / "ema.safetensors"), framework="pt") as f:
        stored = json.loads(f.metadata()["config"])
    assert stored["_class_name"] == "EDMPrecond" and stored["block_out_channels"] == [8, 16]
    # a checkpoint written before the networks were diffusers models: the arguments under "network_config"
    legacy = {k: v for k, v in stored.items() if not k.startswith("_")}
    file = tmp_path / "ck" / "ema.safetensors"
    save_file(load_file(str(file)), str(file), metadata={"network_config": json.dumps(legacy)})
    old = load_network(tmp_path / "ck", "ema")
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(old(x, 0.7), net(x, 0.7))
    save_file(load_file(str(file)), str(file), metadata={})
    with pytest.raises(ValueError, match="no network config"):
        load_checkpoint(tmp_path / "ck").build("ema")


def test_distillation_refuses_a_teacher_of_another_network(tmp_path, finished_run):
    from rsd_engine.train.training import rsd_stage

    run = finished_run(tmp_path / "run")
    wider = cfg.loads(TINY_PRESET, ["network.block_out_channels=[16, 48]"])
    objective = assembly.build_objective(wider, assembly.build_measurement(wider))
    with pytest.raises(ValueError, match=r"block_out_channels.*\[16, 32\].*\[16, 48\]"):
        rsd_stage(wider, run.checkpoint("teacher-final"), objective, lambda *a: None)
    same = cfg.loads(TINY_PRESET)
    assert (
        rsd_stage(
            same, run.checkpoint("teacher-final"), assembly.build_objective(same, assembly.build_measurement(same)), lambda *a: None
        ).name
        == "distill"
    )


def test_mask_pipeline_needs_the_mask_and_equals_the_engine(tmp_path):
    net = _tiny_net(cond=1)
    pipe = RSDOneStepPipeline(net.unet, sigma_init=2.5, cond_channels=1)
    mask = (torch.rand(4, 1, 8, 8) > 0.3).float()
    with pytest.raises(ValueError, match="pass mask"):
        pipe(seeds=range(4))
    with pytest.raises(ValueError, match="expected"):
        pipe(seeds=range(4), mask=mask[:2])
    got = pipe(seeds=range(4), mask=mask, output_type="pt").images
    with torch.no_grad():
        assert torch.equal(got, one_step_generate(net, latents(range(4), (1, 8, 8)), 2.5, PixelMask(mask)))
    with pytest.raises(ValueError, match="channels"):
        RSDOneStepPipeline(net.unet, cond_channels=0)


def test_pipeline_latent_sources_and_output_types():
    net = _tiny_net()
    pipe = RSDOneStepPipeline(net.unet, sigma_init=2.5)
    by_seeds = pipe(seeds=[5, 6], output_type="pt").images
    by_generators = pipe(generator=[torch.Generator().manual_seed(s) for s in (5, 6)], output_type="pt").images
    assert torch.equal(by_seeds, by_generators)
    arrays = pipe(seeds=[5, 6], output_type="np").images
    assert arrays.shape == (2, 8, 8, 1) and arrays.dtype.name == "float32" and 0 <= arrays.min() and arrays.max() <= 1
    images = pipe(seeds=[5, 6]).images
    assert [im.size for im in images] == [(8, 8), (8, 8)] and images[0].mode == "L"
    assert np.array_equal(np.asarray(images[0]), (arrays[0, :, :, 0] * 255).round().astype(np.uint8))  # the same quantised pixels
    assert len(pipe(batch_size=3, generator=torch.Generator().manual_seed(0)).images) == 3
    for bad in (
        {"seeds": [1], "latents": torch.zeros(1, 1, 8, 8)},
        {"seeds": [1, 2], "batch_size": 3},
        {"output_type": "latent"},
        {"latents": torch.zeros(1, 2, 8, 8)},
        {"seeds": []},
    ):
        with pytest.raises(ValueError):
            pipe(**bad)
    heun = RSDHeunPipeline(net.unet, num_inference_steps=3, stop_sigma=0.2)
    with pytest.raises(ValueError, match="≥ 2"):
        heun(seeds=[0], num_inference_steps=1)


# ------------------------------------------------------------------------------------------------
# a real tiny run, exported
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny run trained end to end with the CLI (teacher → distillation → evaluation without FID and
    PSNR, the slow part on 2 cores; the model card's metrics are checked on a written metrics.json)."""
    root = tmp_path_factory.mktemp("export")
    preset = root / "tiny.toml"
    preset.write_text(TINY_PRESET)
    assert main(["run", str(preset), "--out", str(root / "run"), "--set", "eval.final_fid_n=0", "--set", "eval.psnr_n=0"]) == 0
    return root / "run"


def test_exported_generator_reproduces_rsd_engine_sample_in_a_fresh_interpreter(tiny_run, tmp_path):
    out = tmp_path / "gen"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"model_index.json", "unet", "README.md", "preset.toml"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    grid = tmp_path / "sample.png"
    assert main(["sample", str(tiny_run), "--n", "8", "--seed-start", "3", "--out", str(grid)]) == 0  # one engine batch (eval.batch_size 8)
    code = (
        "import sys\n"
        "from rsd_engine.evaluate.grids import save_grid\n"
        "from rsd_engine.pipelines import RSDOneStepPipeline\n"
        "pipe = RSDOneStepPipeline.from_pretrained(sys.argv[1])\n"
        "save_grid(pipe(seeds=range(3, 11), output_type='pt').images, sys.argv[2])\n"
        "for i, im in enumerate(pipe(seeds=range(3, 11)).images):\n"
        "    im.save(f'{sys.argv[3]}/{i}.png')\n"
    )
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    _fresh(code, str(out), str(tmp_path / "pipe.png"), str(tiles))
    assert (tmp_path / "pipe.png").read_bytes() == grid.read_bytes()
    with Image.open(grid) as g:
        cols, side = 3, 32  # ⌈√8⌉ columns, 1-pixel padding
        for i in range(8):
            r, c = divmod(i, cols)
            left, top = 1 + c * (side + 1), 1 + r * (side + 1)
            with Image.open(tiles / f"{i}.png") as tile:
                assert tile.tobytes() == g.crop((left, top, left + side, top + side)).tobytes(), i


def test_bare_unet_loads_with_diffusers_alone(tiny_run, tmp_path):
    out = tmp_path / "gen"
    export_run(tiny_run, out)
    code = (
        "import sys, torch, diffusers\n"
        "unet = diffusers.UNet2DModel.from_pretrained(sys.argv[1], subfolder='unet')\n"
        "assert not [m for m in sys.modules if m.startswith('rsd_engine')]\n"
        "print(tuple(unet(torch.zeros(1, 1, 32, 32), 0.25).sample.shape))\n"
    )
    assert "(1, 1, 32, 32)" in _fresh(code, str(out))
    stored = load_file(str(tiny_run / "checkpoints" / "generator-final" / "generator_ema.safetensors"))
    exported = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    assert exported.keys() == {k.removeprefix("unet.") for k in stored}
    assert all(torch.equal(exported[k.removeprefix("unet.")], v) for k, v in stored.items())


def test_model_card_states_preset_kimg_and_final_metrics(tiny_run, tmp_path, finished_run):
    out = export_run(tiny_run, tmp_path / "gen")
    card = (out / "README.md").read_text()
    assert "library_name: diffusers" in card and "`identity`" in card and "σ_c = 0.2" in card
    assert "0.064 kimg (64 images seen)" in card and "0.032 kimg (32 images seen)" in card and "σ_init = 2.5" in card
    assert "| generator | — |" in card and "final FID disabled" in card  # this run measured no FID, and the card says so
    assert "at most 8 seeds" in card and "RSDOneStepPipeline.from_pretrained" in card
    assert (out / "preset.toml").read_text() == RunDir(tiny_run).preset_path.read_text()
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "RSDOneStepPipeline" and index["sigma_init"] == 2.5 and index["unet"] == ["diffusers", "UNet2DModel"]

    measured = finished_run(tmp_path / "measured", TINY_PRESET + '[corruption]\noperator = "gaussian_blur"\n')
    rec = {
        "model": "generator",
        "fid": 87.654,
        "kid": 0.0123,
        "n": 500,
        "seeds": [0, 499],
        "weights": "generator EMA",
        "nfe": 1,
        "images_per_s": 238.0,
        "reference": "fashion-mnist test split (clean, n=1000)",
        "proximal_fid": 57.7,
        "proximal_reference": "corrupted training measurements (n=1000)",
    }
    measured.write_metrics({"generator": rec})
    card = (export_run(measured.path, tmp_path / "measured-gen") / "README.md").read_text()
    assert "| generator | 87.65 | 0.0123 | 500 | 0–499 | fashion-mnist test split (clean, n=1000) | generator EMA | 1 | 238.0 |" in card
    assert "57.70" in card and "`gaussian_blur` (kernel_size = 9, std = 2.0)" in card


def test_teacher_and_raw_exports(tiny_run, tmp_path):
    out = export_run(tiny_run, tmp_path / "teacher", model="teacher")
    pipe = RSDHeunPipeline.from_pretrained(out)
    preset = cfg.load(RunDir(tiny_run).preset_path)
    sampler = ModelSampler.from_preset(preset)
    teacher = load_network(tiny_run / "checkpoints" / "teacher-final", "ema")
    for model, stop in (("teacher-truncated", None), ("teacher-full", 0)):
        want = sampler.generate(model, teacher, range(4)).images
        assert torch.equal(pipe(seeds=range(4), stop_sigma=stop, output_type="pt").images, want), model
    assert pipe.config.num_inference_steps == 3 and pipe.config.stop_sigma == 0.2
    raw = export_run(tiny_run, tmp_path / "raw", weights="raw")
    stored = load_file(str(tiny_run / "checkpoints" / "distill-latest" / "generator.safetensors"))
    exported = load_file(str(raw / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(exported[k.removeprefix("unet.")], v) for k, v in stored.items())
    assert "raw weights of the last step" in (raw / "README.md").read_text()


# ------------------------------------------------------------------------------------------------
# refusals
def test_refusals_are_clear_and_leave_nothing_behind(tmp_path, capsys, finished_run):
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "holds no run" in capsys.readouterr().err
    unfinished = RunDir.create(tmp_path / "unfinished", TINY_PRESET)
    assert main(["export", str(unfinished.path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no final generator" in err and "--resume" in err
    assert not (tmp_path / "x").exists()

    run = finished_run(tmp_path / "run")
    with pytest.raises(ExportError, match="raw generator weights of the last step are not kept"):
        export_run(run.path, tmp_path / "x", weights="raw")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    assert main(["export", str(run.path), "--out", str(busy)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--force" in err
    assert [p.name for p in busy.iterdir()] == ["mine.txt"]
    assert main(["export", str(run.path), "--out", str(busy), "--force"]) == 0
    assert (busy / "model_index.json").is_file() and not (busy / "mine.txt").exists()
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    for out, message in (
        (run.path, "run folder"),
        (tmp_path, "run folder"),
        (run.checkpoints / "g", "checkpoints/"),
        (run.samples, "samples/"),
        (tmp_path / "file", "not a folder"),
        (tmp_path / "link", "symbolic link"),
    ):
        with pytest.raises(ExportError, match=message):
            export_run(run.path, out, force=True)
    assert (run.checkpoints / "generator-final" / "state.json").is_file()
    assert not (tmp_path / "elsewhere").exists()


def test_an_mri_run_is_refused_with_a_message_and_nothing_written(tmp_path, finished_run, tiny_mri_preset_text, capsys):
    """multicoil_mri networks take P_Ã(·) through a line mask and coil maps, which the pipelines do not compute."""
    run = finished_run(tmp_path / "mri", tiny_mri_preset_text)
    assert load_checkpoint(run.checkpoint(GENERATOR_FINAL)).build("generator_ema").config.cond_kind == "kspace_mask"
    target = tmp_path / "out"
    assert main(["export", str(run.path), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "multicoil_mri" in err and "rsd-engine sample" in err and "preset.toml" in err
    assert not target.exists()
    with pytest.raises(ExportError, match="cond_kind"):
        export_network(load_checkpoint(run.checkpoint(GENERATOR_FINAL)).build("generator_ema"), "generator", None)


def test_a_failed_export_leaves_nothing_half_written(tmp_path, monkeypatch, finished_run):
    run = finished_run(tmp_path / "run")

    def broken(self, folder, **kwargs):
        (Path(folder) / "model_index.json").write_text("{")
        raise OSError("disk full")

    monkeypatch.setattr(RSDOneStepPipeline, "save_pretrained", broken)
    target = tmp_path / "new" / "deeper" / "gen"
    with pytest.raises(ExportError, match="disk full"):  # one line naming the folder (issue 19), not a traceback
        export_run(run.path, target)
    assert not (tmp_path / "new").exists()
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "model_index.json").write_text("{}")
    with pytest.raises(ExportError):
        export_run(run.path, earlier, force=True)
    assert [p.name for p in earlier.iterdir()] == ["model_index.json"] and (earlier / "model_index.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier", "run"]


# ------------------------------------------------------------------------------------------------
# the workbench
def test_workbench_export_writes_inside_the_run_and_reports_errors(tmp_path, finished_run):
    from workbench.api import Workbench, WorkbenchError

    runs = tmp_path / "runs"
    finished_run(runs / "done-run")
    RunDir.create(runs / "half-run", TINY_PRESET)
    wb = Workbench(runs, tmp_path / "presets")
    try:
        info = wb.export("done-run")
        assert info == {
            "run": "done-run",
            "model": "generator",
            "weights": "ema",
            "folder": str(runs.resolve() / "done-run" / "export-generator"),
        }
        assert (Path(info["folder"]) / "unet" / "config.json").is_file()
        with pytest.raises(WorkbenchError, match="replace"):
            wb.export("done-run")
        assert wb.export("done-run", replace=True)["folder"] == info["folder"]
        with pytest.raises(WorkbenchError, match="no final generator"):
            wb.export("half-run")
        for bad in (("../done-run",), ("done-run", "fake-score"), ("nope",)):
            with pytest.raises(WorkbenchError):
                wb.export(*bad)
    finally:
        wb.close()
