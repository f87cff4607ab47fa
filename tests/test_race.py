"""The race between the generator and its teacher (docs/method.md §4.1): the teacher baseline at the
live n, the first live FID of the generator below it (kimg and training minutes, in events, status
and metrics.json), training seconds that survive a resume, and ``eval.models``."""

import pytest
from conftest import sets

from rsd_engine.cli import main
from rsd_engine.evaluate.evaluation import BaselineFound, Evaluation, find_teacher_baseline
from rsd_engine.io import config as cfg
from rsd_engine.io.runs import GENERATOR_BEATS_TEACHER, RACE, TEACHER_BASELINE, RunDir, first_crossing, teacher_baseline

LIVE = ["eval.live_fid_n=4", "eval.grid_n=4", "eval.teacher_every_kimg=0.064", "eval.distill_every_kimg=0.016"]


@pytest.fixture
def preset_file(tmp_path, tiny_preset_text):
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_preset_text)
    return path


def _overrides(items):
    return [a for item in items for a in ("--set", item)]


def test_baseline_crossing_and_summary_are_consistent(preset_file, tmp_path):
    """One tiny run with live FID and ``run.trackers = ["tensorboard"]``: the race (teacher baseline,
    the generator's live FID from 0 kimg of distillation, the first crossing, the summary) and the
    TensorBoard event files, read with TensorBoard's own reader."""
    out = tmp_path / "run"
    assert main(["run", str(preset_file), "--out", str(out), *_overrides([*LIVE, 'run.trackers=["tensorboard"]'])]) == 0
    run = RunDir(out)
    events = run.read_events()
    base = teacher_baseline(events)
    teacher_fids = [e for e in events if e["kind"] == "fid" and e["stage"] == "teacher"]
    # the baseline is the teacher stage's last live FID (the final EMA), at the live n
    assert base is not None and base["n"] == 4 and base["fid"] == teacher_fids[-1]["fid"]
    assert base["model"] == "teacher-truncated" and "teacher stage" in base["source"]
    gen = [e for e in events if e["kind"] == "fid" and e["stage"] == "distill"]
    # the initialised generator is measured at 0 kimg, before any update (where RSD starts)
    assert [e["kimg"] for e in gen] == [0, 0.016, 0.032] and gen[0]["train_seconds"] == 0
    assert all(e["train_seconds"] > 0 for e in gen[1:])
    _assert_tensorboard(out, teacher_fids, gen)
    below = [e for e in gen if e["fid"] < base["fid"]]
    crossing = first_crossing(events)
    status = run.read_status()
    if below:
        assert crossing["kimg"] == below[0]["kimg"] and crossing["fid"] == below[0]["fid"]
        assert crossing["minutes"] == pytest.approx(below[0]["train_seconds"] / 60, abs=1e-3)
        assert status["generator_beats_teacher"]["kimg"] == crossing["kimg"]
    else:
        assert crossing is None and "generator_beats_teacher" not in status
    metrics = run.read_metrics()
    race = metrics[RACE]
    assert race["live"]["teacher_fid"] == base["fid"]
    final = race["final"]
    assert final["generator_fid"] == metrics["generator"]["fid"] and final["teacher_fid"] == metrics["teacher-truncated"]["fid"]
    assert final["generator_better"] == (final["generator_fid"] < final["teacher_fid"])
    progress = [e["train_seconds"] for e in events if e["kind"] == "progress" and e["stage"] == "distill"]
    assert progress == sorted(progress) and progress[-1] > 0


