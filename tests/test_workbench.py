"""Workbench tests: names and folders, the preset form, run folders, the launcher (with a fake
engine for the cases a real run cannot show quickly), and the whole app driven through
gradio_client with the real engine on tiny presets (docs/architecture.md, "Workbench guarantees")."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from rsd_engine.io.runs import RACE, RunDir
from workbench import preset_edit as pe
from workbench import run_reader
from workbench.api import Workbench, WorkbenchError
from workbench.launcher import Launcher
from workbench.names import BadName, check_name, inside
from workbench.presets_store import PresetStore, StoreError

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "presets"

#: Overrides that make the quickstart preset a run of ~30 s on 2 CPU cores.
TINY = {
    "teacher.kimg": "0.032",
    "teacher.batch_size": "16",
    "distill.kimg": "0.016",
    "distill.batch_size": "8",
    "network.block_out_channels": "[16, 32]",
    "data.max_images": "64",
    "eval.final_fid_n": "0",
    "eval.live_fid_n": "0",
    "eval.grid_n": "8",
    "eval.psnr_n": "0",
    "eval.teacher_steps": "3",
    "eval.reference_n": "2",
    "eval.models": '["teacher-full", "teacher-truncated", "generator"]',  # the quickstart leaves teacher-full out
}

# --------------------------------------------------------------------------------------------
# A fake engine: same CLI and run-folder contract, seconds instead of minutes, and misbehaviours
# on request (ignore SIGTERM, crash before writing a status, leave a child process behind).
FAKE_ENGINE = r"""
import json, os, signal, subprocess, sys, time
from pathlib import Path

def png(path, value):
    import zlib, struct
    raw = b"".join(b"\x00" + bytes([value % 256]) * 8 for _ in range(8))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

def status(run, **fields):
    p = run / "status.json"
    s = json.loads(p.read_text()) if p.exists() else {}
    s.update(fields, updated=time.time())
    tmp = run / ".status.tmp"
    tmp.write_text(json.dumps(s)); os.replace(tmp, p)

def event(run, **fields):
    with open(run / "events.jsonl", "a") as f:
        f.write(json.dumps({"time": time.time(), **fields}) + "\n")

args = sys.argv[1:]
cmd = args[0]
if cmd == "preview":
    out = args[args.index("--out") + 1]
    png(out, 100)
    print("fake dataset: 64 images, 32x32, 1 channel")
    sys.exit(0)
assert cmd == "run", args
if "--resume" in args:
    run = Path(args[args.index("--resume") + 1]); text = (run / "preset.toml").read_text()
else:
    text = Path(args[1]).read_text(); run = Path(args[args.index("--out") + 1])
    run.mkdir(parents=True, exist_ok=True); (run / "preset.toml").write_text(text)
mode = "normal"
for line in text.splitlines():
    if line.startswith("# fake-mode:"):
        mode = line.split(":", 1)[1].strip()
steps = 6 if mode == "normal" else 100000
if mode == "crash":
    print("Traceback (most recent call last):\nRuntimeError: fake crash before any status", flush=True)
    sys.exit(3)
if mode == "child":
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
if mode == "engine-error":  # the engine's own verdict, as rsd_engine.cli writes it, then exit code 1
    status(run, state="failed", stage="teacher", pid=os.getpid(), error="ValueError: teacher.lr = 1.0 made the loss non-finite")
    sys.exit(1)
stop = {"flag": False}
if mode != "ignore-term":
    signal.signal(signal.SIGTERM, lambda *a: stop.update(flag=True))
else:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
(run / "log.txt").open("a").write("fake engine started\n")
status(run, state="running", stage="teacher", pid=os.getpid(), progress=0.0, kimg=0.0, kimg_total=steps * 0.016, error=None)
for stage in ("teacher", "distill"):
    for i in range(1, steps + 1):
        time.sleep(0.05)
        if stop["flag"]:
            (run / "checkpoints" / f"{stage}-latest").mkdir(parents=True, exist_ok=True)
            (run / "checkpoints" / f"{stage}-latest" / "state.json").write_text("{}")
            status(run, state="stopped")
            (run / "log.txt").open("a").write("stopped\n")
            sys.exit(130)
        kimg = i * 0.016
        loss = {"loss": 1.0 / i} if stage == "teacher" else {"loss_fake_score": 2.0 / i, "loss_generator": 3.0 / i, "nan_count": 0}
        event(run, stage=stage, kind="progress", kimg=kimg, images_per_s=100.0, **loss)
        status(run, stage=stage, kimg=kimg, progress=i / steps, it_per_s=6.0, eta_s=(steps - i) * 0.05)
        if i % 3 == 0:
            model = "teacher-truncated" if stage == "teacher" else "generator"
            event(run, stage=stage, kind="fid", model=model, fid=50.0 / i, n=16, kimg=kimg)
            png(run / "samples" / f"{model}-kimg{int(kimg):06d}.png", i)
            png(run / "samples" / f"{model}.png", i)
for m in ("measurements", "clean", "teacher-full", "teacher-truncated", "generator"):
    png(run / "samples" / f"{m}.png", len(m))
metrics = {m: {"fid": 12.5, "kid": 0.004, "kid_std": 0.001, "n": 16, "seeds": [0, 15], "weights": w, "nfe": nfe, "images_per_s": 9.0,
               "reference": "fake"} for m, w, nfe in (("teacher-full", "teacher EMA", 35), ("teacher-truncated", "teacher EMA", 20),
                                                     ("generator", "generator EMA", 1))}
