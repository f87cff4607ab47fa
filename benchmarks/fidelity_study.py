"""Fidelity study: distillations from saved teachers, the generator's FID against distillation kimg and
training minutes, beside the truncated teacher's FID at the same n, seeds and reference.

    python benchmarks/fidelity_study.py benchmarks/studies/quickstart.toml [--out runs/study] [--only NAME …]
        [--report-only] [--results benchmarks/RESULTS.md]

The grid file (TOML) names a base preset, the teachers and the settings:

    [study]
    title = "…"                       # heading of the results section
    preset = "presets/quickstart.toml" # base preset (relative to the repository root)
    kimg = 16                          # distillation length of every setting (thousands of images)
    every_kimg = 4                     # live FID interval
    n = 150                            # FID samples, seeds 0 … n−1, for teachers and generators alike
    set = []                           # overrides common to every run (section.key=value)

    [teachers.t32]                     # trained once into OUT/teachers/t32 (distill.kimg = 0)
    set = ["teacher.kimg=32"]

    [[setting]]
    name = "baseline"                  # run folder OUT/<name>
    teacher = "t32"
    set = []                           # this setting's overrides (distill.*, …)

Every run is an ordinary ``rsd-engine run`` (``python -m rsd_engine``) with its own folder, so a study
stopped at any point resumes where it stopped (finished runs are skipped, unfinished ones are
resumed). Each teacher run evaluates the teacher samplers at n; each setting distils from its teacher
with live FID at n every ``every_kimg`` (the engine records, per live FID, the distillation kimg and
training seconds, and the first live FID below the teacher's) and evaluates the generator at n.

Beside FID and KID the table gives a high-pass FID: the same FID on x − blur(x) (3×3 box blur,
reflect padding, scaled ×2 and clipped to [-1, 1]) of generated and clean images alike. It sees fine
detail only: a posterior-mean sampler (the truncated teacher) loses detail there, a generator with
spurious texture adds some.

Writes OUT/study.json (all curves and records), OUT/study.png (FID against kimg and against minutes,
one curve per setting, each teacher's FID as a dashed line), OUT/study.md (the table), and the same
section at the top of benchmarks/RESULTS.md (or --results), with the plot beside it as
study-<grid stem>.png. A setting that was stopped is reported with its last live FID (and its latest
EMA generator for the high-pass FID), marked "stopped at … kimg".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import tomli

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from results_file import prepend_section  # noqa: E402

from rsd_engine import assembly  # noqa: E402
from rsd_engine.io import config as cfg  # noqa: E402
from rsd_engine.io.runs import (  # noqa: E402
    FINAL_NETWORK,
    GENERATOR,
    GENERATOR_FINAL,
    TEACHER_FULL,
    TEACHER_TRUNCATED,
    RunDir,
    first_crossing,
    is_valid_name,
    teacher_baseline,
)


class StudyError(ValueError):
    """A grid file that cannot be run; the message names the file and the entry."""


def load_grid(path: Path) -> dict:
    """Read and check a grid file.

    Returns:
        ``{"study": {...}, "teachers": {name: {"set": [...]}}, "settings": [{"name", "teacher", "set"}]}``
        with defaults filled (``title`` = file stem, ``set`` = []).

    Raises:
        StudyError: unreadable TOML, a missing key, an unknown teacher, a duplicate or unsafe name.
    """
    try:
        data = tomli.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomli.TOMLDecodeError) as e:
        raise StudyError(f"{path}: cannot read the grid ({e})") from None
    study = data.get("study")
    if not isinstance(study, dict):
        raise StudyError(f"{path}: missing [study] table")
    for key in ("preset", "kimg", "every_kimg", "n"):
        if key not in study:
            raise StudyError(f"{path}: [study] needs {key!r}")
    study.setdefault("title", path.stem)
    study.setdefault("set", [])
    teachers = data.get("teachers", {})
    settings = data.get("setting", [])
    if not teachers or not settings:
        raise StudyError(f"{path}: needs at least one [teachers.<name>] and one [[setting]]")
    names = set()
    for s in settings:
        name = s.get("name")
        if not isinstance(name, str) or not is_valid_name(name) or name in names or name == "teachers":
            raise StudyError(f"{path}: setting name {name!r} must be a unique plain folder name (not 'teachers')")
        names.add(name)
        if s.get("teacher") not in teachers:
            raise StudyError(f"{path}: setting {name!r} names teacher {s.get('teacher')!r}; defined: {', '.join(teachers)}")
        s.setdefault("set", [])
    for name, t in teachers.items():
        t.setdefault("set", [])
    return {"study": study, "teachers": teachers, "settings": settings}


def _engine(args: list[str], log_file: Path) -> None:
    """Run ``python -m rsd_engine ARGS``, its output appended to ``log_file``.

    Raises:
        SystemExit: the engine failed (status 1, naming the log).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as out:
        code = subprocess.call([sys.executable, "-m", "rsd_engine", *args], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if code != 0:
        raise SystemExit(f"rsd-engine {' '.join(args[:2])} failed with status {code}; see {log_file}")


def _run(folder: Path, preset: Path, overrides: list[str]) -> None:
    """Run (or resume, or skip when finished) one engine run into ``folder``."""
    run = RunDir(folder)
    if run.read_status().get("state") == "done":
        return
    if run.exists():
        _engine(["run", "--resume", str(folder)], folder.with_suffix(".log"))
        return
    args = ["run", str(preset), "--out", str(folder)]
    for o in overrides:
        args += ["--set", o]
    _engine(args, folder.with_suffix(".log"))


def teacher_overrides(study: dict, teacher: dict) -> list[str]:
    """Overrides of a teacher run: no distillation, the teacher samplers evaluated at n, live FID at n."""
    n = study["n"]
    return [
        *study["set"],
        *teacher["set"],
        "distill.kimg=0",
        f"eval.live_fid_n={n}",
        f"eval.final_fid_n={n}",
        'eval.models=["teacher-full", "teacher-truncated"]',
    ]


def setting_overrides(study: dict, setting: dict, teacher_dir: Path) -> list[str]:
    """Overrides of a setting's run: distil from the saved teacher, live FID at n, the generator evaluated at n."""
    n = study["n"]
    return [
        *study["set"],
        f"teacher.checkpoint={teacher_dir}",
        f"distill.kimg={study['kimg']}",
        f"eval.distill_every_kimg={study['every_kimg']}",
        f"eval.live_fid_n={n}",
        f"eval.final_fid_n={n}",
        'eval.models=["generator"]',
        *setting["set"],
    ]


def high_pass_fid(run_dir: Path, model: str, n: int) -> float | None:
    """FID of the high-pass images (see the module docstring) of ``model``'s final samples (seeds 0 … n−1)
    against the high-pass of the run's clean reference; ``None`` without FID weights."""
    import torch
    import torch.nn.functional as F

    from rsd_engine.data import clean_reference, to_float, training_measurements
    from rsd_engine.evaluate.evaluation import Evaluator, final_network
    from rsd_engine.evaluate.generate import ModelSampler
    from rsd_engine.evaluate.metrics import cached_features, fid_from_features, quantize
    from rsd_engine.train.checkpoints import load_network

    def high_pass(x: torch.Tensor) -> torch.Tensor:
        blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
        return (2 * (x - blur)).clamp(-1, 1)

    run = RunDir(run_dir)
    preset = cfg.load(run.preset_path)
    try:
        network = final_network(run, preset, model)
    except FileNotFoundError:
        if model != GENERATOR or not run.latest("distill").is_dir():
            return None
        network = load_network(run.latest("distill"), FINAL_NETWORK[GENERATOR_FINAL])  # a stopped setting
    measurement = assembly.build_measurement(preset)
    evaluator = Evaluator(preset, training_measurements(preset, measurement))
    if evaluator.feature_net is None:
        return None
    images, identity = clean_reference(preset, preset.eval.reference_n)
    ref = cached_features(
        f"highpass|{identity}|n{images.shape[0]}",
        lambda: quantize(high_pass(to_float(images))),
        evaluator.feature_net,
        preset.eval.fid_cache_dir,
        preset.eval.batch_size,
    )
    sampler = ModelSampler.from_preset(preset, assembly.build_objective(preset, measurement))
    samples = sampler.generate(model, network.eval(), range(n))
    return fid_from_features(ref, evaluator.features(high_pass(samples.images)))


def _record(run_dir: Path, model: str) -> dict:
    return RunDir(run_dir).read_metrics().get(model) or {}


def collect(grid: dict, out: Path) -> dict:
    """Everything the report needs, from the finished run folders (high-pass FIDs are computed once
    and kept in OUT/highpass.json)."""
    study, n = grid["study"], grid["study"]["n"]
    cache_file = out / "highpass.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}

    def hp(folder: Path, model: str) -> float | None:
        key = f"{folder.name}/{model}/{n}"
        if key not in cache:
            cache[key] = high_pass_fid(folder, model, n)
            cache_file.write_text(json.dumps(cache, indent=1))
        return cache[key]

    teachers = {}
    for name in grid["teachers"]:
        folder = out / "teachers" / name
        preset = cfg.load(RunDir(folder).preset_path)
        model = TEACHER_TRUNCATED if _record(folder, TEACHER_TRUNCATED) else TEACHER_FULL  # not truncated when σ_c = 0
        rec = _record(folder, model)
        teachers[name] = {
            "model": model,
            "fid": rec.get("fid"),
            "kid": rec.get("kid"),
            "n": rec.get("n"),
            "kimg": preset.teacher.kimg,
            "highpass_fid": hp(folder, model),
            "reference": rec.get("reference"),
        }
    settings = []
    for s in grid["settings"]:
        folder = out / s["name"]
        run = RunDir(folder)
        events = run.read_events()
        curve = [
            {"kimg": e["kimg"], "minutes": _minutes(e), "fid": e["fid"], "kid": e.get("kid")}
            for e in events
            if e.get("kind") == "fid" and e.get("stage") == "distill" and e.get("n") == n
        ]
        rec = _record(folder, GENERATOR)
        if rec.get("fid") is None:
            rec = _last_live(curve)
        base = teacher_baseline(events, n)
        progress = [e for e in events if e.get("kind") == "progress" and e.get("stage") == "distill"]
        settings.append(
            {
                "name": s["name"],
                "teacher": s["teacher"],
                "set": s["set"],
                "curve": curve,
                "fid": rec.get("fid"),
                "kid": rec.get("kid"),
                "n": rec.get("n"),
                "highpass_fid": hp(folder, GENERATOR),
                "baseline_fid": None if base is None else base["fid"],
                "crossing": first_crossing(events),
                "minutes": _minutes(progress[-1]) if progress else None,
                "finished": "kimg" not in rec,
                "images_per_s": progress[-1].get("images_per_s") if progress else None,
            }
        )
    return {"study": study, "teachers": teachers, "settings": settings, "machine": _machine()}


def _minutes(event: dict) -> float | None:
    """Training minutes of an event (``None`` for runs written before the engine recorded them)."""
    return event["train_seconds"] / 60 if "train_seconds" in event else None


def _last_live(curve: list[dict]) -> dict:
    """A stopped setting's generator record: its last live FID, with the kimg it was measured at."""
    return {"fid": curve[-1]["fid"], "kid": curve[-1]["kid"], "kimg": curve[-1]["kimg"]} if curve else {}


def _machine() -> str:
    import torch

    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def _fmt(v, spec: str = "{:.1f}") -> str:
    return "–" if v is None else spec.format(v)


def table(data: dict) -> str:
    """The Markdown table: one row per setting (and one per teacher)."""
    n = data["study"]["n"]
    lines = [
        "| setting | teacher | overrides | generator FID | best live FID (kimg) | teacher FID | ratio | KID gen / teacher | "
        "high-pass FID gen / teacher | first below teacher | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in data["settings"]:
        t = data["teachers"][s["teacher"]]
        best = min(s["curve"], key=lambda c: c["fid"]) if s["curve"] else None
        ratio = s["fid"] / t["fid"] if s["fid"] is not None and t["fid"] else None
        kid = f"{_fmt(s['kid'], '{:.3f}')} / {_fmt(t['kid'], '{:.3f}')}"
        hp = f"{_fmt(s['highpass_fid'])} / {_fmt(t['highpass_fid'])}"
        cross = f"{s['crossing']['kimg']:g} kimg, {s['crossing']['minutes']:.1f} min" if s["crossing"] else "no"
        gen = _fmt(s["fid"]) if s["finished"] else f"{_fmt(s['fid'])} (stopped at {s['curve'][-1]['kimg']:g} kimg)"
        lines.append(
            f"| {s['name']} | {s['teacher']} ({t['kimg']:g} kimg) | {', '.join(s['set']) or '—'} | {gen} | "
            f"{_fmt(best and best['fid'])} ({_fmt(best and best['kimg'], '{:g}')}) | {_fmt(t['fid'])} | {_fmt(ratio, '{:.2f}')} | "
            f"{kid} | {hp} | {cross} | {_fmt(s['minutes'])} |"
        )
    lines.append("")
    lines.append(
        f"FID and KID at n = {n} (seeds 0–{n - 1}) against the same clean reference for every row; "
        "the teacher column is its truncated sampler (Heun stopped at σ_c), ratio = generator / teacher; "
        "minutes = distillation training time (evaluation excluded)."
    )
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    """FID against distillation kimg and against training minutes, one curve per setting, teachers dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(data["settings"]):
        c = colours[i % len(colours)]
        for ax, key in zip(axes, ("kimg", "minutes")):
            points = [p for p in s["curve"] if p[key] is not None]
            ax.plot([p[key] for p in points], [p["fid"] for p in points], "o-", color=c, label=s["name"], ms=3)
    for j, (name, t) in enumerate(data["teachers"].items()):
        if t["fid"] is not None:
            for ax in axes:
                ax.axhline(
                    t["fid"],
                    ls="--",
                    color="k",
                    alpha=0.4 + 0.5 * j / max(len(data["teachers"]), 1),
                    label=f"teacher {name}: {t['model']} FID {t['fid']:.1f}",
                )
    axes[0].set_xlabel("distillation images seen (kimg)")
    axes[1].set_xlabel("distillation training time (minutes, evaluation excluded)")
    axes[0].set_ylabel(f"FID (n = {data['study']['n']})")
    axes[1].legend(fontsize=7, loc="upper right")
    fig.suptitle(data["study"]["title"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the grid (resumable), then write the report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("grid", type=Path, help="grid TOML file")
    p.add_argument("--out", type=Path, help="study folder (default runs/study-<grid stem>)")
    p.add_argument("--only", nargs="*", default=None, help="run only these settings (teachers they need are trained)")
    p.add_argument("--report-only", action="store_true", help="do not run anything; report what has been measured")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md", help="results file to prepend the section to")
    args = p.parse_args(argv)
    try:
        grid = load_grid(args.grid)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    study = grid["study"]
    out = (args.out or ROOT / "runs" / f"study-{args.grid.stem}").resolve()
    preset = (ROOT / study["preset"]).resolve()
    try:
        cfg.load(preset, study["set"])
    except cfg.PresetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    settings = [s for s in grid["settings"] if args.only is None or s["name"] in args.only]
    start = time.time()
    if not args.report_only:
        for name in sorted({s["teacher"] for s in settings}):
            print(f"teacher {name} …", flush=True)
            _run(out / "teachers" / name, preset, teacher_overrides(study, grid["teachers"][name]))
        for s in settings:
            print(f"setting {s['name']} …", flush=True)
            _run(out / s["name"], preset, setting_overrides(study, s, out / "teachers" / s["teacher"]))
    started = [s for s in grid["settings"] if RunDir(out / s["name"]).exists()]
    used = {s["teacher"] for s in started}
    data = collect({**grid, "settings": started, "teachers": {k: v for k, v in grid["teachers"].items() if k in used}}, out)
    data["settings"] = [s for s in data["settings"] if s["curve"] or s["fid"] is not None]
    (out / "study.json").write_text(json.dumps(data, indent=1))
    figure = args.results.parent / f"study-{args.grid.stem}.png"
    plot(data, out / "study.png")
    plot(data, figure)
    text = table(data)
    (out / "study.md").write_text(text + "\n")
    print(text)
    grid_file = args.grid.resolve()
    command = f"python benchmarks/fidelity_study.py {grid_file.relative_to(ROOT) if grid_file.is_relative_to(ROOT) else grid_file}"
    section = (
        f"## {study['title']}\n\nWritten {time.strftime('%Y-%m-%d %H:%M')} by `{command}` on {data['machine']} "
        f"({(time.time() - start) / 60:.0f} min this call).\n\n![{study['title']}]({figure.name})\n\n{text}\n"
    )
    prepend_section(args.results, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
