"""Command line: ``rsd-engine run|validate|check-operator|sample|evaluate|export|preview|theory|time-split|import-teacher|fid-ref``
(also ``python -m rsd_engine``).

Exit codes: 0 success; 2 invalid preset or arguments, a preset that cannot run here (its data absent, too large for
this machine), an output folder that cannot be written, a refused export or teacher pickle, a malformed reference
statistics file; 1 ``check-operator`` with a failed check; 1 a run failed (status ``failed``, error in
status.json and log.txt; also ``sample``/``evaluate`` of weights that are not finite); 130 stopped by SIGTERM/SIGINT (status
``stopped``, checkpoint kept).

A run that fails where nothing can be written any more (a full disk) still ends with one line on the
terminal: its status.json may then keep ``running`` with the ended process's pid, which every reader
takes as ``failed`` (:func:`rsd_engine.io.runs.run_state`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from . import assembly
from .io import config as cfg
from .io.processes import parent_command_line, process_shortfall
from .io.runs import EXPORT_MODELS, EXPORT_WEIGHTS, GENERATOR, MODELS, OutputError, RunDir, default_run_folder, this_host
from .io.signals import StopRequested, install_signal_handlers
from .io.timing import STARTUP, TIMING, WALL, process_seconds, split_table, time_split

__all__ = ["main", "build_parser"]

log = logging.getLogger("rsd_engine")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of all subcommands."""
    p = argparse.ArgumentParser(
        prog="rsd-engine", description="Restoration Score Distillation: teacher on corrupted data → one-step generator → evaluation."
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train teacher, distil, evaluate (or resume a run)")
    r.add_argument("preset", nargs="?", help="preset TOML file (omit with --resume)")
    r.add_argument("--out", help="run folder (default runs/<run.name>-<time>)")
    r.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a preset field (repeatable)"
    )
    r.add_argument("--resume", metavar="RUN_DIR", help="continue the run in this folder from its latest checkpoints")

    v = sub.add_parser("validate", help="check a preset and print the effective TOML")
    v.add_argument("preset")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    v.add_argument(
        "--no-paths", action="store_true", help="skip the checks of data and checkpoint paths (a preset saved before its paths exist)"
    )

    co = sub.add_parser(
        "check-operator", help="conformance report of the preset's forward operator (built-in or plug-in), one line per check"
    )
    co.add_argument("preset")
    co.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    co.add_argument(
        "--schema", action="store_true", help="print the operator's parameter schema as JSON instead (what the workbench form shows)"
    )

    s = sub.add_parser("sample", help="write a PNG grid of samples of a finished run")
    s.add_argument("run_dir")
    s.add_argument("--n", type=int, default=64, help="number of samples (seeds seed-start … seed-start+n−1)")
    s.add_argument("--model", default=GENERATOR, choices=MODELS)
    s.add_argument("--seed-start", type=int, default=0)
    s.add_argument("--out", help="PNG path (default RUN_DIR/samples/<model>-n<N>.png)")

    e = sub.add_parser("evaluate", help="(re)compute metrics.json of a run from its final checkpoints")
    e.add_argument("run_dir")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="eval.KEY=VALUE", help="override eval.* fields only")
    e.add_argument("--models", default=",".join(MODELS), help="comma-separated models to (re)evaluate")
    e.add_argument(
        "--recompute",
        action="store_true",
        help="compute every FID again, even where an earlier evaluation had the same weights, n, seeds and reference",
    )

    x = sub.add_parser("export", help="write a run's generator (or teacher) as a diffusers pipeline folder")
    x.add_argument("run_dir")
    x.add_argument("--out", required=True, help="folder to write (refused when it exists and is not empty, unless --force)")
    x.add_argument("--model", default="generator", choices=EXPORT_MODELS, help="generator: one-step pipeline; teacher: Heun pipeline")
    x.add_argument("--weights", default="ema", choices=EXPORT_WEIGHTS, help="ema (the evaluated weights) or raw (last training step)")
    x.add_argument("--force", action="store_true", help="replace a non-empty --out folder")

    pv = sub.add_parser("preview", help="PNG grid of clean | measurement | adjoint for a preset, before training")
    pv.add_argument("preset")
    pv.add_argument("--n", type=int, default=16)
    pv.add_argument("--out", default="preview.png")
    pv.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")

    it = sub.add_parser(
        "import-teacher", help="a run folder whose teacher is an EDM-format pickle (EDM, SiD, Ambient); then `run --resume` distils it"
    )
    it.add_argument("pkl", help="EDM-format network pickle (network-snapshot-*.pkl); read without running its embedded code")
    it.add_argument("--preset", required=True, help="preset of the distillation (operator, σ_c, data); [network] is taken from the pickle")
    it.add_argument("--out", required=True, help="new run folder")
    it.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")

    fr = sub.add_parser(
        "fid-ref", help="write FID reference statistics (mu, sigma) of a preset's clean evaluation split in EDM's .npz format"
    )
    fr.add_argument("preset")
    fr.add_argument("--out", required=True, help=".npz file to write (mu (2048,), sigma (2048, 2048), float64)")
    fr.add_argument("--n", type=int, default=None, help="clean held-out images (default eval.reference_n; the whole split if smaller)")
    fr.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")

    ts = sub.add_parser("time-split", help="where a run's wall time went: training, live and final evaluation, checkpoints (table)")
    ts.add_argument("run_dir")
    ts.add_argument("--json", action="store_true", help="print the split as JSON instead of a Markdown table")

    th = sub.add_parser("theory", help="the linear-Gaussian theory, computed: table (theory.md/json) and plot (theory.png)")
    th.add_argument("--out", default="runs/theory", help="output folder (default runs/theory)")
    th.add_argument("--seed", type=int, default=0)
    th.add_argument("--quick", action="store_true", help="a few-second smoke run (far fewer steps; numbers not meaningful)")
    th.add_argument(
        "--workers",
        type=int,
        default=None,
        help="settings run in parallel processes (default 2, 1 with --quick; results do not depend on it)",
    )
    return p