metrics["generator"]["proximal_fid"] = 10.0
metrics["teacher-denoiser"] = {"psnr": 25.0, "ssim": 0.8, "n": 16}
(run / "metrics.json").write_text(json.dumps(metrics))
status(run, state="done", stage="evaluate", progress=1.0)
"""


@pytest.fixture
def fake_engine(tmp_path) -> list[str]:
    """Command prefix of the fake engine."""
    script = tmp_path / "fake_engine.py"
    script.write_text(FAKE_ENGINE)
    return [sys.executable, str(script)]


def _group_gone(pgid: int) -> bool:
    """No live process of the group is left (zombies, already dead but not yet reaped by a
    container's init, do not count)."""
    from workbench.launcher import _group_exists

    return not _group_exists(pgid)


def _wait(predicate, timeout: float, every: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return predicate()


# --------------------------------------------------------------------------------------------
# names and folders
@pytest.mark.parametrize("bad", ["../x", "..", "a/b", "/etc/passwd", "~root", "a\\b", "", "   ", "x" * 81, "-lead", "C:\\x", "a b"])
def test_bad_names_are_refused_with_a_message(bad):
    with pytest.raises(BadName) as err:
        check_name(bad, "preset name")
    assert "preset name" in str(err.value)


def test_inside_refuses_symlink_escape(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(BadName):
        inside(tmp_path / "root", "link/x.toml")
    assert inside(tmp_path / "root", "ok.toml") == (tmp_path / "root" / "ok.toml").resolve()


def test_preset_store_shipped_read_only_and_user_presets(tmp_path):
    store = PresetStore(SHIPPED, tmp_path / "user")
    assert {"name": "quickstart", "kind": "shipped"} in [{"name": p.name, "kind": p.kind} for p in store.list()]
    text = store.read("quickstart")
    with pytest.raises(StoreError, match="read-only"):
        store.save("quickstart", text)
    assert store.save("mine.toml", text) == "mine"
    assert store.kind("mine") == "user" and store.read("mine") == text
    with pytest.raises(StoreError, match="exists already"):
        store.save("mine", text, overwrite=False)
    store.duplicate("quickstart", "copy")
    store.delete("copy")
    with pytest.raises(StoreError, match="cannot be deleted"):
        store.delete("quickstart")
    with pytest.raises(BadName):
        store.save("../escape", text)
    assert sorted(p.name for p in (tmp_path / "user").iterdir()) == ["mine.toml"]
    assert not (tmp_path / "escape.toml").exists()


# --------------------------------------------------------------------------------------------
# the preset form
def test_form_covers_every_schema_field_with_help_text():
    from rsd_engine.io import config

    names = {f.name for f in pe.form_fields()}
    for entry in config.schema_fields():
        if not isinstance(entry.get("default"), dict):
            assert f"{entry['section']}.{entry['key']}" in names
    f = pe.field_by_name("corruption.noise_sigma")
    assert "allowed: ≥ 0" in f.help_text() and "default: 0.2" in f.help_text()
    assert pe.field_by_name("corruption.operator").type == "enum"


def test_launch_checks_the_paths_a_preset_names_and_save_does_not(tmp_path):
    """A missing data.eval_path or teacher.checkpoint is refused before any launch, naming the field
    (as ``rsd-engine validate`` does); saving such a preset still works (paths are edited after a copy)."""
    text = SHIPPED.joinpath("quickstart.toml").read_text()
    assert pe.validate(text, paths=True).ok
    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=["true"])
    try:
        for field, value, why in (
            ("data.eval_path", str(tmp_path / "nope"), "no such folder"),
            ("teacher.checkpoint", str(tmp_path), "holds no teacher checkpoint"),
        ):
            bad = pe.set_field(text, field, value)
            v = pe.validate(bad, paths=True)
            assert not v.ok and [f for f, _ in v.problems] == [field], v.problems
            assert str(tmp_path) in v.problems[0][1] and why in v.problems[0][1]
            with pytest.raises(WorkbenchError, match=f"cannot launch.*{field}"):
                wb.launch(bad, "bad-path")
            assert wb.save_preset("with-" + field.replace(".", "-").replace("_", "-"), bad)
        assert wb.run_names() == []
    finally:
        wb.close()


def test_set_field_keeps_comments_and_validation_names_the_field():
    text = SHIPPED.joinpath("quickstart.toml").read_text()
    new = pe.set_field(text, "data.resolution", pe.from_widget(pe.field_by_name("data.resolution"), 30))
    assert new.splitlines()[0] == text.splitlines()[0]  # header comment kept
    assert "resolution = 30" in new
    v = pe.validate(new)
    assert not v.ok and [f for f, _ in v.problems] == ["data.resolution"]
    assert "`data.resolution`" in v.markdown()
    # an optional field emptied in the form is removed (engine default applies)
    new2 = pe.set_field(new, "data.max_images", pe.from_widget(pe.field_by_name("data.max_images"), ""))
    assert "max_images" not in new2
    with pytest.raises(pe.FieldInputError, match="network.block_out_channels"):
        pe.from_widget(pe.field_by_name("network.block_out_channels"), "[16, ")
    with pytest.raises(pe.FieldInputError, match=r"\(toml\)"):
        pe.set_field("[data\n", "data.resolution", 32)


def test_switching_the_operator_drops_the_old_operators_table():
    text = SHIPPED.joinpath("quickstart.toml").read_text()
    assert "[corruption.gaussian_blur]" in text
    switched = pe.set_field(text, "corruption.operator", "random_inpainting")
    assert "[corruption.gaussian_blur]" not in switched and 'operator = "random_inpainting"' in switched
    assert pe.validate(switched).ok, pe.validate(switched).problems
    kept = pe.set_field(text, "corruption.operator", "gaussian_blur")  # the selected operator keeps its table
    assert "[corruption.gaussian_blur]" in kept


def test_nested_operator_tables_become_operator_fields(monkeypatch):
    from rsd_engine.io import config

    original = config.schema_fields

    def with_nested():
        return original() + [
            {
                "section": "corruption",
                "key": "gaussian_blur",
                "type": "object",
                "nullable": False,
                "description": "",
                "default": {"kernel_size": 9, "std": 2.0},
            }
        ]

    monkeypatch.setattr(config, "schema_fields", with_nested)
    pe._form_fields.cache_clear()
    try:
        f = pe.field_by_name("corruption.gaussian_blur.kernel_size")
        assert f.operator == "gaussian_blur" and f.type == "integer" and f.default == 9
        assert pe.set_field("", f.name, 7).strip() == "[corruption.gaussian_blur]\nkernel_size = 7"
    finally:
        pe._form_fields.cache_clear()


# --------------------------------------------------------------------------------------------
# reading run folders
def _fake_run_folder(root: Path, name: str = "r1") -> Path:
    run = root / name
    (run / "samples").mkdir(parents=True)
    (run / "preset.toml").write_text("")
    (run / "status.json").write_text(
        json.dumps(
            {
                "state": "running",
                "stage": "distill",
                "progress": 0.5,
                "kimg": 1.5,
                "kimg_total": 3,
                "it_per_s": 2.0,
                "eta_s": 125,
                "updated": time.time(),
            }
        )
    )
    events = [
        {"stage": "teacher", "kind": "progress", "kimg": 0.5, "loss": 2.0, "images_per_s": 50},
        {"stage": "teacher", "kind": "fid", "model": "teacher-truncated", "fid": 80.0, "n": 64, "kimg": 0.5},
        {
            "stage": "distill",
            "kind": "progress",
            "kimg": 1.5,
            "loss_fake_score": 1.0,
            "loss_generator": 3.0,
            "nan_count": 0,
            "images_per_s": 20,
        },
        {"stage": "distill", "kind": "warning", "kimg": 1.5, "message": "x"},
    ]
    (run / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events) + '\n{"partial')
    for f in ("measurements.png", "generator.png", "generator-kimg000001.png", "teacher-truncated-kimg000000.png"):
        (run / "samples" / f).write_bytes(b"\x89PNG fake")
    (run / "metrics.json").write_text(
        json.dumps(
            {
                "generator": {
                    "fid": 12.345,
                    "kid": 0.0042,
                    "kid_std": 0.0011,
                    "n": 256,
                    "seeds": [0, 255],
                    "weights": "generator EMA",
                    "nfe": 1,
                    "proximal_fid": 9.5,
                }
            }
        )
    )
    return run


def test_run_reader_table_plots_gallery_metrics(tmp_path):
    run = _fake_run_folder(tmp_path)
    (tmp_path / ".workbench").mkdir()
    assert run_reader.list_runs(tmp_path) == ["r1"]
    row = run_reader.run_row(run)
    assert row["state"] == "running" and row["images_per_s"] == 20
    frame = run_reader.runs_frame([row])
    assert list(frame.iloc[0][["state", "stage", "progress", "images seen (kimg)", "ETA"]]) == [
        "running",
        "distill",
        "50 %",
        "1.5 / 3",
        "2 min",
    ]
    points = run_reader.run_points(RunDir(run).read_events())
    assert {p["series"] for p in points if p["plot"] == "fid"} == {"teacher-truncated (n=64)"}
    assert {p["series"] for p in points if p["plot"] == "loss" and p["series"] != "teacher loss"} == {"fake-score loss", "generator loss"}
    assert len([p for p in points if p["plot"] == "throughput"]) == 2
    assert run_reader.snapshots(run) == [0, 1]
    latest = run_reader.gallery_paths(run)
    assert latest["generator"].name == "generator.png" and latest["teacher-full"] is None
    snap = run_reader.gallery_paths(run, 1)
    assert snap["generator"].name == "generator-kimg000001.png" and snap["measurements"].name == "measurements.png"
    rows = run_reader.metrics_rows("r1", json.loads((run / "metrics.json").read_text()))
    assert rows[0][:9] == ["r1", "generator", "generator EMA", "12.35", "4.20 ± 1.10", "9.50", "256", "0–255", "1"]


# --------------------------------------------------------------------------------------------
# the launcher, with the fake engine
def _launch(lau: Launcher, name: str, mode: str = "normal") -> dict:
    return lau.launch(f'# fake-mode: {mode}\n[run]\nname = "x"\n', name)


def test_launch_runs_to_done_and_delete_needs_confirmation(tmp_path, fake_engine):
    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=fake_engine, grace_s=5)
    try:
        info = _launch(wb.launcher, "ok")
        assert wb.wait_state("ok", timeout_s=30) == "done"
        assert wb.run_metrics("ok")["generator"]["proximal_fid"] == 10.0
        assert _wait(lambda: _group_gone(info["pid"]), 5)
        with pytest.raises(WorkbenchError, match="confirm"):
            wb.delete_run("ok", "no")
        with pytest.raises(WorkbenchError, match="done"):
            wb.resume("ok")
        wb.delete_run("ok", "ok")
        assert wb.run_names() == []
    finally:
        wb.close()


