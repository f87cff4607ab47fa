"""The command line end to end on tiny presets: run, validate, sample, evaluate, stop/resume, and a
two-process run over gloo (``accelerate launch --multi_gpu --num_processes 2`` on CPU)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import sets

from rsd_engine.cli import main
from rsd_engine.io.runs import RunDir

#: ``accelerate launch`` of ``rsd-engine run`` on two CPU processes (gloo); the preset and options follow.
TWO_PROCESS_RUN = (
    "accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no -m rsd_engine run".split()
)


@pytest.fixture
def preset_file(tmp_path, tiny_preset_text):
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_preset_text)
    return path


def test_validate_prints_effective_preset(preset_file, capsys):
    assert main(["validate", str(preset_file), "--set", "distill.alpha=1.0"]) == 0
    assert "alpha = 1.0" in capsys.readouterr().out


def test_validate_names_the_bad_field(preset_file, capsys):
    assert main(["validate", str(preset_file), "--set", "distill.alpha=-1"]) == 2
    err = capsys.readouterr().err
    assert "distill.alpha" in err and "-1" in err


def test_tiny_run_end_to_end_then_sample_and_deterministic_evaluate(preset_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(preset_file), "--out", str(out)]) == 0
    run = RunDir(out)
    assert run.read_status()["state"] == "done"
    assert "[teacher]" in run.preset_path.read_text()
    metrics = run.read_metrics()
    for model in ("teacher-full", "teacher-truncated", "generator"):
        rec = metrics[model]
        assert rec["n"] == 4 and rec["fid"] is not None and rec["kid"] is not None
        assert rec["seeds"] == [0, 3] and "reference" in rec
    assert metrics["generator"]["nfe"] == 1 and metrics["teacher-full"]["nfe"] == 5
    assert metrics["generator"]["weights"] == "generator EMA" and "proximal_fid" in metrics["generator"]
    assert "corrupted training" in metrics["generator"]["proximal_reference"]
    assert "psnr" in metrics["teacher-denoiser"]
    for grid in ("measurements", "clean", "teacher-full", "teacher-truncated", "generator"):
        assert (run.samples / f"{grid}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for ck in ("teacher-final", "generator-final", "teacher-latest", "distill-latest"):
        assert (run.checkpoints / ck / "state.json").is_file()
    kinds = {e["kind"] for e in run.read_events()}
    assert {"progress", "checkpoint", "metrics"} <= kinds
    assert "teacher" in run.log_path.read_text()

    assert main(["sample", str(out), "--n", "6", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()

    first = metrics["generator"]
    (run.samples / "generator.png").unlink()
    assert main(["evaluate", str(out), "--models", "generator", "--recompute"]) == 0
    again = RunDir(out).read_metrics()
    assert again["generator"]["fid"] == first["fid"] and again["generator"]["kid"] == first["kid"]  # same weights, n, seeds
    assert "reused_from" not in again["generator"] and again["generator"]["eval_key"] == first["eval_key"]
    assert again["teacher-full"] == metrics["teacher-full"]  # records of other models are kept
    assert (run.samples / "generator.png").is_file()


def test_existing_run_folder_is_not_overwritten(preset_file, tmp_path, capsys):
    out = tmp_path / "run"
    RunDir.create(out, "[run]\n")
    assert main(["run", str(preset_file), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert out.joinpath("preset.toml").read_text() == "[run]\n"


def test_too_few_samples_is_reported_and_the_run_goes_on(preset_file, tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(preset_file), "--out", str(out), "--set", "eval.final_fid_n=1"]) == 0
    rec = RunDir(out).read_metrics()["generator"]
    assert rec["fid"] is None and "final FID" in rec["note"]


def test_missing_fid_weights_skip_fid_only(preset_file, tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(preset_file), "--out", str(out), "--set", f"eval.fid_weights={tmp_path / 'none.pt'}"]) == 0
    rec = RunDir(out).read_metrics()["generator"]
    assert rec["fid"] is None and "none.pt" in rec["note"]
    assert (RunDir(out).samples / "generator.png").is_file()


def _engine(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "rsd_engine", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_sigterm_stops_with_checkpoint_and_resume_finishes(preset_file, tmp_path):
    out = tmp_path / "run"
    proc = _engine("run", str(preset_file), "--out", str(out), "--set", "teacher.kimg=2", "--set", "teacher.checkpoint_every_kimg=100")
    run = RunDir(out)
    deadline = time.time() + 120
    while time.time() < deadline and not any(e["kind"] == "progress" for e in run.read_events()):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    status = run.read_status()
    assert status["state"] == "stopped"
    ck = json.loads((run.checkpoints / "teacher-latest" / "state.json").read_text())
    assert 0 < ck["images_seen"] < 2000
    resumed = _engine("run", "--resume", str(out))
    deadline = time.time() + 120
    while time.time() < deadline and run.read_status().get("pid") != resumed.pid:
        time.sleep(0.2)
    resumed.send_signal(signal.SIGTERM)
    assert resumed.wait(timeout=120) == 130
    ck2 = json.loads((run.checkpoints / "teacher-latest" / "state.json").read_text())
    assert ck2["images_seen"] >= ck["images_seen"]


def test_two_processes_over_gloo(preset_file, tmp_path):
    """A whole run on two CPU processes; its evaluation splits the seeds between them and gathers
    exactly n samples (5: shares of 3 and 2), so one process evaluating the same run agrees."""
    out = tmp_path / "run"
    cmd = [*TWO_PROCESS_RUN, str(preset_file), "--out", str(out), "--set", "eval.final_fid_n=5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    run = RunDir(out)
    status = run.read_status()
    assert status["state"] == "done" and status["num_processes"] == 2
    two = run.read_metrics()
    assert two["generator"]["n"] == 5 and two["generator"]["seeds"] == [0, 4]  # exactly the requested samples

    assert main(["evaluate", str(out)]) == 0  # the same evaluation on one process
    one = RunDir(out).read_metrics()
    for model in ("teacher-full", "teacher-truncated", "generator"):
        assert one[model]["n"] == 5
        assert abs(one[model]["fid"] - two[model]["fid"]) < 1e-3, (model, one[model]["fid"], two[model]["fid"])
    assert abs(one["generator"]["proximal_fid"] - two["generator"]["proximal_fid"]) < 1e-3


def test_two_processes_stop_together_when_only_one_is_signalled(preset_file, tmp_path):
    """SIGTERM to the second of two processes only: both agree at the next step's collective check
    (rsd_engine.io.signals.StopPolicy), the main process writes the checkpoint and the ``stopped`` state,
    and the launch ends instead of hanging in a collective that one process missed."""
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "run"
    cmd = [*TWO_PROCESS_RUN, str(preset_file), "--out", str(out), *sets("teacher.kimg=2", "teacher.checkpoint_every_kimg=100")]
    log = tmp_path / "launch.log"
    with open(log, "w") as sink:
        launch = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    run = RunDir(out)
    deadline = time.time() + 300
    while time.time() < deadline and not (run.path.exists() and any(e["kind"] == "progress" for e in run.read_events())):
        time.sleep(0.5)
    main_pid = run.read_status()["pid"]
    others = [p for p in psutil.Process(main_pid).parent().children() if p.pid != main_pid]
    assert len(others) == 1, others
    others[0].send_signal(signal.SIGTERM)
    try:
        launch.wait(timeout=180)
    except subprocess.TimeoutExpired:
        launch.kill()
        pytest.fail("the processes did not stop together (a collective missed by one of them)")
    assert run.read_status()["state"] == "stopped", log.read_text()[-3000:]
    ck = json.loads((run.checkpoints / "teacher-latest" / "state.json").read_text())
    assert 0 < ck["images_seen"] < 2000


def test_events_stay_valid_json_with_nan_losses(tmp_path):
    run = RunDir.create(tmp_path / "r", "")
    run.append_event("distill", "progress", loss_generator=float("nan"), nested={"x": [float("inf"), 1.0]})
    (event,) = run.read_events()
    assert event["loss_generator"] is None and event["nested"]["x"] == [None, 1.0]


@pytest.mark.parametrize("operator", ["gaussian_blur", "motion_blur", "random_inpainting", "box_inpainting", "super_resolution"])
def test_tiny_run_of_every_operator(preset_file, tmp_path, operator):
    out = tmp_path / operator
    settings = sets(f"corruption.operator={operator}", "eval.final_fid_n=0", "eval.grid_n=2", "distill.kimg=0.016")
    assert main(["run", str(preset_file), "--out", str(out), *settings]) == 0
    run = RunDir(out)
    assert run.read_status()["state"] == "done"
    assert (run.samples / "generator.png").is_file() and (run.samples / "measurements.png").is_file()
    ck = run.checkpoints / "generator-final" / "generator_ema.safetensors"
    assert ck.is_file()
