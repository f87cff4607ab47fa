"""Issue 11, engine items 1–5: a model that is not finite is never "done"; presets with every float
finite and every path checked; public metric and measurement functions that check their inputs; crash
leftovers removed on resume; a warning when the launcher asked for more processes than the engine sees."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rsd_engine.cli import main
from rsd_engine.evaluate.metrics import extract_features, fid_from_features, kid_from_features, psnr_ssim, quantize
from rsd_engine.io import config as cfg
from rsd_engine.io.processes import process_shortfall, requested_processes
from rsd_engine.io.runs import RunDir
from rsd_engine.io.signals import STOP
from rsd_engine.operators import OPERATORS
from rsd_engine.operators.inpainting import apply_mask, further_mask
from rsd_engine.operators.measurement import Measurement
from rsd_engine.train import training
from rsd_engine.train.finite import NonFiniteError
from rsd_engine.train.stage import EMA, Stage, StageRunner


@pytest.fixture
def preset_file(tmp_path, tiny_preset_text):
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_preset_text)
    return path


def _assert_failed_without_final_results(run: RunDir, *needles: str) -> str:
    """The run ended ``failed`` with an error naming every needle; no final checkpoint, no metrics."""
    status = run.read_status()
    assert status["state"] == "failed", status
    for needle in needles:
        assert needle in status["error"], (needle, status["error"])
    assert not (run.checkpoints / "generator-final").exists()
    assert not run.metrics_path.exists()
    return status["error"]


# ---------------------------------------------------------------- 1. non-finite guards


def test_nan_teacher_checkpoint_fails_distillation_clearly(preset_file, tmp_path, finished_run):
    teacher_run = finished_run(tmp_path / "teacher")
    weights = teacher_run.checkpoints / "teacher-final" / "ema.safetensors"
    tensors = load_file(str(weights))
    first = next(iter(tensors))
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    with safe_open(str(weights), "pt") as f:
        metadata = f.metadata()
    save_file(tensors, str(weights), metadata=metadata)
    out = tmp_path / "run"
    assert main(["run", str(preset_file), "--out", str(out), "--set", f"teacher.checkpoint={teacher_run.path}"]) == 1
    _assert_failed_without_final_results(RunDir(out), "distill stage", "teacher checkpoint", "non-finite weights in ema", first)


def test_nan_in_the_weights_mid_run_fails_the_stage_before_any_checkpoint_of_it(preset_file, tmp_path, monkeypatch):
    real_step = training.teacher_step

    def poisoned(ctx, images_seen, **kwargs):
        stats = real_step(ctx, images_seen, **kwargs)
        if images_seen == 16:  # the second step of 16 images
            with torch.no_grad():
                next(ctx.unwrapped["net"].parameters()).fill_(float("nan"))
        return stats

    monkeypatch.setattr(training, "teacher_step", poisoned)
    out = tmp_path / "run"
    assert main(["run", str(preset_file), "--out", str(out)]) == 1
    run = RunDir(out)
    _assert_failed_without_final_results(run, "teacher stage at 0.032 kimg", "non-finite weights in net")
    assert not (run.checkpoints / "teacher-final").exists()
    assert not (run.checkpoints / "teacher-latest").exists()  # due at 0.032 kimg: never written with NaN weights


def _toy_stage(run: RunDir, lr: float, kimg: float = 0.02) -> Stage:
    """A one-layer stage: loss = mean (w·x)², Adam at ``lr``, batch 1, an EMA of the weights."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    x = torch.randn(8, 4)

    def step(ctx, images_seen):
        loss = ctx.nets["net"](x).pow(2).mean()
        ctx.update("net", loss)
        return {"loss": loss}

    ema = torch.nn.Linear(4, 1).requires_grad_(False)
    return Stage(
        name="teacher",
        kimg=kimg,
        batch_size=1,
        step=step,
        trained={"net": (net, torch.optim.Adam(net.parameters(), lr=lr))},
        emas={"ema": EMA(ema, "net", 0.001, 0.0)},
        checkpoint_every_kimg=1000,
        evaluate_every_kimg=1000,
        evaluate=lambda images_seen, seconds: None,
        final_checkpoint="toy-final",
    )


def _runner(run: RunDir) -> StageRunner:
    return StageRunner(
        accelerator=Accelerator(cpu=True), run_dir=run, seed=0, preset_toml="", state={}, stop=lambda: False, max_skipped_in_a_row=3
    )