def _assert_tensorboard(out, teacher_fids, gen):
    """The run's TensorBoard files hold the teacher loss, both live FIDs (n in the tag) on one axis
    of images seen since the run started (distillation after the teacher's 64 images), and grids."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "trackers" / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {
        "teacher/loss",
        "distill/loss_generator",
        "distill/loss_fake_score",
        "live_fid/teacher-truncated_n4",
        "live_fid/generator_n4",
        "live_kid/generator_n4",
    } <= set(tags["scalars"]), tags["scalars"]
    assert [round(e.value, 3) for e in acc.Scalars("live_fid/generator_n4")] == [round(e["fid"], 3) for e in gen]
    assert [e.step for e in acc.Scalars("live_fid/generator_n4")] == [64, 80, 96]
    assert [e.step for e in acc.Scalars("live_fid/teacher-truncated_n4")] == [round(e["kimg"] * 1000) for e in teacher_fids]
    assert "samples/generator" in tags["images"] and "samples/teacher-truncated" in tags["images"]


def test_baseline_of_a_given_teacher_is_read_from_its_run_or_computed_and_the_same(preset_file, tmp_path):
    first, by_run, by_folder = tmp_path / "first", tmp_path / "by-run", tmp_path / "by-folder"
    assert main(["run", str(preset_file), "--out", str(first), *_overrides(LIVE), "--set", "distill.kimg=0.016"]) == 0
    for out, source in ((by_run, first), (by_folder, first / "checkpoints" / "teacher-final")):
        settings = [*_overrides(LIVE), *sets("distill.kimg=0.016", f"teacher.checkpoint={source}", 'eval.models=["generator"]')]
        assert main(["run", str(preset_file), "--out", str(out), *settings]) == 0
    a, b, c = (teacher_baseline(RunDir(r).read_events()) for r in (first, by_run, by_folder))
    assert str(first) in b["source"] and b["fid"] == a["fid"]
    assert "computed" in c["source"] and c["fid"] == pytest.approx(a["fid"], abs=1e-6)
    metrics = RunDir(by_folder).read_metrics()
    assert "generator" in metrics and "teacher-full" not in metrics and "teacher-truncated" not in metrics


def test_first_crossing_is_recorded_once(tmp_path):
    run = RunDir.create(tmp_path / "r", "")
    ev = Evaluation.__new__(Evaluation)  # only the race bookkeeping is exercised
    ev.run, ev._crossing = run, None
    base = {"fid": 100.0, "model": "teacher-truncated"}
    ev._race({"fid": 120.0, "n": 8}, base, 1.0, 60.0)
    ev._race({"fid": 90.0, "n": 8}, base, 2.0, 120.0)
    ev._race({"fid": 80.0, "n": 8}, base, 3.0, 180.0)
    crossings = [e for e in run.read_events() if e["kind"] == GENERATOR_BEATS_TEACHER]
    assert len(crossings) == 1 and crossings[0]["kimg"] == 2.0 and crossings[0]["minutes"] == 2.0
    assert run.read_status()["generator_beats_teacher"]["fid"] == 90.0
    assert TEACHER_BASELINE not in {e["kind"] for e in run.read_events()}


def test_eval_models_refuses_unknown_and_repeated_names():
    with pytest.raises(cfg.PresetError, match="eval.models"):
        cfg.loads('[eval]\nmodels = ["generator", "teacher-half"]')
    with pytest.raises(cfg.PresetError, match="eval.models"):
        cfg.loads('[eval]\nmodels = ["generator", "generator"]')


# ---------------------------------------------------------------- the baseline's precedence, from records alone
def _baseline(n=4, ref="clean", fid=1.0, source="computed"):
    return {
        "stage": "distill",
        "kind": TEACHER_BASELINE,
        "model": "teacher-truncated",
        "n": n,
        "reference": ref,
        "fid": fid,
        "source": source,
    }


def _live(kimg, n=4, ref="clean", model="teacher-truncated", fid=2.0):
    return {"stage": "teacher", "kind": "fid", "model": model, "n": n, "reference": ref, "kimg": kimg, "fid": fid}


def _find(own, trainer, final_kimg=0.128, where=""):
    return find_teacher_baseline(own, 4, "clean", "teacher-truncated", trainer, final_kimg, where)


def test_baseline_precedence_own_event_then_trainer_event_then_final_live_fid():
    own, trainer_base, final_live = _baseline(fid=1.0), _baseline(fid=3.0), _live(0.128, fid=5.0)
    # 1. this run's own baseline event wins, as recorded (nothing to write)
    assert _find([own], [trainer_base, final_live]) == BaselineFound(own, None)
    # an own event of another n or reference does not count
    assert _find([_baseline(n=8), _baseline(ref="other")], [trainer_base]).record is trainer_base
    # 2. the trainer run's baseline event, before its live FIDs
    assert _find([], [final_live, trainer_base], where=" of /t") == BaselineFound(trainer_base, "teacher baseline of /t")
    # 3. the trainer's last teacher live FID, measured at teacher-final's position (the final EMA)
    found = _find([], [_live(0.064, fid=9.0), final_live])
    assert found.record is final_live and found.source == "teacher stage's live FID at 0.128 kimg (final EMA)"


@pytest.mark.parametrize(
    "last",
    [_live(0.064), _live(0.128, n=8), _live(0.128, ref="other"), _live(0.128, model="teacher-full")],
    ids=["not-at-final", "other-n", "other-reference", "other-model"],
)
def test_baseline_takes_only_the_last_live_fid_and_only_when_it_matches(last):
    # an earlier matching live FID never counts: only the last one of the teacher stage is looked at
    assert _find([], [_live(0.128), last]) is None


def test_baseline_without_trainer_records_or_final_checkpoint_is_computed():
    assert _find([], None) is None  # teacher.checkpoint is a folder that is no run: only this run's own event counts
    assert _find([_baseline()], None).source is None
    assert _find([], [_live(0.128)], final_kimg=None) is None  # no teacher-final: no live FID is known to be of it
    assert _find([], [_live(0.128, fid=7.0)] + [{"stage": "distill", "kind": "fid", "kimg": 0.0}]).record["fid"] == 7.0
