"""Issue 19: reliability at the edges of the machine and the file system — sizes that cannot run,
silent coercions, non-npz files, read-only and full disks, interrupted exports, templates whose data
is absent. Fast: everything runs at validate level or on tiny runs with FID off."""

from __future__ import annotations

import errno
import glob
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rsd_engine.cli import main
from rsd_engine.data.sources import DataError, read_images
from rsd_engine.io import config as cfg

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def preset_file(tmp_path, tiny_preset_text):
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_preset_text)
    return path


def _validate(capsys, preset, *overrides) -> tuple[int, str]:
    """``rsd-engine validate`` in-process: (exit code, stderr)."""
    args = ["validate", str(preset)]
    for o in overrides:
        args += ["--set", o]
    code = main(args)
    return code, capsys.readouterr().err


# ---------------------------------------------------------------- 1. sizes that cannot run


@pytest.mark.parametrize(
    "override,field",
    [
        ("teacher.batch_size=1000000000000", "teacher.batch_size"),
        ("distill.batch_size=9223372036854775807", "distill.batch_size"),
        ("eval.final_fid_n=1000000000", "eval.final_fid_n"),
        ("eval.live_fid_n=1000000000", "eval.live_fid_n"),
        ("eval.batch_size=100000000", "eval.batch_size"),
        ("eval.reference_n=100000000", "eval.reference_n"),
        ("data.max_images=100000000000", "data.max_images"),
        ("network.block_out_channels=[1000000]", "network.block_out_channels"),
    ],
)
def test_sizes_beyond_any_machine_are_refused_at_validate(capsys, preset_file, override, field):
    code, err = _validate(capsys, preset_file, override)
    assert code == 2 and field in err and "Traceback" not in err, err


def test_sizes_that_do_not_fit_this_machine_are_refused_with_what_fits(capsys, preset_file, monkeypatch):
    """With 256 MiB of memory, the largest teacher batch the error allows is accepted and one more refused."""
    from rsd_engine.train import budget

    monkeypatch.setattr(budget, "_host_ram", lambda: 256 * 2**20)
    code, err = _validate(capsys, preset_file, "teacher.batch_size=60000")
    assert code == 2 and "teacher.batch_size" in err and "is valid; it does not fit this machine's memory" in err and "256.0 MiB" in err, (
        err
    )
    most = int(err.split("teacher.batch_size")[1].split("at most ")[1].split()[0])
    assert 16 <= most < 60000
    assert _validate(capsys, preset_file, f"teacher.batch_size={most}")[0] == 0
    code, err = _validate(capsys, preset_file, f"teacher.batch_size={most + 1}")
    assert code == 2 and "teacher.batch_size" in err
    code, err = _validate(capsys, preset_file, "eval.final_fid_n=900000")
    assert code == 2 and "eval.final_fid_n" in err and "allowed here" in err


def test_a_run_too_large_for_the_machine_starts_no_work(preset_file, tmp_path, monkeypatch, capsys):
    from rsd_engine.train import budget

    monkeypatch.setattr(budget, "_host_ram", lambda: 64 * 2**20)
    out = tmp_path / "run"
    assert main(["run", str(preset_file), "--out", str(out), "--set", "teacher.batch_size=8192"]) == 2
    assert "teacher.batch_size" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------- 2. no silent coercions


@pytest.mark.parametrize(
    "text,field",
    [
        ("[teacher]\nbatch_size = true\n", "teacher.batch_size"),
        ("[data]\nchannels = true\n", "data.channels"),
        ('[network]\nblock_out_channels = ["32", 64]\n', "network.block_out_channels.0"),
        ("[network]\nblock_out_channels = [true, 64]\n", "network.block_out_channels"),
        ('[teacher]\nlr = "0.001"\n', "teacher.lr"),
        ("[distill]\nalpha = false\n", "distill.alpha"),
        ("[eval]\nfinal_fid_n = 32.0\n", "eval.final_fid_n"),
        ('[run]\nseed = "1"\n', "run.seed"),
    ],
)
def test_booleans_strings_and_floats_are_not_taken_as_numbers(text, field):
    with pytest.raises(cfg.PresetError) as err:
        cfg.loads(text)
    assert field in dict(err.value.problems), err.value