def test_huge_learning_rate_skips_and_counts_steps_then_fails(tmp_path):
    run = RunDir.create(tmp_path / "run", "")
    with pytest.raises(NonFiniteError, match=r"teacher stage at 0.004 kimg: 3 steps in a row skipped .*net: loss = inf"):
        _runner(run).run(_toy_stage(run, lr=1e30))  # step 1 moves w to ~1e30: (w·x)² overflows from then on
    assert not (run.checkpoints / "toy-final").exists()
    progress = [e for e in run.read_events() if e["kind"] == "progress"]
    assert progress[-1]["skipped_steps"] == 3 and progress[-1]["loss"] is None  # counted; the NaN mean written as null


def test_a_finite_toy_stage_still_finishes(tmp_path):
    run = RunDir.create(tmp_path / "run", "")
    assert _runner(run).run(_toy_stage(run, lr=1e-3)) == 20
    assert (run.checkpoints / "toy-final" / "ema.safetensors").is_file()


def test_metrics_writer_and_quantiser_refuse_non_finite(tmp_path):
    run = RunDir.create(tmp_path / "run", "")
    with pytest.raises(ValueError, match=r"generator\.fid"):
        run.write_metrics({"generator": {"fid": float("nan"), "n": 4}, "teacher-full": {"fid": 3.0}})
    assert not run.metrics_path.exists()
    with pytest.raises(NonFiniteError):
        quantize(torch.full((1, 1, 2, 2), float("nan")))  # was 0: black images and a FID of ≈582


# ---------------------------------------------------------------- 2. presets


@pytest.mark.parametrize(
    "override",
    [
        "teacher.kimg=inf",
        "teacher.p_mean=nan",
        "network.sigma_data=inf",
        "teacher.lr_warmup_kimg=inf",
        "distill.alpha=nan",
        "corruption.noise_sigma=-inf",
        "teacher.lr=1.0",
        "teacher.p_mean=1e9",
    ],
)
def test_every_float_is_finite_and_in_a_physical_range(tiny_preset_text, override):
    with pytest.raises(cfg.PresetError) as err:
        cfg.loads(tiny_preset_text, [override])
    assert override.split("=")[0] in str(err.value)


def test_paths_are_checked_at_validation(preset_file, tmp_path, capsys):
    missing = tmp_path / "no-such-test-images"
    assert main(["validate", str(preset_file), "--set", f"data.eval_path={missing}"]) == 2
    err = capsys.readouterr().err
    assert "data.eval_path" in err and "no such folder" in err
    assert main(["validate", str(preset_file), "--set", f"teacher.checkpoint={tmp_path}"]) == 2
    assert "teacher.checkpoint" in capsys.readouterr().err
    assert main(["run", str(preset_file), "--out", str(tmp_path / "run"), "--set", f"data.eval_path={missing}"]) == 2
    assert not (tmp_path / "run").exists()  # refused before any work


def test_mri_data_path_may_be_one_volume_file_or_a_folder(tmp_path):
    """The MRI sources read a single volume file or a folder of them: both pass the path check, a missing
    path is named."""
    mri = (Path(__file__).resolve().parents[1] / "presets" / "mri-brain-r4.toml").read_text()
    volume = tmp_path / "brain.nii.gz"
    volume.write_bytes(b"")
    for path in (volume, tmp_path):
        cfg.check_paths(cfg.loads(mri, [f'data.path="{path}"']))
    with pytest.raises(cfg.PresetError, match="data.path.*no such file or folder"):
        cfg.check_paths(cfg.loads(mri, [f'data.path="{tmp_path / "nope.nii.gz"}"']))


def test_non_utf8_preset_is_a_one_line_file_error(tmp_path, capsys):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[run]\nname = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(cfg.PresetError) as err:
        cfg.load(path)
    assert err.value.problems[0][0] == "(file)" and "UTF-8" in str(err.value) and str(path) in str(err.value)
    assert main(["validate", str(path)]) == 2
    err_text = capsys.readouterr().err
    assert "Traceback" not in err_text and "(file)" in err_text


def test_bad_values_are_quoted_short(tiny_preset_text):
    with pytest.raises(cfg.PresetError) as err:
        cfg.loads(tiny_preset_text, ["run.name=" + "x" * 5000])
    assert len(str(err.value)) < 300 and "5002 characters" in str(err.value)
    with pytest.raises(cfg.PresetError) as err:
        cfg.loads(tiny_preset_text, ["corruption.operator=" + "y" * 5000])
    # the value is cut to 80 characters; the rest is the list of allowed operators, which grew with plug-ins
    assert "5002 characters" in str(err.value) and len(str(err.value)) < 600