class _LogFile(logging.FileHandler):
    """``log.txt``: a file handler that, when the file cannot be written (a full disk), says so once on
    the terminal and stops, instead of printing a traceback for every message."""

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        log.removeHandler(self)
        print(
            f"warning: {self.baseFilename} cannot be written ({getattr(err, 'strerror', None) or err}); the log goes to the terminal only",
            file=sys.stderr,
        )


def _setup_logging(log_file: Path | None, main_process: bool) -> None:
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if main_process:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        log.addHandler(h)
        if log_file is not None:
            fh = _LogFile(log_file, encoding="utf-8")
            fh.setFormatter(fmt)
            log.addHandler(fh)
    else:  # other processes report only problems, prefixed with their rank
        h = logging.StreamHandler(sys.stderr)
        h.setLevel(logging.WARNING)
        h.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [rank {os.environ.get('RANK', '?')}] %(message)s", "%H:%M:%S"))
        log.addHandler(h)


def _cmd_validate(args) -> int:
    from .data import check_data

    preset = assembly.load(args.preset, args.overrides)
    if not args.no_paths:
        cfg.check_here(preset, args.preset)
        check_data(preset)
    sys.stdout.write(cfg.dumps(preset))
    return 0


def _cmd_check_operator(args) -> int:
    from .operators.conformance import format_table, run_checks

    preset = assembly.load(args.preset, args.overrides)
    if args.schema:
        print(json.dumps(assembly.operator_schema(preset), indent=1))
        return 0
    op = assembly.build_operator(preset)
    c = preset.corruption
    print(
        f"operator {c.operator} ({type(op).__module__}:{type(op).__qualname__}), family {op.objective_family}, "
        f"{'linear' if op.linear else 'non-linear'}, image {preset.data.channels}×{preset.data.resolution}×{preset.data.resolution} → "
        f"{tuple(op.output_shape())}"
    )
    results = run_checks(op)
    print(format_table(results))
    failed = [r.name for r in results if not r.passed]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"all {len(results)} checks passed")
    return 0