@pytest.mark.parametrize("mode", ["child", "ignore-term"])
def test_stop_ends_the_whole_process_group(tmp_path, fake_engine, mode):
    lau = Launcher(tmp_path / "runs", engine_cmd=fake_engine, grace_s=1.0)
    try:
        info = _launch(lau, "long", mode)
        assert _wait(lambda: lau.state("long") == "running", 20)
        if mode == "child":
            time.sleep(0.3)  # let the child start
        with pytest.raises(Exception, match="still running"):
            lau.delete("long")
        state = lau.stop("long", wait_s=15)
        assert state == "stopped"
        assert _group_gone(info["pid"]), "a process of the run was left behind"
        status = json.loads((tmp_path / "runs" / "long" / "status.json").read_text())
        assert status["state"] == "stopped"
        if mode == "child":  # the engine handled SIGTERM and kept a checkpoint
            assert (tmp_path / "runs" / "long" / "checkpoints" / "teacher-latest" / "state.json").exists()
        if mode == "ignore-term":  # killed before any checkpoint: nothing to resume from
            with pytest.raises(Exception, match="no checkpoint"):
                lau.resume("long")
            return
        # a new run can start at once, and the stopped one resumes
        lau.resume("long")
        assert _wait(lambda: lau.state("long") == "running", 20)
        assert lau.stop("long", wait_s=15) == "stopped"
        record = json.loads((tmp_path / "runs" / "long" / "workbench.json").read_text())
        assert "--resume" in record["command"]
    finally:
        for run in lau.running():
            os.killpg(int(json.loads((tmp_path / "runs" / run / "workbench.json").read_text())["pgid"]), signal.SIGKILL)
        lau.close()


def test_crash_before_status_is_marked_failed_with_console(tmp_path, fake_engine):
    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=fake_engine)
    try:
        _launch(wb.launcher, "bad", "crash")
        assert wb.wait_state("bad", timeout_s=20) == "failed"
        assert "exit code 3" in wb.run_status("bad")["error"]
        assert "fake crash" in wb.log_tail("bad")
    finally:
        wb.close()


def test_runs_outlive_the_workbench(tmp_path, fake_engine):
    """A second workbench (a restarted server, another viewer) sees and stops a run started by the first."""
    first = Launcher(tmp_path / "runs", engine_cmd=fake_engine, grace_s=2.0)
    info = _launch(first, "shared", "child")
    first.close()
    second = Launcher(tmp_path / "runs", engine_cmd=fake_engine, grace_s=2.0)
    try:
        assert _wait(lambda: second.state("shared") == "running", 20)
        assert second.is_alive("shared")
        assert second.stop("shared", wait_s=15) == "stopped"
        assert _wait(lambda: _group_gone(info["pid"]), 5)
    finally:
        second.close()
        first._procs.clear()


def test_host_warning_for_non_loopback():
    from workbench.app import build_parser, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.runs_dir) == ("127.0.0.1", 7860, "runs")


