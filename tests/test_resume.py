"""Exact resume (docs/method.md §5): N steps straight equal N/2 + stop + resume + N/2, bit for bit, for
the teacher and the distillation stage, EMA and optimiser states included."""

import pytest
import torch
from safetensors.torch import load_file

from rsd_engine import config as cfg
from rsd_engine.experiment import Experiment, make_accelerator
from rsd_engine.runs import RunDir
from rsd_engine.signals import StopRequested


def _pipeline(preset, path):
    run = RunDir(path) if RunDir(path).exists() else RunDir.create(path, cfg.dumps(preset))
    return Experiment(preset, run, make_accelerator(preset))


def _stop_after(experiment, steps):
    count = {"n": 0}

    def stop():
        count["n"] += 1
        return count["n"] >= steps

    experiment.stop_requested = stop


def _weights(path):
    return load_file(str(path))


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_teacher_and_distill_resume_bitwise(tiny_preset, tmp_path):
    preset = cfg.loads(cfg.dumps(tiny_preset), ["teacher.checkpoint_every_kimg=1000", "distill.checkpoint_every_kimg=1000", "network.dropout=0.1"])
    straight = _pipeline(preset, tmp_path / "straight")
    straight.train_teacher()
    straight.distill()

    split = _pipeline(preset, tmp_path / "split")
    _stop_after(split, 2)  # teacher: 4 steps of 16 images; stop after 2
    with pytest.raises(StopRequested):
        split.train_teacher()
    assert not (split.run.checkpoints / "teacher-final").exists()
    resumed = _pipeline(preset, tmp_path / "split")
    resumed.train_teacher()
    for name in ("ema",):
        _assert_same(_weights(straight.run.checkpoints / "teacher-final" / f"{name}.safetensors"),
                     _weights(resumed.run.checkpoints / "teacher-final" / f"{name}.safetensors"))
    _assert_same(_weights(straight.run.checkpoints / "teacher-latest" / "net.safetensors"),
                 _weights(resumed.run.checkpoints / "teacher-latest" / "net.safetensors"))

    _stop_after(resumed, 2)  # distill: 4 iterations of 8 images; stop after 2
    with pytest.raises(StopRequested):
        resumed.distill()
    again = _pipeline(preset, tmp_path / "split")
    again.distill()
    for name in ("generator", "fake_score", "generator_ema"):
        _assert_same(_weights(straight.run.checkpoints / "distill-latest" / f"{name}.safetensors"),
                     _weights(again.run.checkpoints / "distill-latest" / f"{name}.safetensors"))


def test_checkpoint_loads_in_a_fresh_interpreter(tiny_preset, tmp_path):
    import subprocess
    import sys

    pipe = _pipeline(tiny_preset, tmp_path / "run")
    pipe.train_teacher()
    code = (
        "import sys, torch; from rsd_engine.checkpoints import load_network;"
        "net = load_network(sys.argv[1], 'ema'); x = torch.zeros(1, 1, 32, 32);"
        "print(tuple(net(x, 1.0).shape))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run" / "checkpoints" / "teacher-final")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(1, 1, 32, 32)" in out.stdout


def test_interrupted_checkpoint_swap_falls_back_to_previous(tmp_path):
    from rsd_engine.checkpoints import checkpoint_exists, load_checkpoint, save_checkpoint

    net = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "ck", {"net": net}, {"images_seen": 1}, "")
    (tmp_path / "ck").rename(tmp_path / "ck.old")  # as if the crash came between the two renames
    assert checkpoint_exists(tmp_path / "ck")
    assert load_checkpoint(tmp_path / "ck").state["images_seen"] == 1


def test_resume_takes_the_edited_learning_rate_not_the_saved_one(tmp_path):
    """A distillation resumed after editing its learning rate must use the new one (the optimiser's
    saved state would otherwise bring the old one back), while Adam's moments are restored."""
    from rsd_engine.checkpoints import load_checkpoint, save_checkpoint

    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.0, 0.999))
    net(torch.ones(1, 2)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "ck", {"net": net}, {"images_seen": 1}, "", {"net": opt})
    edited = torch.optim.Adam(net.parameters(), lr=3e-5, betas=(0.9, 0.99))
    load_checkpoint(tmp_path / "ck").load_optimizers({"net": edited})
    group = edited.param_groups[0]
    assert group["lr"] == 3e-5 and group["betas"] == (0.9, 0.99)
    saved_moment = opt.state[next(iter(net.parameters()))]["exp_avg_sq"]
    assert torch.equal(edited.state[next(iter(net.parameters()))]["exp_avg_sq"], saved_moment)