def test_a_table_of_an_operator_that_is_not_selected_is_an_error():
    with pytest.raises(cfg.PresetError) as err:
        cfg.loads("[corruption.gaussian_blur]\nstd = 1.0\n")
    problems = dict(err.value.problems)
    assert "corruption.gaussian_blur" in problems and "'identity'" in problems["corruption.gaussian_blur"]
    with pytest.raises(cfg.PresetError, match="corruption.random_inpainting"):
        cfg.loads('[corruption]\noperator = "gaussian_blur"\n[corruption.random_inpainting]\np = 0.9\n')
    p = cfg.loads('[corruption]\noperator = "gaussian_blur"\n[corruption.gaussian_blur]\nstd = 1.0\n')
    # the effective preset keeps only the selected operator's table, and reads back the same
    assert "[corruption.gaussian_blur]" in cfg.dumps(p) and "random_inpainting" not in cfg.dumps(p)
    assert cfg.loads(cfg.dumps(p)) == p


def test_run_folders_of_earlier_versions_still_load():
    """Earlier versions froze every operator's table, all at its defaults: such a preset still loads."""
    import tomli_w

    p = cfg.loads("")
    assert cfg.loads(tomli_w.dumps(p.model_dump(mode="json", exclude_none=True))) == p


# ---------------------------------------------------------------- 3. npz that is not an npz


def _no_unsafe_advice(text: str) -> None:
    assert "allow_pickle" not in text and "unsafe" not in text and "pickle.load" not in text, text


def test_npz_source_pointed_at_another_file_names_field_and_file(capsys, tmp_path):
    bad = tmp_path / "faces.npz"
    bad.write_text("not an archive")
    preset = tmp_path / "p.toml"
    preset.write_text(f'[data]\nsource = "npz"\npath = "{bad}"\nchannels = 1\n')
    code, err = _validate(capsys, preset)
    assert code == 2 and "data.path" in err and str(bad) in err and "not an .npz file of images" in err, err
    _no_unsafe_advice(err)


@pytest.mark.parametrize("kind", ["text", "npy", "objects"])
def test_npz_reader_never_advises_unpickling(tmp_path, kind):
    path = tmp_path / "x.npz"
    if kind == "text":
        path.write_text("hello")
    elif kind == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros((4, 8, 8), np.uint8))
    else:
        np.savez(path, images=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError) as err:
        read_images("npz", str(path), "test", 1, 8)
    assert "data.eval_path" in str(err.value) and str(path) in str(err.value)
    _no_unsafe_advice(str(err.value))


# ---------------------------------------------------------------- 7. a huge description


def test_description_is_capped_and_so_is_its_echo(capsys, preset_file):
    code, err = _validate(capsys, preset_file, "run.description=" + "x" * 10_000_000)
    assert code == 2 and "run.description" in err and "2000" in err and len(err) < 1000, err[:300]
    p = cfg.loads(f'[run]\ndescription = "{"y" * cfg.MAX_DESCRIPTION}"\n')
    assert len(p.run.description) == cfg.MAX_DESCRIPTION


# ---------------------------------------------------------------- 8. templates whose data is absent

GPU_PRESETS = sorted(p for p in glob.glob(str(REPO / "presets" / "*.toml")) if "gpu" in p or "cifar10" in p)