def test_main_warns_when_bound_beyond_loopback(tmp_path, monkeypatch, capsys):
    import gradio as gr

    from workbench import app

    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: None)
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: None)
    app.main(["--host", "0.0.0.0", "--port", "0", "--runs-dir", str(tmp_path / "runs"), "--presets-dir", str(tmp_path / "p")])
    assert "WARNING: serving on 0.0.0.0" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# the whole app through gradio_client, real engine
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The workbench served on a free loopback port, with the real engine. Yields (client, wb, root)."""
    from gradio_client import Client

    from workbench.app import create_app, launch_kwargs

    root = tmp_path_factory.mktemp("wb")
    demo, wb = create_app(root / "runs", root / "presets", SHIPPED, grace_s=30)
    port = _free_port()
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(wb, "127.0.0.1", port))
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False), wb, root
    finally:
        for run in wb.launcher.running():
            try:
                wb.launcher.stop(run, wait_s=30)
            except Exception:  # noqa: BLE001
                pass
        demo.close()
        wb.close()


def _tiny_text(client, **extra) -> str:
    text = client.predict("quickstart", api_name="/get_preset")
    for field, value in {**TINY, **extra}.items():
        text = client.predict(text, field, value, api_name="/set_field")["text"]
    return text


def test_client_preset_round_trip(served):
    client, wb, root = served
    presets = client.predict(api_name="/list_presets")
    assert {"name": "quickstart", "kind": "shipped"} in presets
    text = client.predict("quickstart", api_name="/get_preset")
    bad = client.predict(text, "data.resolution", "30", api_name="/set_field")
    assert not bad["validation"]["ok"]
    assert [p["field"] for p in bad["validation"]["problems"]] == ["data.resolution"]
    with pytest.raises(Exception, match="data.resolution"):
        client.predict("broken", bad["text"], api_name="/save_preset_as")
    good = client.predict(text, "distill.alpha", "1.0", api_name="/set_field")
    assert good["validation"]["ok"] and "alpha = 1.0" in good["text"]
    assert client.predict("my-exp", good["text"], api_name="/save_preset_as") == {"name": "my-exp"}
    assert (root / "presets" / "my-exp.toml").read_text() == good["text"]
    assert {"name": "my-exp", "kind": "user"} in client.predict(api_name="/list_presets")
    with pytest.raises(Exception, match="read-only"):
        client.predict("quickstart", good["text"], api_name="/save_preset")
    assert client.predict("my-exp", "my-exp-copy", api_name="/duplicate_preset") == {"name": "my-exp-copy"}
    client.predict("my-exp-copy", api_name="/delete_preset")
    assert "alpha = 1.0" in client.predict(good["text"], api_name="/effective_preset")


def test_client_refuses_paths_outside_the_folders(served):
    client, wb, root = served
    text = client.predict("quickstart", api_name="/get_preset")
    before = sorted(p.name for p in root.parent.iterdir())
    for args, api in [
        (("../../etc/passwd",), "/get_preset"),
        (("/etc/passwd",), "/get_preset"),
        (("../evil", text), "/save_preset"),
        (("/tmp/evil", text), "/save_preset_as"),
        (("quickstart", "../../evil"), "/duplicate_preset"),
        (("../runs/x",), "/delete_preset"),
        ((text, "../escape"), "/launch_run"),
        (("..",), "/run_status"),
        (("../presets", "../presets"), "/delete_run"),
        (("/etc",), "/run_metrics"),
    ]:
        with pytest.raises(Exception, match=r"path|not allowed"):
            client.predict(*args, api_name=api)
    assert sorted(p.name for p in root.parent.iterdir()) == before
    assert not (root / "evil.toml").exists() and not (root / "escape").exists()


def test_client_tiny_run_to_done_metrics_and_gallery(served):
    client, wb, root = served
    text = _tiny_text(client)
    info = client.predict(text, "tiny-done", api_name="/launch_run")
    assert info["run"] == "tiny-done"
    end = time.monotonic() + 420
    state = ""
    while time.monotonic() < end:
        state = client.predict("tiny-done", api_name="/run_status")["state"]
        if state in ("done", "failed", "stopped"):
            break
        time.sleep(1)
    assert state == "done", client.predict("tiny-done", 40, api_name="/log_tail")
    rows = {r["run"]: r for r in client.predict(api_name="/list_runs")}
    assert rows["tiny-done"]["state"] == "done"
    metrics = client.predict("tiny-done", api_name="/run_metrics")
    assert {"teacher-full", "teacher-truncated", "generator"} <= set(metrics)
    assert all("n" in metrics[m] for m in ("teacher-full", "teacher-truncated", "generator"))
    assert any(e["kind"] == "progress" for e in client.predict("tiny-done", api_name="/run_events"))
    out = client.predict("tiny-done", "latest", api_name="/gallery")
    samples = root / "runs" / "tiny-done" / "samples"
    for model in run_reader.GALLERY_MODELS:
        assert Path(out["grids"][model]).read_bytes() == (samples / f"{model}.png").read_bytes(), model  # PNG, byte for byte
    assert {"teacher-full", "generator"} <= {row[1] for row in out["metrics"]["data"]}
    assert _wait(lambda: _group_gone(info["pid"]), 30), "the finished run left a process behind"


def test_client_export_run_writes_the_pipeline_inside_the_run(served, finished_run):
    client, wb, root = served
    finished_run(root / "runs" / "exported")
    res = client.predict("exported", "generator", "ema", False, api_name="/export_run")
    folder = wb.runs_dir / "exported" / "export-generator"
    assert res == {"run": "exported", "model": "generator", "weights": "ema", "folder": str(folder)}
    assert (folder / "model_index.json").is_file() and (folder / "unet" / "config.json").is_file() and (folder / "README.md").is_file()
    with pytest.raises(Exception, match="replace"):
        client.predict("exported", "generator", "ema", False, api_name="/export_run")
    with pytest.raises(Exception, match="raw generator weights"):
        client.predict("exported", "generator", "raw", False, api_name="/export_run")
    with pytest.raises(Exception, match="path|not allowed"):
        client.predict("../exported", "generator", "ema", True, api_name="/export_run")
    shown = client.predict("exported", "teacher", "ema", False, api_name="/ui_export")  # the Gallery tab's Export button
    assert shown.startswith("✓") and str(wb.runs_dir / "exported" / "export-teacher") in shown
    assert client.predict("exported", "teacher", "ema", False, api_name="/ui_export").startswith("✗")  # shown, not raised
    assert "exported" in {r["run"] for r in client.predict(api_name="/list_runs")}  # the page goes on


def test_client_stop_leaves_no_process_and_keeps_a_checkpoint(served):
    client, wb, root = served
    text = _tiny_text(client, **{"teacher.kimg": "50"})
    info = client.predict(text, "tiny-stop", api_name="/launch_run")
    assert _wait(lambda: client.predict("tiny-stop", api_name="/run_status").get("stage") == "teacher", 90, 0.5)
    time.sleep(1.0)
    res = client.predict("tiny-stop", api_name="/stop_run")
    assert res["state"] in ("stopping", "stopped")
    assert _wait(lambda: client.predict("tiny-stop", api_name="/run_status")["state"] == "stopped", 60, 0.5)
    assert _wait(lambda: _group_gone(info["pid"]), 30), "a process of the stopped run is still alive"
    assert client.predict("tiny-stop", api_name="/run_status")["alive"] is False
    assert (root / "runs" / "tiny-stop" / "checkpoints" / "teacher-latest").is_dir()
    with pytest.raises(Exception, match="not running"):
        client.predict("tiny-stop", api_name="/stop_run")
    assert client.predict("tiny-stop", "tiny-stop", api_name="/delete_run") == {"deleted": "tiny-stop"}


# --------------------------------------------------------------------------------------------
# preview and gallery refresh (fake engine / fake run folders)
def test_preview_runs_the_engine_and_stays_in_the_runs_folder(tmp_path, fake_engine):
    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=fake_engine)
    try:
        text = SHIPPED.joinpath("quickstart.toml").read_text()
        png, info = wb.preview(text, 8)
        assert png.read_bytes().startswith(b"\x89PNG") and (tmp_path / "runs") in png.parents
        assert "fake dataset: 64 images" in info and "resolution 32×32" in info
        assert wb.preview(text, 8)[0] == png  # cached
        with pytest.raises(WorkbenchError, match="data.resolution"):
            wb.preview(pe.set_field(text, "data.resolution", 30), 8)
        with pytest.raises(WorkbenchError, match="1 to 64"):
            wb.preview(text, 1000)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fake_engine.py", "runs"]
    finally:
        wb.close()


def test_gallery_refresh_keeps_the_viewers_place(tmp_path):
    """A refresh re-sends only what changed and never moves the selection."""
    from types import SimpleNamespace

    from workbench.ui import gallery_view

    _fake_run_folder(tmp_path / "runs")
    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=["true"])
    comps = SimpleNamespace(
        images_a=[object() for _ in range(4)],
        images_b=[object() for _ in range(4)],
        title_a=object(),
        title_b=object(),
        snap_a=object(),
        snap_b=object(),
        col_b=object(),
        metrics=object(),
        progress=object(),
        clean=object(),
        sig=object(),
    )
    try:
        first = gallery_view._render(wb, comps, "r1", "1", None, "latest", {}, None, force=True)
        assert first[comps.snap_a].value == "1"
        second = gallery_view._render(wb, comps, "r1", "1", None, "latest", first[comps.sig], "generator-kimg000001.png", force=False)
        assert set(second) == {comps.sig}, "an unchanged run must not re-send anything"
        samples = tmp_path / "runs" / "r1" / "samples"
        (samples / "generator-kimg000002.png").write_bytes(b"\x89PNG new")
        (samples / "teacher-truncated-kimg000002.png").write_bytes(b"\x89PNG new")
        third = gallery_view._render(wb, comps, "r1", "1", None, "latest", second[comps.sig], "generator-kimg000001.png", force=False)
        assert third[comps.snap_a].value == "1" and [c[1] for c in third[comps.snap_a].choices] == ["latest", "0", "1", "2"]
        gallery = third[comps.progress]
        names = [Path(item["image"]["path"]).name for item in gallery.value]
        assert names[gallery.selected_index] == "generator-kimg000001.png"
        assert all(img not in third for img in comps.images_a), "grids at the chosen snapshot did not change"
    finally:
        wb.close()


@pytest.mark.slow
def test_two_process_run_on_cpu_and_its_stop(tmp_path):
    """accelerate launch with 2 processes (gloo on CPU): a tiny run reaches done; a long one stops
    with its whole process group (launcher and both workers) gone."""
    text = SHIPPED.joinpath("quickstart.toml").read_text()
    for field, value in {**TINY, "accelerate.num_processes": "2"}.items():
        text = pe.set_field(text, field, pe.from_widget(pe.field_by_name(field), value))
    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, grace_s=30)
    try:
        info = wb.launch(text, "two")
        assert "--num_processes" in info["command"] and "2" in info["command"]
        assert wb.wait_state("two", timeout_s=240) == "done", wb.log_tail("two")
        assert wb.run_status("two")["num_processes"] == 2
        long = wb.launch(pe.set_field(text, "teacher.kimg", 50.0), "two-long")
        assert _wait(lambda: wb.run_status("two-long").get("stage") == "teacher", 120, 0.5)
        time.sleep(1)
        wb.stop("two-long", wait_s=60)
        assert wb.wait_state("two-long", ("stopped",), timeout_s=60) == "stopped"
        assert _wait(lambda: _group_gone(long["pid"]), 30)
    finally:
        for run in wb.launcher.running():
            wb.launcher.stop(run, wait_s=30)
        wb.close()


def test_client_preview_shows_the_corruption_of_real_images(served):
    client, wb, root = served
    text = client.predict("quickstart", api_name="/get_preset")
    image, info = client.predict(text, 8, api_name="/preview")
    path = image if isinstance(image, str) else image["path"]
    assert Path(path).read_bytes().startswith(b"\x89PNG")
    assert "fashion-mnist" in info and "resolution 32×32" in info and "1 channel" in info
    bad = client.predict(text, "data.resolution", "30", api_name="/set_field")["text"]
    image, info = client.predict(bad, 8, api_name="/preview")
    assert image is None and "data.resolution" in info


# --------------------------------------------------------------------------------------------
# robustness of what the page shows (issue 11, items 7 and 8)
def test_failed_run_shows_its_exit_code_and_resume_needs_a_checkpoint(tmp_path, fake_engine):
    from workbench import runs_page

    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=fake_engine)
    try:
        for run, mode, code in (("engine-error", "engine-error", 1), ("crash", "crash", 3)):
            _launch(wb.launcher, run, mode)
            assert wb.wait_state(run, timeout_s=20) == "failed"
            assert _wait(lambda: wb.run_status(run)["exit_code"] == code, 10)
            detail = runs_page.detail_md(wb, run)
            assert f"exit code {code}" in detail, detail
            assert run_reader.runs_frame(wb.run_rows()).set_index("run").loc[run, "state"].endswith(f"exit code {code}")
            assert runs_page.buttons_for(wb, run) == (False, False), "Resume offered on a run without a checkpoint"
            with pytest.raises(WorkbenchError, match="no checkpoint"):
                wb.resume(run)
        assert "non-finite" in runs_page.detail_md(wb, "engine-error")
        latest = tmp_path / "runs" / "engine-error" / "checkpoints" / "teacher-latest"
        latest.mkdir(parents=True)
        (latest / "state.json").write_text("{}")
        assert runs_page.buttons_for(wb, "engine-error") == (False, True)
    finally:
        wb.close()


def test_stopping_message_is_replaced_once_the_run_has_stopped(tmp_path, fake_engine):
    from workbench import runs_page

    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=fake_engine, grace_s=5)
    try:
        _launch(wb.launcher, "long", "child")
        assert _wait(lambda: wb.launcher.state("long") == "running", 20)
        out, sig = runs_page.tick(wb, "long", {}, "long")
        assert out.action_msg is None and out.stopping is None, "replaced while the run still runs"
        assert out.names == (["long"], "long") and out.buttons == (True, False) and sig["names"] == ["long"]
        assert runs_page.tick(wb, "long", sig, None)[0].names is None  # a second tick sends only what changed
        assert wb.stop("long", wait_s=15)["state"] == "stopped"
        out, _ = runs_page.tick(wb, "long", {}, "long")
        assert "stopped" in out.action_msg and "stopping" not in out.action_msg
        assert "Resume" in out.action_msg and out.stopping == (None,)
    finally:
        wb.close()


def test_detail_and_table_show_sane_progress_kimg_and_eta(tmp_path):
    from workbench import runs_page

    run = _fake_run_folder(tmp_path / "runs")
    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=["true"])
    try:
        RunDir(run).write_status(progress=1.12, eta_s=-3.0)  # a stage that overshoots its length; a meaningless ETA
        detail = runs_page.detail_md(wb, "r1")
        assert "100 % of the stage" in detail and "112" not in detail
        assert "ETA" not in detail
        assert run_reader.runs_frame(wb.run_rows()).loc[0, "progress"] == "100 %"
        RunDir(run).write_status(stage="evaluate", progress=0.25, kimg=3.0, kimg_total=3.0, eta_s=0)  # a status of an older engine
        detail = runs_page.detail_md(wb, "r1")
        assert "stage **evaluate**" in detail and "kimg" not in detail, detail
        assert run_reader.runs_frame(wb.run_rows()).loc[0, "images seen (kimg)"] == ""
    finally:
        wb.close()


def test_messages_show_backslashes_and_markdown_characters_as_typed():
    from workbench.ui.common import err_md

    assert pe.md_text(r"a\b") == r"a\\b"  # Markdown shows the backslash instead of swallowing it
    assert err_md(r"name 'a\b_*c*_' is not allowed") == r"✗ name 'a\\b\_\*c\*\_' is not allowed"
    assert pe.md_text("<b>&") == "&lt;b&gt;&amp;"
    with pytest.raises(BadName) as e:
        check_name(r"a\b", "preset name")
    assert r"without '/', '\' or" in str(e.value)
    assert r"without '/', '\\' or" in err_md(e.value)  # was rendered as "without '/', '' or"


def test_snapshots_below_one_kimg_each_show_in_the_gallery(tmp_path):
    run = _fake_run_folder(tmp_path / "runs")
    for kimg, fill in ((0.016, b"A"), (0.032, b"B")):
        RunDir(run).grid_path("generator", kimg).write_bytes(b"\x89PNG " + fill)
    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=["true"])
    try:
        assert wb.snapshots("r1") == [0, 0.016, 0.032, 1]
        assert wb.gallery("r1", 0.016)["generator"].read_bytes().endswith(b"A")
        assert wb.gallery("r1", 0.032)["generator"].read_bytes().endswith(b"B")
        assert wb.gallery("r1", 1)["generator"].name == "generator-kimg000001.png"  # an earlier run's whole-kimg name
        from workbench.ui import gallery_view

        assert [c[1] for c in gallery_view._snap_choices(wb, "r1")] == ["latest", "0", "0.016", "0.032", "1"]
    finally:
        wb.close()


def test_repeated_launch_clicks_start_one_run_and_say_so(tmp_path, fake_engine):
    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=fake_engine, grace_s=2)
    text = "# fake-mode: child\n" + SHIPPED.joinpath("quickstart.toml").read_text()
    try:
        first = wb.launch(text)
        with pytest.raises(WorkbenchError, match="not launched again.*give a run name"):
            wb.launch(text)
        assert wb.run_names() == [first["run"]]
        named = wb.launch(text, "second-on-purpose")  # a deliberate second run has a name
        assert sorted(wb.run_names()) == sorted([first["run"], named["run"]])
        quick = SHIPPED.joinpath("quickstart.toml").read_text()  # a run that ends at once: a double click still starts one
        ended = wb.launch(quick)["run"]
        assert wb.wait_state(ended, timeout_s=60) == "done"
        with pytest.raises(WorkbenchError, match="has ended"):
            wb.launch(quick)
    finally:
        for run in wb.launcher.running():
            wb.launcher.stop(run, wait_s=10)
        wb.close()


def test_client_gallery_returns_paths_and_a_table(served):
    client, wb, root = served
    run = _fake_run_folder(root / "runs", "gallery-api")
    out = client.predict("gallery-api", "1", api_name="/gallery")
    assert out["run"] == "gallery-api" and out["snapshot"] == "1" and out["state"] == "running"
    assert out["grids"]["generator"] == str(run / "samples" / "generator-kimg000001.png")
    assert out["grids"]["measurements"] == str(run / "samples" / "measurements.png") and out["grids"]["teacher-full"] is None
    assert out["metrics"]["headers"] == run_reader.METRICS_COLUMNS
    assert out["metrics"]["data"][0][:4] == ["gallery-api", "generator", "generator EMA", "12.35"]
    with pytest.raises(Exception, match="latest"):
        client.predict("gallery-api", "soon", api_name="/gallery")


def test_client_preview_of_an_mri_preset_shows_kspace_and_magnitudes(served):
    """The shipped MRI preset previews the real mricron-data slices: mask, coil 1, zero-filled, clean (4 rows)."""
    from PIL import Image

    client, wb, root = served
    text = client.predict("mri-brain-r4", api_name="/get_preset")
    image, info = client.predict(text, 4, api_name="/preview")
    path = image if isinstance(image, str) else image["path"]
    with Image.open(path) as im:  # four rows of 64-pixel tiles, each under its label band
        assert im.width == 4 * 65 + 1 and im.height > 4 * 65 + 1 and im.mode == "RGB"
    assert "k-space line mask" in info and "simulated" in info and "mri-nifti" in info and "2 channel" in info
    assert "**Grid:** 261×261 px, mode L" in info and "**Operator settings:** acceleration = 4 · coils = 4" in info


def test_preview_rows_get_their_labels_and_tiles_keep_every_pixel(tmp_path):
    """The preview grid is enlarged by a whole factor (nearest neighbour) under one label band per row;
    labels that do not match the grid's rows leave the grid as it is."""
    import numpy as np
    from PIL import Image

    from workbench.preview_labels import MIN_TILE_PX, labelled_preview, row_labels

    rng = np.random.default_rng(0)
    grid = np.zeros((2 * 9 + 1, 3 * 9 + 1), np.uint8)  # 2 rows × 3 tiles of 8×8 px, 1-pixel gaps
    for r in range(2):
        for c in range(3):
            grid[1 + 9 * r : 9 + 9 * r, 1 + 9 * c : 9 + 9 * c] = rng.integers(1, 255, (8, 8))
    Image.fromarray(grid, "L").save(tmp_path / "grid.png")
    labels = row_labels("data: x\nrows: clean test images | measurements y = A(x) + σε\nnote: y")
    assert labels == ["clean test images", "measurements y = A(x) + σε"]
    out = labelled_preview(tmp_path / "grid.png", labels, tmp_path / "labelled.png")
    scale = MIN_TILE_PX // 8
    with Image.open(out) as im:
        shown = np.asarray(im.convert("L"))
    assert shown.shape[1] == grid.shape[1] * scale
    band = shown.shape[0] - grid.shape[0] * scale
    assert band > 0 and (shown[:4] == 255).all()  # a white label band on top
    bottom_row = shown[-(9 * scale + scale) :]  # the second row of tiles and the last gap, enlarged
    assert (bottom_row == np.kron(grid[9:], np.ones((scale, scale), np.uint8))).all()
    assert labelled_preview(tmp_path / "grid.png", ["one", "two", "three"], tmp_path / "x.png") == tmp_path / "grid.png"


