"""The run folder's owner (names, snapshots, tolerant readers, the final state), the seed rules and the
derived sampler settings."""

from __future__ import annotations

import json

import pytest

from rsd_engine import assembly
from rsd_engine.evaluate.generate import ModelSampler
from rsd_engine.io import config as cfg
from rsd_engine.io.runs import MODELS, RunDir, default_run_folder, is_valid_name, parse_snapshot, snapshot_name
from rsd_engine.seeding import epoch_seed, item_rng, step_seed


@pytest.mark.parametrize(
    "name,ok",
    [
        ("fmnist-denoise-0.2", True),
        ("a.b_c", True),
        (".hidden", False),
        ("-lead", False),
        ("a..b", False),
        ("a/b", False),
        ("", False),
        ("x" * 80, True),
        ("x" * 81, False),
    ],
)
def test_one_name_rule_for_presets_and_folders(name, ok):
    assert is_valid_name(name) is ok
    if ok:
        assert cfg.loads(f'[run]\nname = "{name}"\n').run.name == name
    else:
        with pytest.raises(cfg.PresetError, match="run.name"):
            cfg.loads(f'[run]\nname = "{name}"\n')


def test_default_run_folder_obeys_the_rule_and_avoids_taken_names():
    taken = set()
    first = default_run_folder("x" * 80, taken.__contains__)
    taken.add(first)
    second = default_run_folder("x" * 80, taken.__contains__)
    assert is_valid_name(first) and is_valid_name(second) and second == first + "-2"


def test_snapshot_names_round_trip():
    assert snapshot_name("teacher-truncated", 12.9) == "teacher-truncated-kimg000012.900.png"
    assert parse_snapshot(snapshot_name("generator", 3)) == ("generator", 3)
    assert parse_snapshot("generator.png") is None
    assert parse_snapshot("generator-kimg000012.png") == ("generator", 12)  # earlier runs' whole-kimg names


def test_snapshots_below_one_kimg_keep_apart(tmp_path):
    """Snapshots every 16 images (a tiny run) each get their own file, to the image."""
    kimgs = [i * 16 / 1000 for i in range(1, 5)]
    names = {snapshot_name("generator", k) for k in kimgs}
    assert len(names) == len(kimgs)
    run = RunDir.create(tmp_path / "r", "")
    for k in kimgs:
        run.grid_path("generator", k).write_bytes(b"png")
    assert [k for _, k, _ in run.snapshots()] == kimgs


def test_has_checkpoint_needs_a_complete_one(tmp_path):
    run = RunDir.create(tmp_path / "r", "")
    assert not run.has_checkpoint()
    (run.checkpoints / ".teacher-latest.tmp-1").mkdir(parents=True)
    (run.checkpoints / ".teacher-latest.tmp-1" / "state.json").write_text("{}")  # a partial write is no checkpoint
    (run.checkpoints / "teacher-latest").mkdir()
    assert not run.has_checkpoint()
    (run.checkpoints / "teacher-latest" / "state.json").write_text("{}")
    assert run.has_checkpoint()


def test_readers_tolerate_partial_and_foreign_content(tmp_path):
    run = RunDir.create(tmp_path / "r", "")
    run.append_event("teacher", "progress", kimg=1.0)
    run.append_event("teacher", "checkpoint", kimg=1.0)
    with open(run.events_path, "a", encoding="utf-8") as f:
        f.write('[1, 2]\n{"kind": "progre')  # not an object, then a line being written
    assert [e["kind"] for e in run.read_events()] == ["progress", "checkpoint"]
    assert run.last_event("progress")["kimg"] == 1.0 and run.last_event("fid") is None
    run.status_path.write_text("[]")
    assert run.read_status() == {} and RunDir(tmp_path / "none").read_events() == []


def test_mark_ended_keeps_the_engines_final_state(tmp_path):
    run = RunDir.create(tmp_path / "r", "")
    run.write_status(state="running", stage="distill", kimg=1.5)
    assert run.mark_ended("failed", "the engine process ended")
    status = json.loads(run.status_path.read_text())
    assert status["state"] == "failed" and status["stage"] == "distill" and status["kimg"] == 1.5
    assert not run.mark_ended("stopped", "late") and run.read_status()["state"] == "failed"
    with pytest.raises(ValueError, match="running"):
        run.mark_ended("running", "")


def test_seed_rules_keep_their_values():
    """The frozen measurements, step noise and data order of existing runs depend on these numbers."""
    assert step_seed(3, "distill", 1, 64) == 3 * 1_000_003 + 2 * 999_983 + 7_919 + 64
    assert item_rng(7, 4).initial_seed() == 7 * 1_000_003 + 4 * 7_919 + 12_345
    assert epoch_seed(5, 2) == 5 * 100_003 + 2


@pytest.mark.parametrize("sigma_c,stop,truncated", [(0.2, None, True), (0.0, None, False), (0.0, 0.3, True), (0.2, 0.0, False)])
def test_truncation_is_derived_in_one_place(sigma_c, stop, truncated):
    overrides = [f"corruption.noise_sigma={sigma_c}"] + ([f"eval.stop_sigma={stop}"] if stop is not None else [])
    preset = cfg.loads("", overrides)
    sampler = ModelSampler.from_preset(preset, assembly.build_objective(preset, assembly.build_measurement(preset)))
    assert sampler.truncated is truncated
    assert sampler.truncation_sigma == (stop if stop is not None else sigma_c)
    assert ("teacher-truncated" in sampler.models()) is truncated and sampler.models()[-1] == "generator"
    assert sampler.teacher_model == ("teacher-truncated" if truncated else "teacher-full")
    assert set(sampler.models()) <= set(MODELS)