@pytest.mark.parametrize("preset", GPU_PRESETS, ids=lambda p: Path(p).stem)
def test_gpu_presets_are_valid_and_say_their_data_is_not_here(capsys, preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative data paths point nowhere
    code, err = _validate(capsys, preset)
    assert code == 2, err
    first, *rest = err.splitlines()
    assert "is valid; its data is not here" in first, err
    data = [line for line in rest if line.strip().startswith("data.")]
    assert data and all("set data." in line for line in data), err
    # whatever else is said concerns this machine's memory (GPU-sized presets on a small machine), never the preset
    assert all("this machine has" in line for line in rest if line not in data), err


def test_workbench_shows_a_valid_preset_and_its_missing_data_apart(tmp_path, monkeypatch):
    from workbench import preset_edit

    monkeypatch.chdir(tmp_path)
    text = Path(GPU_PRESETS[0]).read_text()
    shown = preset_edit.validate(text)
    assert shown.ok and shown.data_only and [f for f, _ in shown.not_here] == ["data.path", "data.eval_path"]
    md = shown.markdown()
    assert "Valid preset" in md and "Its data is not here" in md and "set data.path" in md
    launch = preset_edit.validate(text, paths=True)
    assert not launch.ok and launch.problems == launch.not_here


# ---------------------------------------------------------------- 4. read-only output folders


@pytest.fixture
def read_only_folder(tmp_path, monkeypatch):
    """A folder in which the system refuses every write with EROFS, as on a read-only mount. Root
    ignores permission bits (chmod stops nobody in CI), so creating folders and opening files for
    writing under it are refused at the ``os`` layer the engine's writes go through."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    real_mkdir, real_open = os.mkdir, os.open

    def refused(path) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(folder)

    def mkdir(path, mode=0o777, *, dir_fd=None):
        if refused(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, mode, dir_fd=dir_fd)

    def open_(path, flags, mode=0o777, *, dir_fd=None):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and refused(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)
    return folder


def _one_line_naming(err: str, folder: Path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(folder) in lines[0] and "Traceback" not in err, err


def test_a_new_run_in_a_read_only_folder_is_one_line(preset_file, read_only_folder, capsys):
    out = read_only_folder / "run"
    assert main(["run", str(preset_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    _one_line_naming(err, out)
    assert "Read-only file system" in err


def test_a_new_run_under_a_file_is_one_line(preset_file, tmp_path, capsys):
    """The same path without any patching: a file where the run's parent folder should be (root too)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "run"
    assert main(["run", str(preset_file), "--out", str(out)]) == 2
    _one_line_naming(capsys.readouterr().err, out)


@pytest.mark.skipif(os.geteuid() == 0, reason="permission bits do not stop root; the EROFS test covers this path")
def test_a_new_run_in_a_folder_without_write_permission_is_one_line(preset_file, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["run", str(preset_file), "--out", str(locked / "run")]) == 2
        _one_line_naming(capsys.readouterr().err, locked / "run")
    finally:
        locked.chmod(0o755)


def test_an_export_into_a_read_only_folder_is_one_line(tmp_path, finished_run, read_only_folder, capsys):
    run = finished_run(tmp_path / "run")
    out = read_only_folder / "exported"
    assert main(["export", str(run.path), "--out", str(out)]) == 2
    _one_line_naming(capsys.readouterr().err, out)
    assert not out.exists()


# ---------------------------------------------------------------- 6. interrupted exports


def test_an_export_removes_what_killed_exports_left_beside_it(tmp_path, finished_run):
    from rsd_engine.export import export_run

    run = finished_run(tmp_path / "run")
    out = tmp_path / "elsewhere" / "gen"
    out.parent.mkdir()
    for leftover in (".gen.tmp-abc123", ".gen.old-def456"):  # a kill -9 during an earlier export to the same place
        (out.parent / leftover / "unet").mkdir(parents=True)
    (out.parent / ".other.tmp-keep").mkdir()  # another destination's: not ours to remove
    export_run(run.path, out)
    assert sorted(p.name for p in out.parent.iterdir()) == [".other.tmp-keep", "gen"]
    assert (out / "model_index.json").is_file()


# ---------------------------------------------------------------- 5. a disk that fills up during a run

FID_OFF = ["eval.final_fid_n=0", "eval.live_fid_n=0", "eval.psnr_n=0"]


def test_a_full_disk_mid_run_ends_in_one_error_and_a_failed_run(tmp_path, tiny_preset_text):
    """The disk fills at the teacher's first checkpoint: one short error, no traceback, and the run
    reads as failed for the engine and the workbench alike (its status may keep "running")."""
    from rsd_engine.io.runs import RunDir
    from workbench.launcher import Launcher
    from workbench.run_reader import run_row

    preset = tmp_path / "tiny.toml"
    preset.write_text(tiny_preset_text)
    runs = tmp_path / "runs"
    out = runs / "full"
    sets = [a for o in FID_OFF for a in ("--set", o)]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "full_disk.py"), str(out), "4", "--", "run", str(preset), "--out", str(out), *sets],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = proc.stderr
    assert "Traceback" not in err and "Logging error" not in err and "No space left on device" in err, err[-3000:]
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert 1 <= len(errors) <= 2, errors
    run = RunDir(out)
    assert run.read_status().get("state") in ("running", "failed")
    assert run.state() == "failed"
    launcher = Launcher(runs)
    try:
        assert launcher.state("full") == "failed"
    finally:
        launcher.close()
    assert run_row(out)["state"] == "failed"