def test_compare_page_puts_runs_on_one_global_axis(tmp_path):
    """The Live plots tab's page, without Gradio: three runs in one FID plot, the distillation after
    the teacher on the kimg axis (boundary marked), a one-point series drawn with a marker, the
    teacher baseline as a line per run, log scale and smoothing of losses, the comparison table and
    the preset differences."""
    from workbench.ui.plots_view import page

    runs = tmp_path / "runs"
    for i, name in enumerate(("a", "b", "c")):
        run = runs / name
        run.mkdir(parents=True)
        (run / "preset.toml").write_text(f'[corruption]\noperator = "identity"\nnoise_sigma = {0.1 * (i + 1):.1f}\n[distill]\nkimg = 2\n')
        events = [
            {"time": 100.0, "stage": "teacher", "kind": "progress", "kimg": 1.0, "loss": 2.0, "images_per_s": 50},
            {"time": 160.0, "stage": "teacher", "kind": "progress", "kimg": 2.0, "loss": 1.0, "images_per_s": 50},
            {"time": 170.0, "stage": "teacher", "kind": "fid", "model": "teacher-truncated", "fid": 80.0, "n": 16, "kimg": 2.0},
            {"time": 171.0, "stage": "distill", "kind": "teacher_baseline", "model": "teacher-truncated", "fid": 80.0, "n": 16},
            {"time": 172.0, "stage": "distill", "kind": "fid", "model": "generator", "fid": 90.0 - i, "n": 16, "kimg": 0.0},
        ]
        if name != "c":  # run c has one generator point only
            events.append({"time": 220.0, "stage": "distill", "kind": "fid", "model": "generator", "fid": 70.0, "n": 16, "kimg": 1.0})
        (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        (run / "status.json").write_text(json.dumps({"state": "done"}))
        (run / "metrics.json").write_text(
            json.dumps(
                {
                    "teacher-truncated": {"fid": 50.0, "n": 16},
                    "generator": {"fid": 45.0, "n": 16},
                    RACE: {"teacher_model": "teacher-truncated", "final": {"ratio": 0.9}},
                }
            )
        )
    wb = Workbench(runs, tmp_path / "presets", SHIPPED, engine_cmd=["true"])
    try:
        shown = page(wb, "a", ["b", "c"], "images seen (kimg)", True, 0.6)
        fid = shown["fid"]
        gen = {t.name: t for t in fid.data if "generator (n=16)" in t.name and "target" not in t.name}
        assert set(gen) == {"a · generator (n=16)", "b · generator (n=16)", "c · generator (n=16)"}
        assert list(gen["a · generator (n=16)"].x) == [2.0, 3.0]  # distillation after the teacher's 2 kimg
        assert list(gen["c · generator (n=16)"].x) == [2.0] and "markers" in gen["c · generator (n=16)"].mode
        targets = [t for t in fid.data if "target" in t.name]
        assert len(targets) == 3 and all(list(t.y) == [80.0, 80.0] for t in targets)
        assert any(s.type == "line" and s.x0 == 2.0 for s in fid.layout.shapes)  # distillation starts
        loss = shown["loss"]
        assert loss.layout.yaxis.type == "log"
        ticks = dict(zip(loss.layout.yaxis.tickvals, loss.layout.yaxis.ticktext))
        assert {1.0: "1", 2.0: "2"}.items() <= ticks.items() and all(float(text) == value for value, text in ticks.items())
        teacher = next(t for t in loss.data if t.name == "a · teacher loss")
        assert list(teacher.y) == pytest.approx([2.0, (0.6 * 0.4 * 2.0 + 0.4 * 1.0) / (1 - 0.36)])
        minutes = page(wb, "a", [], "wall-clock minutes", False, 0.0)["fid"]
        assert list(next(t for t in minutes.data if t.name == "generator (n=16)").x) == pytest.approx([72 / 60, 120 / 60])
        table = shown["table"]
        assert list(table["run"]) == ["a", "b", "c"] and list(table["σ"]) == ["0.1", "0.2", "0.3"]
        assert list(table.iloc[0][["teacher FID (n)", "generator FID (n)", "ratio"]]) == ["50.00 (n=16)", "45.00 (n=16)", "0.900"]
        assert list(shown["diff"].columns) == ["field", "a", "b", "c"]
        assert shown["diff"].values.tolist() == [["corruption.noise_sigma", "0.1", "0.2", "0.3"]]
        one = page(wb, "a", [], "images seen (kimg)", False, 0.0)["fid"]
        assert one.layout.showlegend and one.layout.height < fid.layout.height  # more runs: a taller figure, not a smaller plot
        assert (
            fid.layout.height - fid.layout.margin.t - fid.layout.margin.b == one.layout.height - one.layout.margin.t - one.layout.margin.b
        )
        assert any(s.type == "line" and s.x0 == pytest.approx(71 / 60) for s in minutes.layout.shapes)  # the boundary on the minutes axis
    finally:
        wb.close()


def test_finished_run_row_and_verdict_row_say_what_they_mean(tmp_path):
    """A finished run's row gives its final FIDs (with n and the verdict) and its duration; the metrics
    table's verdict row keeps the ratio out of the KID column; a teacher's blank proximal FID says why."""
    run = tmp_path / "done-run"
    run.mkdir()
    (run / "preset.toml").write_text("")
    (run / "workbench.json").write_text(json.dumps({"launched": 1000.0}))
    (run / "status.json").write_text(json.dumps({"state": "done", "stage": "evaluate", "updated": 1000.0 + 5400}))
    final = {"generator_fid": 12.1, "teacher_fid": 13.4, "n": 150, "ratio": 0.903, "generator_better": True}
    metrics = {
        "teacher-truncated": {"fid": 13.4, "n": 150},
        "generator": {"fid": 12.1, "n": 150, "proximal_fid": 9.0},
        RACE: {"teacher_model": "teacher-truncated", "final": final},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    frame = run_reader.runs_frame([run_reader.run_row(run)])
    assert list(frame.iloc[0][["final FID", "duration"]]) == ["generator 12.1 vs teacher 13.4 (n=150) ✓", "1 h 30 min"]
    table = run_reader.metrics_frame(run_reader.metrics_rows("done-run", metrics), drop_empty=False)
    verdict = table[table["model"] == "generator vs teacher-truncated"].iloc[0]
    assert verdict["KID ×10³"] == "" and verdict["note"].startswith("ratio 0.903")
    assert table[table["model"] == "teacher-truncated"].iloc[0]["proximal FID"] == "generator only"
    denoiser = run_reader.metrics_rows("done-run", {"teacher-denoiser": {"psnr": 25.0, "ssim": 0.8, "n": 16}})[0]
    row = dict(zip(run_reader.METRICS_COLUMNS, denoiser))
    assert row["FID"] == row["KID ×10³"] == "" and row["note"].startswith("PSNR 25.00 dB, SSIM 0.800")  # not in the FID column


def test_compare_a_whole_study_folder_and_the_ratio_of_equal_fids(tmp_path):
    """A study folder (runs one and two levels deeper, as benchmarks/fidelity_study.py writes them) is
    one "Compare with" choice that draws all its runs; the selected run is never offered to compare
    with itself; the table's ratio comes from the two final FIDs (1.000 when equal, "n differs" when
    measured at different n), with no race record needed."""
    from workbench.ui.plots_view import compare_choices, page

    runs = tmp_path / "runs"

    def make_run(folder: Path, teacher_fid: float, generator_fid: float, generator_n: int = 16) -> None:
        folder.mkdir(parents=True)
        (folder / "preset.toml").write_text('[corruption]\noperator = "identity"\nnoise_sigma = 0.2\n')
        (folder / "events.jsonl").write_text(
            json.dumps(
                {"time": 1.0, "stage": "distill", "kind": "fid", "model": "generator", "fid": generator_fid, "n": generator_n, "kimg": 0.5}
            )
            + "\n"
        )
        (folder / "metrics.json").write_text(
            json.dumps({"teacher-truncated": {"fid": teacher_fid, "n": 16}, "generator": {"fid": generator_fid, "n": generator_n}})
        )

    make_run(runs / "plain", 12.5, 12.5)
    make_run(runs / "study-x" / "alpha-1", 40.0, 30.0)
    make_run(runs / "study-x" / "alpha-2", 40.0, 35.0, generator_n=32)
    make_run(runs / "study-x" / "teachers" / "t1", 40.0, 44.0)
    (runs / "study-x" / "study.json").write_text("{}")
    (runs / "empty-folder").mkdir()
    wb = Workbench(runs, tmp_path / "presets", SHIPPED, engine_cmd=["true"])
    try:
        assert wb.run_names() == ["plain"]  # the Runs tab lists runs it can stop and resume only
        choices = compare_choices(wb, "plain")
        assert choices == ["study-x/", "study-x/alpha-1", "study-x/alpha-2", "study-x/teachers/t1"]
        assert "plain" in compare_choices(wb, "study-x/alpha-1")
        shown = page(wb, "plain", ["plain", "study-x/"], "images seen (kimg)", False, 0.0)
        table = shown["table"].set_index("run")
        assert list(table.index) == ["plain", "study-x/alpha-1", "study-x/alpha-2", "study-x/teachers/t1"]
        assert list(table["ratio"]) == ["1.000", "0.750", "n differs", "1.100"]
        names = {t.name for t in shown["fid"].data}
        assert {"plain · generator (n=16)", "study-x/alpha-1 · generator (n=16)", "study-x/alpha-2 · generator (n=32)"} <= names
        with pytest.raises(WorkbenchError, match="path"):
            wb.run_dir("study-x/..")
        with pytest.raises(WorkbenchError, match="at most 2 folders"):
            wb.run_dir("study-x/teachers/t1/samples")
    finally:
        wb.close()


def test_presets_page_events_without_gradio(tmp_path):
    """The Presets tab's events as plain functions: letters in a number field keep the TOML's key and
    make the verdict invalid until fixed; Save refuses while the form holds such a value; Save as
    leaves nothing unsaved (the Runs tab's launch line says so); picking another preset with unsaved
    edits asks first; the endpoints answer without Gradio."""
    from workbench import presets_page as pp
    from workbench.endpoints import ENDPOINTS, Endpoints

    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=["true"])
    try:
        ed = pp.load(wb, "quickstart").editor
        assert not ed.modified and ed.name == "quickstart"
        bad = pp.field_edited(wb, ed, "teacher.kimg", "abc")
        assert bad.editor.text == ed.text and "teacher.kimg" in bad.editor.input_errors
        assert "Valid preset" not in bad.page.validation and bad.page.fields["teacher.kimg"]["error"] is True
        assert "unsaved changes" in bad.page.current
        assert pp.save_as(wb, bad.editor, "mine").msg.startswith("✗ not saved: teacher.kimg")
        fixed = pp.field_edited(wb, bad.editor, "teacher.kimg", 0.5)
        assert fixed.editor.input_errors == {} and "kimg = 0.5" in fixed.page.text and fixed.page.fields["teacher.kimg"]["error"] is False
        assert pp.save(wb, fixed.editor).msg.startswith("✗") and "read-only" in pp.save(wb, fixed.editor).msg
        saved = pp.save_as(wb, fixed.editor, "mine")
        assert saved.editor.name == "mine" and not saved.editor.modified and saved.choices == ("mine",) and saved.clear_new_name
        assert "with unsaved edits" not in saved.page.launch and "**mine**" in saved.page.launch
        typed = pp.text_edited(wb, saved.editor, saved.editor.text.replace("kimg = 0.5", "kimg = 2"), {"teacher.kimg": 0.5})
        assert typed.page.fields["teacher.kimg"]["value"] == 2 and typed.page.text is None  # the form follows the TOML
        ask = pp.pick(wb, typed.editor, "quickstart")
        assert ask.switch[0] and ask.pending == "quickstart" and ask.choices == ("mine",) and ask.page is None
        assert pp.pick(wb, saved.editor, "quickstart").editor.name == "quickstart"  # nothing unsaved: loads at once
        assert pp.delete(wb, saved.editor).msg == "✓ Deleted 'mine'"
        api = Endpoints(wb)
        assert all(callable(getattr(api, name)) for name in ENDPOINTS)
        assert {"name": "quickstart", "kind": "shipped"} in api.list_presets()
        with pytest.raises(WorkbenchError, match="snapshot"):
            api.gallery("nothing-here", "soon")
    finally:
        wb.close()


def test_a_resumed_run_plots_forward_not_back_to_its_checkpoint():
    """After a resume the engine logs again from its checkpoint's images seen: those later records
    replace the earlier ones at or beyond that point, so each curve runs forward."""
    events = [
        {"time": float(i), "stage": "teacher", "kind": "progress", "kimg": k, "loss": loss}
        for i, (k, loss) in enumerate([(1.0, 5.0), (2.0, 4.0), (3.0, 3.0), (2.0, 3.5), (3.0, 2.5), (4.0, 2.0)])
    ]
    points = [p for p in run_reader.run_points(events) if p["series"] == "teacher loss"]
    assert [(p["kimg"], p["value"]) for p in points] == [(1.0, 5.0), (2.0, 3.5), (3.0, 2.5), (4.0, 2.0)]


def test_an_engine_crash_reads_as_one_line_and_keeps_its_output(tmp_path, fake_engine):
    """An engine command that dies with a Python traceback (the fake engine has no ``export``) is
    refused with the traceback's last line and the path of a file holding the whole output."""
    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=fake_engine, grace_s=5)
    try:
        run = wb.launch(SHIPPED.joinpath("quickstart.toml").read_text(), "crash-export")["run"]
        assert wb.wait_state(run, timeout_s=60) == "done"
        with pytest.raises(WorkbenchError) as err:
            wb.export(run)
        message = str(err.value)
        assert message.startswith("export failed: AssertionError") and "Traceback" not in message and "^" not in message
        saved = Path(message.rsplit("whole output: ", 1)[1].rstrip(")"))
        assert "Traceback (most recent call last)" in saved.read_text() and saved.parent == wb.work_dir
    finally:
        wb.close()