def _cmd_run(args) -> int:
    from accelerate.utils import broadcast_object_list

    from .data import check_data
    from .experiment import Experiment, make_accelerator

    if args.resume:
        if args.preset or args.overrides:
            raise cfg.PresetError([("--resume", "a resumed run uses its frozen preset; give no PRESET and no --set")])
        run = RunDir(args.resume)
        if not run.exists():
            raise cfg.PresetError([("--resume", f"{args.resume} holds no run (no preset.toml)")])
        if run.state() == "running":
            raise cfg.PresetError([("--resume", f"{args.resume} is still running (pid {run.read_status().get('pid')}); stop it first")])
        preset = assembly.load(run.preset_path)  # a plug-in that no longer imports stops here, the run folder untouched
        cfg.check_here(preset, str(run.preset_path))
    else:
        if not args.preset:
            raise cfg.PresetError([("preset", "give a preset file or --resume RUN_DIR")])
        preset = assembly.load(args.preset, args.overrides)
        cfg.check_here(preset, args.preset)
        check_data(preset)  # bad data files fail here, before a run folder exists
    acc = make_accelerator(preset)
    if not args.resume:
        target = [args.out or f"runs/{default_run_folder(preset.run.name, lambda name: Path('runs', name).exists())}"]
        if acc.num_processes > 1:
            broadcast_object_list(target)
        run = RunDir(target[0])
        if acc.is_main_process:
            RunDir.create(run.path, assembly.frozen_text(preset))
        acc.wait_for_everyone()
    _setup_logging(run.log_path, acc.is_main_process)
    log.info("run folder %s (%d process%s on %s)", run.path, acc.num_processes, "es" if acc.num_processes > 1 else "", acc.device)
    shortfall = process_shortfall(acc.num_processes, preset.accelerate.num_processes, os.environ, parent_command_line())
    if shortfall:
        log.warning(shortfall)
    trackers = None
    try:
        if acc.is_main_process:
            if args.resume:
                for path in run.remove_partial_writes():
                    log.info("removed %s, left by an interrupted write", path)
            run.write_status(
                state="running",
                pid=os.getpid(),
                host=this_host(),
                error=None,
                num_processes=acc.num_processes,
                device=str(acc.device),
                warnings=[shortfall] if shortfall else [],
            )
            if preset.run.trackers:
                from .io.trackers import EventTrackers

                trackers = run.on_event = EventTrackers(run, preset)
        experiment = Experiment(preset, run, acc)
        if acc.is_main_process:
            run.append_event("run", TIMING, part=STARTUP, seconds=round(process_seconds(), 3))
        experiment.run_all()
    except StopRequested:
        log.warning("stopped; resume with: rsd-engine run --resume %s", run.path)
        if acc.is_main_process:
            _record(
                run, lambda: (run.write_status(state="stopped"), run.append_event(run.read_status().get("stage", "teacher"), "stopped"))
            )
        return 130
    except Exception as e:  # the run folder records every failure
        log.error("run failed: %s", e)
        log.debug(traceback.format_exc())
        if acc.is_main_process:
            details = traceback.format_exc()

            def log_details() -> None:
                with open(run.log_path, "a", encoding="utf-8") as f:
                    f.write(details)

            error = f"{type(e).__name__}: {e}"
            _record(run, lambda: run.write_status(state="failed", error=error))
            _record(run, log_details, quiet=True)
        return 1
    finally:
        if acc.is_main_process:
            _record(
                run,
                lambda: run.append_event(
                    "run", TIMING, part=WALL, seconds=round(process_seconds(), 3), state=run.read_status().get("state")
                ),
                quiet=True,
            )
        if trackers is not None:
            trackers.finish()
    log.info("done: %s", run.metrics_path)
    return 0


def _record(run: RunDir, write, quiet: bool = False) -> None:
    """Call ``write`` (the final status or log lines); when the disk refuses it, say so in one line
    (unless ``quiet``) instead of a traceback: the run then reads as failed once this process has
    ended (:func:`rsd_engine.io.runs.run_state`)."""
    try:
        write()
    except OSError as e:
        if not quiet:
            log.error(
                "cannot record the outcome in %s (%s); the run reads as failed once this process has ended", run.path, e.strerror or e
            )


def _cmd_sample(args) -> int:
    import torch

    from .evaluate.evaluation import final_network
    from .evaluate.generate import ModelSampler
    from .evaluate.grids import save_grid

    run = RunDir(args.run_dir)
    preset = assembly.load(run.preset_path)
    device = "cuda" if torch.cuda.is_available() and preset.accelerate.device != "cpu" else "cpu"
    sampler = ModelSampler.from_preset(preset)
    net = final_network(run, preset, args.model, device)
    samples = sampler.generate(args.model, net, range(args.seed_start, args.seed_start + args.n), device)
    out = Path(args.out) if args.out else run.samples / f"{args.model}-n{args.n}.png"
    save_grid(samples.images, out)
    print(
        f"{out}  ({args.n} samples, seeds {args.seed_start}…{args.seed_start + args.n - 1}, NFE {samples.nfe}, "
        f"{samples.images_per_s:.1f} img/s)"
    )
    return 0


def _cmd_evaluate(args) -> int:
    from .experiment import Experiment, make_accelerator

    bad = [o for o in args.overrides if not o.startswith("eval.")]
    if bad:
        raise cfg.PresetError([(o, "evaluate accepts eval.* overrides only") for o in bad])
    run = RunDir(args.run_dir)
    if not run.exists():
        raise cfg.PresetError([("run_dir", f"{args.run_dir} holds no run (no preset.toml)")])
    preset = assembly.load(run.preset_path, args.overrides)
    cfg.check_here(preset, str(run.preset_path))
    acc = make_accelerator(preset)
    _setup_logging(run.log_path, acc.is_main_process)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    bad = [m for m in models if m not in MODELS]
    if bad:
        raise cfg.PresetError([("--models", f"{', '.join(bad)} unknown; allowed: {', '.join(MODELS)}")])
    metrics = Experiment(preset, run, acc).evaluate(models, reuse=not args.recompute)
    if not acc.is_main_process:
        return 0
    for model, rec in metrics.items():
        print(model, {k: rec.get(k) for k in ("fid", "kid", "proximal_fid", "psnr", "ssim", "n", "nfe", "images_per_s") if k in rec})
    return 0


