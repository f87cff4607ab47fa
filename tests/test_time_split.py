"""Where a run's time goes (timing events, ``rsd-engine time-split``) and no figure computed twice
(an evaluation with the same weights, n, seeds, sampler and reference reuses the earlier FID)."""

import math

import pytest
import torch
from safetensors.torch import load_file

from rsd_engine.cli import main
from rsd_engine.evaluate.reuse import evaluation_key, find_earlier, weights_digest
from rsd_engine.experiment import Experiment, make_accelerator
from rsd_engine.io import config as cfg
from rsd_engine.io.runs import RunDir
from rsd_engine.io.timing import BASELINE, FINAL, LIVE, REFERENCE, STARTUP, TIMING, WALL, split_table, time_split


def _t(part, seconds, **fields):
    return {"kind": TIMING, "part": part, "seconds": seconds, "stage": fields.pop("stage", "run"), **fields}


EVENTS = [
    _t(STARTUP, 10.0, time=100.0),
    {"kind": "progress", "stage": "teacher", "train_seconds": 100.0, "time": 150.0},
    {"kind": "progress", "stage": "teacher", "train_seconds": 300.0, "time": 410.0},
    {"kind": "checkpoint", "stage": "teacher", "seconds": 2.0, "time": 411.0},
    _t(REFERENCE, 30.0, stage="teacher", time=441.0),
    _t(LIVE, 40.0, stage="teacher", kimg=32.0, time=481.0),
    _t(BASELINE, 0.5, stage="distill", time=482.0),
    {"kind": "progress", "stage": "distill", "train_seconds": 200.0, "time": 690.0},
    _t(LIVE, 15.0, stage="distill", kimg=6.4, time=705.0),
    {"kind": "checkpoint", "stage": "distill", "seconds": 3.0, "time": 708.0},
    _t(FINAL, 0.1, stage="evaluate", model="teacher-truncated", reused_from={"stage": "teacher", "kind": "fid", "kimg": 32.0}, time=709.0),
    _t(FINAL, 1.4, stage="evaluate", time=711.0),
    _t(WALL, 620.0, time=712.0),
]


def test_time_split_rows_shares_and_rest():
    split = time_split(EVENTS)
    rows = {r["part"]: r for r in split["rows"]}
    assert split["wall"] == 620.0
    assert rows["teacher training"]["seconds"] == 300.0 and rows["distillation training"]["seconds"] == 200.0
    assert rows["teacher live evaluation"]["seconds"] == 40.0
    assert rows["generator live evaluation"]["seconds"] == 15.5 and rows["generator live evaluation"]["count"] == 2  # with the baseline
    assert rows["final evaluation: teacher-truncated"]["note"].startswith("FID reused")
    assert rows["checkpoints"]["seconds"] == 5.0 and rows["reference features"]["seconds"] == 30.0
    assert math.isclose(rows["start-up"]["share"], 10 / 620)
    parts = sum(r["seconds"] for r in split["rows"])
    assert math.isclose(parts, 620.0)  # the rest fills the wall
    assert math.isclose(split["evaluation_and_checkpoints"], 40 + 15.5 + 0.1 + 1.4 + 30 + 5)
    table = split_table(split)
    assert "| teacher training | 300.0 | 48.4 % |" in table and "of the wall" in table


def test_time_split_of_a_run_without_wall_event_uses_the_span_of_its_events():
    split = time_split(EVENTS[:-1])
    assert split["wall"] == pytest.approx(711.0 - 100.0 + 10.0)
    assert "span" in split["wall_source"]
    assert time_split([])["wall"] is None and time_split([])["rows"] == []