def test_ended_runs_read_as_ended(tmp_path, fake_engine):
    """A run that fails at start-up: the refresh turns Stop off even when this viewer's memory says it
    already sent that (a launch set the buttons since); Live plots says it failed before logging
    anything; the race column and the throughput read as ended; one run shows no empty differences table."""
    from workbench import runs_page
    from workbench.ui.plots_view import page

    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=fake_engine, grace_s=5)
    try:
        _launch(wb.launcher, "crash", "crash")
        assert _wait(lambda: wb.run_status("crash")["state"] == "failed", 20)
        out, _ = runs_page.tick(wb, "crash", {"buttons": [False, False]}, None)
        assert out.buttons == (False, False)
        shown = page(wb, "crash", [], "images seen (kimg)", False, 0.0)
        assert shown["latest"] == "**crash** failed before logging any events: its log is in the Runs tab."
        assert "pick another run" in shown["diff"].iloc[0, 0]
        frame = run_reader.runs_frame(wb.run_rows())  # the Runs tab words the race as Live plots does
        assert frame.loc[0, "generator below teacher"] == shown["table"].loc[0, "generator below teacher"] == "not measured"
    finally:
        wb.close()
    row = {"run": "r", "state": "done", "images_per_s": 100.0, "it_per_s": 6.0}
    assert run_reader.runs_frame([row]).loc[0, "throughput"] == "last 100.0 img/s · 6.00 it/s"
    baseline = [{"stage": "distill", "kind": "teacher_baseline", "model": "teacher-truncated", "fid": 80.0, "n": 16}]
    assert run_reader._race_text({"state": "done"}, baseline) == "no"
    assert run_reader._race_text({"state": "running"}, baseline) == "not yet"
    assert run_reader._race_text({"state": "done"}, []) == "not measured"