def _cmd_export(args) -> int:
    from .export import ExportError, export_run

    try:
        out = export_run(args.run_dir, args.out, args.model, args.weights, args.force)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


def _cmd_preview(args) -> int:
    from .data import training_measurements
    from .operators.preview import PANEL_LABELS, preview_rows, rows_image

    preset = assembly.load(args.preset, args.overrides)
    cfg.check_here(preset, args.preset)
    measurement = assembly.build_measurement(preset)
    rows = preview_rows(preset, measurement, args.n)
    rows_image(rows, Path(args.out))
    d, c = preset.data, preset.corruption
    n_train = len(training_measurements(preset, measurement))
    print(args.out)
    print(
        f"data: {d.source}{' ' + d.path if d.path else ''}, {n_train} training images, {d.resolution}×{d.resolution}, "
        f"{d.channels} channel{'s' if d.channels > 1 else ''}; operator {c.operator}, σ = {c.noise_sigma}"
    )
    print("rows: " + " | ".join(PANEL_LABELS[k] for k in rows))
    if measurement.op.preview_note:
        print("note: " + measurement.op.preview_note)
    return 0


def _cmd_import_teacher(args) -> int:
    from .models.edm_import import EDMPickleError, import_teacher

    try:
        run = import_teacher(args.pkl, args.preset, args.out, args.overrides)
    except EDMPickleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    preset = assembly.load(run.preset_path)
    n = preset.network
    print(
        f"{run.path}: teacher-final = {args.pkl} ({n.architecture}, {n.model_channels} channels × {n.channel_mult}, "
        f"{preset.data.resolution}×{preset.data.resolution}×{preset.data.channels})"
    )
    print(f"distil it with: rsd-engine run --resume {run.path}")
    return 0


def _cmd_fid_ref(args) -> int:
    import torch

    from .evaluate.evaluation import clean_features
    from .evaluate.metrics import FIDWeightsError, load_feature_network, save_reference_statistics

    preset = assembly.load(args.preset, args.overrides)
    cfg.check_paths(preset, args.preset)
    n = preset.eval.reference_n if args.n is None else args.n
    if n < 2:
        raise cfg.PresetError([("--n", f"{n}: reference statistics need at least 2 images")])
    try:
        net = load_feature_network(preset.eval.fid_weights)
    except FIDWeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() and preset.accelerate.device != "cpu" else "cpu"
    feats, name = clean_features(preset, n, net.to(device), None)
    stats = save_reference_statistics(args.out, feats)
    print(f"{args.out}: mu {stats.mu.shape}, sigma {stats.sigma.shape} of {name}; sha256 {stats.sha256}")
    return 0


def _cmd_theory(args) -> int:
    from .theory.experiment import TheoryConfig, run_theory
    from .theory.report import markdown, write_report

    cfg = TheoryConfig.quick(seed=args.seed) if args.quick else TheoryConfig(seed=args.seed)
    workers = args.workers if args.workers is not None else (1 if args.quick else 2)
    results = run_theory(cfg, workers=workers)
    paths = write_report(results, args.out)
    print(markdown(results))
    print(f"wrote {paths['md']}, {paths['json']}, {paths['png']} in {results['wall_s']:.0f} s")
    return 0


def _cmd_time_split(args) -> int:
    import json

    run = RunDir(args.run_dir)
    if not run.exists():
        raise cfg.PresetError([("run_dir", f"{args.run_dir} holds no run (no preset.toml)")])
    split = time_split(run.read_events())
    print(json.dumps(split, indent=2) if args.json else split_table(split))
    return 0


_COMMANDS = {
    "run": _cmd_run,
    "validate": _cmd_validate,
    "check-operator": _cmd_check_operator,
    "sample": _cmd_sample,
    "evaluate": _cmd_evaluate,
    "export": _cmd_export,
    "preview": _cmd_preview,
    "theory": _cmd_theory,
    "time-split": _cmd_time_split,
    "import-teacher": _cmd_import_teacher,
    "fid-ref": _cmd_fid_ref,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point. Returns the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        install_signal_handlers()
    from .data.sources import DataError  # imports torch: after the handlers are in place
    from .evaluate.metrics import ReferenceStatsError
    from .train.finite import NonFiniteError

    try:
        return _COMMANDS[args.command](args)
    except cfg.PresetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (DataError, ReferenceStatsError, FileNotFoundError, FileExistsError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteError as e:  # sample / evaluate of a run whose weights are not finite
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. sample/preview --out on a read-only or full disk: one line, not a traceback
        print(f"error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}", file=sys.stderr)
        return 2