def test_set_accepts_nested_operator_keys(tiny_preset_text):
    p = cfg.loads(tiny_preset_text, ["corruption.operator=random_inpainting", "corruption.random_inpainting.p=0.8"])
    assert p.corruption.random_inpainting.p == 0.8
    with pytest.raises(cfg.PresetError, match=r"corruption\.random_inpainting\.p"):
        cfg.loads(tiny_preset_text, ["corruption.random_inpainting.p=1.5"])


# ---------------------------------------------------------------- 3. public functions check their inputs


def test_metrics_take_float_images_or_raise_type_error():
    u8 = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    with pytest.raises(TypeError, match="float images"):
        psnr_ssim(u8, u8)  # was (inf, 1.0)
    with pytest.raises(TypeError):
        quantize(u8)
    with pytest.raises(TypeError, match="uint8"):
        extract_features(torch.nn.Identity(), u8.float())
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with pytest.raises(NonFiniteError):
        psnr_ssim(x * float("nan"), x)
    with pytest.raises(ValueError, match="shape"):
        psnr_ssim(x, x[:1])
    feats = torch.randn(4, 8)
    with pytest.raises(NonFiniteError):
        fid_from_features(feats, feats * float("inf"))
    with pytest.raises(TypeError):
        kid_from_features(feats.to(torch.int64), feats)
    psnr, _ = psnr_ssim(x, x.clamp(-0.9, 0.9))
    assert math.isfinite(psnr)


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf")])
def test_measurement_refuses_a_bad_sigma(sigma):
    with pytest.raises(ValueError, match="noise_sigma"):
        Measurement(OPERATORS["identity"](1, 8), sigma)


def test_masks_must_be_binary_and_images_float():
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="neither 0 nor 1"):
        apply_mask(x, torch.full((2, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="neither 0 nor 1"):
        further_mask(torch.full((2, 1, 4, 4), float("nan")), 0.1)
    assert torch.equal(apply_mask(x + 1, torch.ones(2, 1, 4, 4)), x + 1)
    with pytest.raises(TypeError):
        Measurement(OPERATORS["identity"](1, 4), 0.1)(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


# ---------------------------------------------------------------- 4, 5. leftovers and processes (one step each)


@pytest.fixture
def stop_after_first_step():
    """The stop flag set before the run: the teacher stops (with a checkpoint) after its first step."""
    STOP.set()
    yield
    STOP.clear()


def test_resume_removes_partial_writes(preset_file, tmp_path, tiny_preset, stop_after_first_step):
    run = RunDir.create(tmp_path / "run", cfg.dumps(tiny_preset))
    partial = run.checkpoints / ".teacher-latest.tmp-abc123"
    partial.mkdir()
    (partial / "net.safetensors").write_bytes(b"")
    (run.checkpoints / ".distill-latest.tmp-x").mkdir()
    (run.path / ".status.json.k2j3.tmp").write_text("{")
    (run.checkpoints / "teacher-latest.old").mkdir()  # a swap's fallback: kept
    assert main(["run", "--resume", str(run.path)]) == 130
    assert not partial.exists() and not (run.checkpoints / ".distill-latest.tmp-x").exists()
    assert not (run.path / ".status.json.k2j3.tmp").exists()
    assert not list(run.checkpoints.glob(".*")) and "interrupted write" in run.log_path.read_text()


def test_fewer_processes_than_launched_is_a_warning(preset_file, tmp_path, monkeypatch, stop_after_first_step):
    argv = ["/usr/bin/python3", "/usr/local/bin/accelerate", "launch", "--cpu", "--num_processes", "2", "-m", "rsd_engine", "run"]
    assert requested_processes({}, argv) == (2, "accelerate launch --num_processes 2")
    assert requested_processes({"WORLD_SIZE": "2"}, []) == (2, "WORLD_SIZE")
    assert requested_processes({}, ["python", "train.py", "--num_processes", "4"]) is None  # not a launcher
    assert process_shortfall(2, 1, {"WORLD_SIZE": "2"}, []) is None
    assert "accelerate.num_processes = 4" in process_shortfall(1, 4, {}, [])

    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")  # what `accelerate launch --cpu --num_processes 2` sets
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "run"
    assert main(["run", str(preset_file), "--out", str(out)]) == 130
    run = RunDir(out)
    warning = run.read_status()["warnings"][0]
    assert "this run has 1" in warning and "--multi_gpu" in warning
    assert warning in run.log_path.read_text()