def test_a_resumed_run_keeps_its_first_launch_for_its_duration(tmp_path, fake_engine):
    """Resume rewrites the launch record but keeps the first launch time, so the duration shown in the
    Runs tab and in Live plots' table counts from the first launch (stopped periods included)."""
    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=fake_engine, grace_s=5)
    try:
        _launch(wb.launcher, "long", "long")
        assert _wait(lambda: wb.run_status("long")["state"] == "running", 20)
        first = json.loads((tmp_path / "runs" / "long" / "workbench.json").read_text())["launched"]
        assert wb.stop("long", wait_s=15)["state"] == "stopped"
        time.sleep(1.5)
        wb.resume("long")
        record = json.loads((tmp_path / "runs" / "long" / "workbench.json").read_text())
        assert record["launched"] > first and record["first_launched"] == first
        assert _wait(lambda: wb.run_status("long")["state"] == "running", 20)
        assert wb.stop("long", wait_s=15)["state"] == "stopped"
        status = wb.run_status("long")
        assert run_reader.wall_duration(tmp_path / "runs" / "long", status) == pytest.approx(status["updated"] - first)
        assert run_reader.wall_duration(tmp_path / "runs" / "long", status) > 1.5
    finally:
        wb.close()


def test_unsaved_edits_are_kept_across_a_reload_until_saved_or_discarded(tmp_path):
    """Every edit that leaves the editor different from the saved preset keeps the text as a draft in
    the runs folder; a page opening with that preset offers it back; restoring puts it into the editor;
    saving or discarding forgets it."""
    from workbench import presets_page as pp

    wb = Workbench(tmp_path / "runs", tmp_path / "presets", SHIPPED, engine_cmd=["true"])
    try:
        ed = pp.load(wb, "quickstart").editor
        assert pp.opened(wb, "quickstart").restore == (False, "")
        edited = pp.field_edited(wb, ed, "teacher.kimg", 0.5)
        assert wb.draft("quickstart")[0] == edited.editor.text
        offer = pp.opened(wb, "quickstart").restore  # what a reloaded page shows
        assert offer[0] and "Unsaved edits of **quickstart**" in offer[1]
        assert pp.load(wb, "quickstart").restore[0]  # picking the preset again offers them too
        newest = pp.opened(wb, newest=True)  # a page opening offers the newest kept edits of any preset
        assert newest.restore[0] and newest.restore_name == "quickstart"
        back = pp.restore(wb, "quickstart")
        assert back.page.text == edited.editor.text and back.editor.modified and back.restore == (False, "")
        assert pp.text_edited(wb, back.editor, ed.text, {}).editor.modified is False  # the saved text typed back
        assert wb.draft("quickstart") is None  # nothing to keep
        again = pp.field_edited(wb, back.editor, "teacher.kimg", 0.5)
        saved = pp.save_as(wb, again.editor, "mine")
        assert wb.draft("quickstart") is None and wb.draft("mine") is None
        pp.field_edited(wb, saved.editor, "teacher.kimg", 2)
        assert wb.draft("mine") is not None
        assert pp.forget(wb, "mine").restore == (False, "") and wb.draft("mine") is None
    finally:
        wb.close()