def test_cli_time_split(tmp_path, capsys):
    assert main(["time-split", str(tmp_path / "nothing")]) == 2
    assert "holds no run" in capsys.readouterr().err
    run = RunDir.create(tmp_path / "run", "")
    for e in EVENTS:
        run.append_event(e["stage"], e["kind"], **{k: v for k, v in e.items() if k not in ("stage", "kind", "time")})
    assert main(["time-split", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "| distillation training | 200.0 |" in out and "wall: 620.0 s" in out


def test_weights_digest_and_evaluation_key():
    torch.manual_seed(0)
    a = torch.nn.Linear(3, 2)
    b = torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.bias[0] += 1e-7
    assert weights_digest(a) != weights_digest(b)
    args = dict(
        model="generator",
        weights_sha256="w",
        seeds=range(150),
        sampler={"sigma_init": 2.5},
        reference="r",
        features="f",
        kid_subset_size=100,
    )
    key = evaluation_key(**args)
    assert key == evaluation_key(**args)
    for field, other in [
        ("model", "teacher-full"),
        ("weights_sha256", "v"),
        ("seeds", range(149)),
        ("seeds", range(1, 151)),
        ("sampler", {"sigma_init": 2.0}),
        ("reference", "s"),
        ("features", "g"),
        ("kid_subset_size", 50),
    ]:
        assert evaluation_key(**{**args, field: other}) != key, field


def test_find_earlier_names_the_live_fid_and_skips_non_finite_ones():
    live = {
        "kind": "fid",
        "stage": "teacher",
        "kimg": 32.0,
        "time": 1.0,
        "eval_key": "k",
        "fid": 356.4,
        "kid": 0.3,
        "nfe": 25,
        "images_per_s": 8.8,
        "grid": "samples/t.png",
        "grid_n": 64,
    }
    base = {"kind": "teacher_baseline", "stage": "distill", "time": 2.0, "eval_key": "k", "fid": 356.4}
    broken = {"kind": "fid", "stage": "teacher", "kimg": 16.0, "time": 3.0, "eval_key": "j", "fid": None}
    found = find_earlier("k", [live, base, broken])
    assert found["fid"] == 356.4 and found["nfe"] == 25 and found["grid"] == "samples/t.png"
    assert found["reused_from"] == {"stage": "teacher", "kind": "fid", "kimg": 32.0, "time": 1.0}
    assert find_earlier("j", [broken]) is None
    assert find_earlier("k", [base])["reused_from"]["kind"] == "teacher_baseline"
    assert find_earlier("m", [live], {"generator": {"eval_key": "m", "fid": 1.5}})["reused_from"] == {
        "file": "metrics.json",
        "model": "generator",
    }


def _experiment(preset, path):
    return Experiment(preset, RunDir.create(path, cfg.dumps(preset)), make_accelerator(preset))


def test_final_reuses_live_fids_and_evaluation_does_not_change_training(tiny_preset, tmp_path):
    # live FID at the last step of each stage (n = final n): the final teacher-truncated and generator
    # FIDs are those live FIDs, taken over, not computed again
    common = ["eval.live_fid_n=4", "eval.proximal_fid=false", "eval.models=['teacher-truncated', 'generator']"]
    once = cfg.loads(cfg.dumps(tiny_preset), [*common, "eval.teacher_every_kimg=0.064", "eval.distill_every_kimg=0.032"])
    a = _experiment(once, tmp_path / "a")
    a.run_all()
    events = a.run.read_events()
    live = {e["model"]: e for e in events if e["kind"] == "fid"}
    metrics = a.run.read_metrics()
    for model, kimg in (("teacher-truncated", 0.064), ("generator", 0.032)):
        rec = metrics[model]
        assert rec["fid"] == live[model]["fid"] and rec["eval_key"] == live[model]["eval_key"]
        assert rec["reused_from"]["kind"] == "fid" and rec["reused_from"]["kimg"] == kimg
        assert rec["nfe"] == live[model]["nfe"]
    assert (a.run.samples / "teacher-truncated.png").read_bytes() == (a.run.samples / "teacher-truncated-kimg000000.064.png").read_bytes()
    parts = {(e["part"], e.get("model")) for e in events if e["kind"] == TIMING}
    assert {(LIVE, "teacher-truncated"), (LIVE, "generator"), (BASELINE, "teacher-truncated"), (FINAL, "generator"), (FINAL, None)} <= parts
    assert all(isinstance(e.get("seconds"), float) for e in events if e["kind"] == "checkpoint")

    # recomputing gives the same figure (same weights, n, seeds and reference)
    again = a.evaluate(("generator",), reuse=False)
    assert again["generator"]["fid"] == metrics["generator"]["fid"] and "reused_from" not in again["generator"]

    # more live evaluations (grids every step, no live FID) leave the trained weights bit for bit unchanged:
    # evaluation draws from its own per-seed generators, and every training step reseeds torch
    often = cfg.loads(
        cfg.dumps(tiny_preset),
        [*common, "eval.live_fid_n=0", "eval.teacher_every_kimg=0.016", "eval.distill_every_kimg=0.008", "eval.final_fid_n=0"],
    )
    b = _experiment(often, tmp_path / "b")
    b.run_all()
    for ck, name in (("teacher-final", "ema"), ("generator-final", "generator_ema")):
        wa, wb = (
            load_file(str(a.run.checkpoints / ck / f"{name}.safetensors")),
            load_file(str(b.run.checkpoints / ck / f"{name}.safetensors")),
        )
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), ck


def test_workbench_shows_the_same_split(tmp_path):
    from workbench import run_reader
    from workbench.api import Workbench
    from workbench.ui import time_view

    runs = tmp_path / "runs"
    run = RunDir.create(runs / "r1", "")
    run.append_event("teacher", "progress", train_seconds=1.0)
    assert run_reader.time_split_md(run.path) == ""  # a run from before timing events
    for e in EVENTS:
        run.append_event(e["stage"], e["kind"], **{k: v for k, v in e.items() if k not in ("stage", "kind", "time")})
    run.write_status(state="done")
    wb = Workbench(runs, tmp_path / "presets", engine_cmd=["true"])
    text = time_view.time_md(wb, "r1")
    assert "finished run" in text and split_table(time_split(run.read_events())) in text
    assert time_view.time_md(wb, "nope").startswith("✗")


def test_channels_last_features_equal_nchw_ones():

    from rsd_engine.evaluate.metrics import extract_features, load_feature_network, tf1_resize

    net = load_feature_network()
    imgs = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = tf1_resize(imgs.float().expand(-1, 3, -1, -1))
    nchw = net.net(((x - 128.0) / 128.0).contiguous())
    fast = extract_features(net, imgs, 2)
    assert torch.allclose(fast, nchw, rtol=0, atol=1e-4)
