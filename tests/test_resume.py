"""Exact resume (docs/method.md §5): N steps straight equal N/2 + stop + resume + N/2, bit for bit, for
the teacher and the distillation stage, EMA and optimiser states included."""

import pytest
import torch
from safetensors.torch import load_file

from rsd_engine.experiment import Experiment, make_accelerator
from rsd_engine.io import config as cfg
from rsd_engine.io.runs import RunDir
from rsd_engine.io.signals import StopPolicy, StopRequested


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
    preset = cfg.loads(
        cfg.dumps(tiny_preset), ["teacher.checkpoint_every_kimg=1000", "distill.checkpoint_every_kimg=1000", "network.dropout=0.1"]
    )
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
        _assert_same(
            _weights(straight.run.checkpoints / "teacher-final" / f"{name}.safetensors"),
            _weights(resumed.run.checkpoints / "teacher-final" / f"{name}.safetensors"),
        )
    _assert_same(
        _weights(straight.run.checkpoints / "teacher-latest" / "net.safetensors"),
        _weights(resumed.run.checkpoints / "teacher-latest" / "net.safetensors"),
    )

    _stop_after(resumed, 2)  # distill: 4 iterations of 8 images; stop after 2
    with pytest.raises(StopRequested):
        resumed.distill()
    again = _pipeline(preset, tmp_path / "split")
    again.distill()
    for name in ("generator", "fake_score", "generator_ema"):
        _assert_same(
            _weights(straight.run.checkpoints / "distill-latest" / f"{name}.safetensors"),
            _weights(again.run.checkpoints / "distill-latest" / f"{name}.safetensors"),
        )


def test_checkpoint_loads_in_a_fresh_interpreter(tiny_preset, tmp_path):
    import subprocess
    import sys

    pipe = _pipeline(tiny_preset, tmp_path / "run")
    pipe.train_teacher()
    code = (
        "import sys, torch; from rsd_engine.train.checkpoints import load_network;"
        "net = load_network(sys.argv[1], 'ema'); x = torch.zeros(1, 1, 32, 32);"
        "print(tuple(net(x, 1.0).shape))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run" / "checkpoints" / "teacher-final")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "(1, 1, 32, 32)" in out.stdout


def test_interrupted_checkpoint_swap_falls_back_to_previous(tmp_path):
    from rsd_engine.train.checkpoints import checkpoint_exists, load_checkpoint, save_checkpoint

    net = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "ck", {"net": net}, {"images_seen": 1}, "")
    (tmp_path / "ck").rename(tmp_path / "ck.old")  # as if the crash came between the two renames
    assert checkpoint_exists(tmp_path / "ck")
    assert load_checkpoint(tmp_path / "ck").state["images_seen"] == 1


def test_resume_takes_the_edited_learning_rate_not_the_saved_one(tmp_path):
    """A distillation resumed after editing its learning rate must use the new one (the optimiser's
    saved state would otherwise bring the old one back), while Adam's moments are restored."""
    from rsd_engine.train.checkpoints import load_checkpoint, save_checkpoint

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


# --------------------------------------------------------------------------------------------
# a stop signal during a live evaluation (the workbench's Stop sends SIGTERM to the whole run)
@pytest.fixture
def stop_flag():
    """The engine's process-wide stop flag (what SIGTERM sets), cleared before and after."""
    from rsd_engine.io.signals import STOP

    STOP.clear()
    yield STOP
    STOP.clear()


def _evaluating_teacher(tiny_preset, path, *extra):
    """A tiny teacher run whose only live evaluation comes after its second step (32 of 64 images)
    and whose only scheduled checkpoint is the last one."""
    preset = cfg.loads(
        cfg.dumps(tiny_preset),
        ["eval.teacher_every_kimg=0.032", "teacher.checkpoint_every_kimg=1000", "eval.grid_n=4", "eval.batch_size=2", *extra],
    )
    return _pipeline(preset, path)