def test_a_running_status_whose_process_ended_reads_failed_everywhere(tmp_path):
    from rsd_engine.io.runs import RunDir, run_state, this_host
    from workbench.launcher import Launcher
    from workbench.run_reader import run_row

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    run = RunDir.create(tmp_path / "runs" / "r", "")
    run.write_status(state="running", pid=ended.pid, host=this_host())
    launcher = Launcher(tmp_path / "runs")
    try:
        assert run.state() == launcher.state("r") == run_row(run.path)["state"] == "failed"
        run.write_status(pid=os.getpid())  # alive: still running
        assert run.state() == launcher.state("r") == run_row(run.path)["state"] == "running"
        assert run_state({"state": "running", "pid": ended.pid, "host": "another-machine"}) == "running"  # cannot tell from here
    finally:
        launcher.close()
    # the engine refuses to resume a run whose process is alive, and resumes one whose process ended
    assert main(["run", "--resume", str(run.path)]) == 2


# ---------------------------------------------------------------- 7. small ones


def test_a_failure_in_distillation_says_stage_distill(tmp_path, tiny_preset_text, capsys):
    """A teacher of another network fails distillation before its first step; the status of a run
    last seen evaluating must not keep saying "evaluate"."""
    import torch

    from rsd_engine.io.runs import TEACHER_FINAL, RunDir
    from rsd_engine.models.networks import EDMPrecond
    from rsd_engine.train.checkpoints import save_checkpoint

    preset = cfg.loads(tiny_preset_text, FID_OFF)
    run = RunDir.create(tmp_path / "run", cfg.dumps(preset))
    other = cfg.loads(tiny_preset_text, ["network.block_out_channels=[8, 8]"])
    torch.manual_seed(0)
    save_checkpoint(
        run.checkpoint(TEACHER_FINAL),
        {"ema": EDMPrecond.from_preset(other, 0, "pixel_mask")},
        {"stage": "teacher", "images_seen": 64},
        cfg.dumps(other),
    )
    run.write_status(state="failed", stage="evaluate", error="earlier")
    assert main(["run", "--resume", str(run.path)]) == 1
    status = run.read_status()
    assert status["state"] == "failed" and status["stage"] == "distill", status


def test_a_kill_during_a_grid_write_is_made_good_on_resume(tiny_preset, tmp_path, monkeypatch):
    from rsd_engine.evaluate import evaluation
    from rsd_engine.experiment import Experiment, make_accelerator
    from rsd_engine.io.runs import RunDir

    preset = cfg.loads(
        cfg.dumps(tiny_preset), ["eval.teacher_every_kimg=0.032", "teacher.checkpoint_every_kimg=0.032", "eval.grid_n=4", *FID_OFF]
    )
    run = RunDir.create(tmp_path / "run", cfg.dumps(preset))

    class Killed(BaseException):
        """kill -9 while the snapshot grid is written."""

    real = evaluation.save_grid

    def save_then_die(images, path):
        if "-kimg" in Path(path).name:
            raise Killed()
        return real(images, path)

    monkeypatch.setattr(evaluation, "save_grid", save_then_die)
    with pytest.raises(Killed):
        Experiment(preset, run, make_accelerator(preset)).train_teacher()
    snapshot = run.grid_path("teacher-truncated", 0.032)
    assert not snapshot.exists()
    monkeypatch.setattr(evaluation, "save_grid", real)
    Experiment(preset, run, make_accelerator(preset)).train_teacher()
    grids = [e["kimg"] for e in run.read_events() if e["kind"] == "grid" and e["stage"] == "teacher"]
    assert snapshot.exists() and grids == [0.032, 0.064], grids