def _assert_stopped_at_the_evaluation(exp):
    from rsd_engine.train.checkpoints import load_checkpoint

    assert load_checkpoint(exp.run.latest("teacher")).state["images_seen"] == 32  # checkpoint of the evaluated step
    assert not (exp.run.checkpoints / "teacher-final").exists()
    assert not [e for e in exp.run.read_events() if e["kind"] == "fid"], "an interrupted evaluation recorded a FID"


def test_stop_signal_interrupts_the_live_sampling_between_batches(tiny_preset, tmp_path, monkeypatch, stop_flag):
    from rsd_engine.evaluate import generate

    exp = _evaluating_teacher(tiny_preset, tmp_path / "run")
    batches = []
    heun = generate.heun_sample

    def heun_then_signal(*args, **kwargs):
        batches.append(1)
        stop_flag.set()  # SIGTERM arrives while the first of two grid batches is drawn
        return heun(*args, **kwargs)

    monkeypatch.setattr(generate, "heun_sample", heun_then_signal)
    with pytest.raises(StopRequested):
        exp.train_teacher()
    assert len(batches) == 1, "sampling went on after the stop signal"
    _assert_stopped_at_the_evaluation(exp)
    assert not [e for e in exp.run.read_events() if e["kind"] == "grid"]


def test_stop_signal_interrupts_the_live_fid_features_between_batches(tiny_preset, tmp_path, monkeypatch, stop_flag):
    from rsd_engine.evaluate import evaluation

    weights = tmp_path / "fake-inception.pt"
    weights.write_bytes(b"fake")

    class SignalledFeatures(torch.nn.Module):
        """Stands in for TF-Inception: zero features, and SIGTERM arrives during the first batch."""

        num_features = 2048

        def __init__(self):
            super().__init__()
            self.weights, self.calls = weights, 0

        def forward(self, images):
            self.calls += 1
            stop_flag.set()
            return torch.zeros(images.shape[0], self.num_features)

    net = SignalledFeatures()
    monkeypatch.setattr(evaluation, "load_feature_network", lambda path=None: net)
    exp = _evaluating_teacher(tiny_preset, tmp_path / "run", "eval.live_fid_n=4", "eval.reference_n=8")
    with pytest.raises(StopRequested):
        exp.train_teacher()
    assert net.calls == 1, "feature extraction went on after the stop signal"
    _assert_stopped_at_the_evaluation(exp)


class _Trigger:
    """Accelerate's trigger between processes, as seen from one of them: ``others`` says whether another
    process set its trigger; ``checks`` counts the collectives this process entered."""

    def __init__(self, others=False):
        self.others, self.mine, self.checks = others, False, 0

    def set_trigger(self):
        self.mine = True

    def check_trigger(self):
        self.checks += 1
        return self.mine or self.others


def test_stop_policy_agree_turns_local_stops_into_one_collective_decision():
    import threading

    flag = threading.Event()
    quiet = StopPolicy(_Trigger(), flag)
    with quiet.agree():  # nobody stopped: one collective, no raise
        assert not quiet.local()
    assert quiet.accelerator.checks == 1 and not quiet.agreed()
    stopped_here = StopPolicy(_Trigger(), flag)
    with pytest.raises(StopRequested), stopped_here.agree():
        raise StopRequested()  # a local check inside the block: held until every process has agreed
    assert stopped_here.accelerator.checks == 1 and stopped_here.accelerator.mine
    elsewhere = StopPolicy(_Trigger(others=True), flag)
    with pytest.raises(StopRequested), elsewhere.agree():  # another process stopped: this one raises too
        pass
    flag.set()
    assert StopPolicy(_Trigger(), flag).local()  # this process's own flag, no collective
    failing = StopPolicy(_Trigger(), flag)
    with pytest.raises(ValueError), failing.agree():
        raise ValueError("not a stop")
    assert failing.accelerator.checks == 0  # other errors pass through without the collective
