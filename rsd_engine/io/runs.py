"""Run folders: the one owner of their layout, names, atomic writes and tolerant readers.

Layout of a run folder::

    run_dir/preset.toml        the effective preset, frozen at creation
    run_dir/status.json        {"state", "stage", "progress", "kimg", "kimg_total", "pid", "error", "warnings", "updated", …}
    run_dir/events.jsonl       one JSON object a line: {"time", "stage", "kind", "kimg", …}
    run_dir/metrics.json       final metrics per model (FID, KID, NFE, images/s, each with n)
    run_dir/log.txt            the log (also on the terminal)
    run_dir/checkpoints/       <stage>-latest/ (resumable), teacher-final/, generator-final/
    run_dir/samples/           PNG grids: <grid>.png (latest) and <model>-kimg<NNNNNN.NNN>.png (snapshots)
    run_dir/export-<model>/    a diffusers pipeline folder written by ``rsd-engine export`` (optional;
                               ``export-<model>-raw`` for the weights before averaging)

States: ``running`` | ``done`` | ``failed`` | ``stopped``. Stages: ``teacher`` | ``distill`` | ``evaluate``.
The engine writes these files atomically; the workbench reads them with the readers here (which
never fail on a missing or half-written file) and, when an engine process died without a final
state, records one with :meth:`RunDir.mark_ended`. This module imports no torch, so the workbench
stays light.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "replace_folder",
    "partial_folder",
    "remove_partial_folders",
    "teacher_checkpoint_folder",
    "read_json_object",
    "RunDir",
    "STATES",
    "FINAL_STATES",
    "PHASES",
    "TEACHER_FULL",
    "TEACHER_TRUNCATED",
    "GENERATOR",
    "MODELS",
    "MEASUREMENTS_GRID",
    "CLEAN_GRID",
    "TEACHER_FINAL",
    "GENERATOR_FINAL",
    "FINAL_NETWORK",
    "RAW_NETWORK",
    "EXPORT_MODELS",
    "EXPORT_WEIGHTS",
    "NAME_RULE",
    "is_valid_name",
    "default_run_folder",
    "snapshot_name",
    "parse_snapshot",
    "complete_checkpoint",
    "TEACHER_BASELINE",
    "GENERATOR_BEATS_TEACHER",
    "teacher_baseline",
    "first_crossing",
    "RACE",
    "OutputError",
    "run_state",
    "this_host",
]

STATES = ("running", "done", "failed", "stopped")
#: States after which no engine process of the run is running.
FINAL_STATES = ("done", "failed", "stopped")
#: The phases of a run, the value of the ``stage`` field of events and status.json (a name kept on
#: disk): the two training *stages* (a :class:`rsd_engine.train.stage.Stage` each), then the final
#: evaluation. Start-up and stop records of the whole process use ``run``.
PHASES = ("teacher", "distill", "evaluate")

#: The evaluated models: the teacher's Heun sampler run to σ = 0, the same sampler stopped at the data
#: noise (docs/method.md §4.1), and the one-step generator. Their names key metrics.json and the grids.
TEACHER_FULL = "teacher-full"
TEACHER_TRUNCATED = "teacher-truncated"
GENERATOR = "generator"
MODELS = (TEACHER_FULL, TEACHER_TRUNCATED, GENERATOR)
#: Grids that are not models: the training measurements and the clean held-out references.
MEASUREMENTS_GRID = "measurements"
CLEAN_GRID = "clean"

#: Checkpoints that end a stage, and the network each holds: the teacher EMA, the generator EMA.
TEACHER_FINAL = "teacher-final"
GENERATOR_FINAL = "generator-final"
FINAL_NETWORK = {TEACHER_FINAL: "ema", GENERATOR_FINAL: "generator_ema"}
#: The trained (not averaged) network of each stage, kept in that stage's ``<stage>-latest`` checkpoint.
RAW_NETWORK = {TEACHER_FINAL: "net", GENERATOR_FINAL: "generator"}

#: What ``rsd-engine export`` writes: the one-step generator or the teacher, from its EMA or raw weights.
EXPORT_MODELS = ("generator", "teacher")
EXPORT_WEIGHTS = ("ema", "raw")

#: Event kinds of the race between the generator and its teacher (docs/method.md §4.1): the teacher
#: sampler's live FID that the generator's live FIDs are compared with (same n, seeds and reference),
#: and the first live evaluation at which the generator's FID went below it.
TEACHER_BASELINE = "teacher_baseline"
GENERATOR_BEATS_TEACHER = "generator_beats_teacher"
#: Key of metrics.json summarising that race (not a model): the live comparison and the final one.
RACE = "generator_vs_teacher"

NAME_RULE = "letters, digits, '-', '_' and '.', at most 80 characters, starting with a letter or digit, no '..'"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}$")
_SNAPSHOT = re.compile(r"^(?P<model>.+)-kimg(?P<kimg>\d{6}(?:\.\d{3})?)\.png$")


def is_valid_name(name: str) -> bool:
    """Whether ``name`` obeys :data:`NAME_RULE`, the one rule for run names (``run.name``), run folders
    and workbench presets: a plain file name that is never hidden and never a path."""
    return bool(_NAME.match(name)) and ".." not in name


def teacher_checkpoint_folder(source: str) -> Path:
    """The teacher checkpoint folder that ``teacher.checkpoint`` names: ``<source>/checkpoints/teacher-final``
    when ``source`` is a run folder, else ``source`` itself (a checkpoint folder)."""
    path = Path(source)
    return path / "checkpoints" / TEACHER_FINAL if (path / "checkpoints").is_dir() else path


def default_run_folder(name: str, taken: Callable[[str], bool] = lambda _: False) -> str:
    """``<name>-<YYYYmmdd-HHMMSS>`` (name cut to 60 characters), with ``-2``, ``-3``, … appended while
    ``taken`` says the folder name is in use. The result obeys :data:`NAME_RULE` when ``name`` does."""
    base = f"{name[:60]}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, i = base, 2
    while taken(folder):
        folder, i = f"{base}-{i}", i + 1
    return folder


def snapshot_name(model: str, kimg: float) -> str:
    """File name of the grid of ``model`` written at ``kimg`` thousand images of its stage, to the
    image (three decimals, so snapshots below 1 kimg keep apart): ``<model>-kimg<NNNNNN.NNN>.png``."""
    return f"{model}-kimg{kimg:010.3f}.png"


def parse_snapshot(file_name: str) -> tuple[str, float] | None:
    """(model, kimg) of a snapshot file name written by :func:`snapshot_name` (or by earlier versions,
    ``<model>-kimg<NNNNNN>.png`` in whole kimg); ``None`` for other names."""
    m = _SNAPSHOT.match(file_name)
    return (m.group("model"), float(m.group("kimg"))) if m else None


def teacher_baseline(events: list[dict], n: int | None = None, reference: str | None = None) -> dict | None:
    """The last :data:`TEACHER_BASELINE` event (with this ``n`` and ``reference`` when given), else ``None``.

    Its fields: ``model`` (teacher-truncated, or teacher-full when the sampler is not truncated),
    ``fid``, ``kid``, ``n``, ``seeds``, ``reference``, ``weights`` and ``source`` (how it was obtained).
    """
    for e in reversed(events):
        if e.get("kind") == TEACHER_BASELINE and (n is None or e.get("n") == n) and (reference is None or e.get("reference") == reference):
            return e
    return None


def first_crossing(events: list[dict]) -> dict | None:
    """The first :data:`GENERATOR_BEATS_TEACHER` event, else ``None``. Its fields: ``kimg`` (of
    distillation), ``minutes`` (distillation training time, evaluation excluded), ``fid`` (the
    generator's live FID), ``teacher_fid``, ``teacher_model`` and ``n``."""
    return next((e for e in events if e.get("kind") == GENERATOR_BEATS_TEACHER), None)


class OutputError(Exception):
    """A folder to write (a new run folder, an export) cannot be written: read-only, full, not a folder.
    ``str(err)`` is one line naming the folder and the system's reason."""

    @classmethod
    def of(cls, folder: Path, what: str, err: OSError) -> "OutputError":
        """The error for ``err`` raised while writing ``folder`` (``what`` names it, e.g. ``"the run folder"``)."""
        where = f" ({err.filename})" if err.filename and Path(err.filename) != Path(folder) else ""
        return cls(f"cannot write {what} {folder}: {err.strerror or err}{where}")


def this_host() -> str:
    """This machine's name, recorded in status.json beside the engine's ``pid``."""
    return socket.gethostname()


def run_state(status: dict) -> str:
    """The state of a run from its status.json, the one reading the engine and the workbench share:
    the recorded ``state``, except that ``running`` whose engine process (``pid``, on this machine:
    ``host`` is this host or not recorded) has ended reads ``failed`` — a process killed, or one that
    could not write its final state (a full disk). ``""`` without a state.
    """
    state = status.get("state")
    if not isinstance(state, str):
        return ""
    pid = status.get("pid")
    if state == "running" and isinstance(pid, int) and not isinstance(pid, bool) and status.get("host") in (None, this_host()):
        from .processes import process_alive

        if not process_alive(pid):
            return "failed"
    return state


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file in the same folder, fsync, rename.

    The one atomic write of the project (run files, grids, presets, checkpoint files, feature caches).
    A reader sees the old file or the new one, never a part. Raises OSError when it cannot write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_PARTIAL_FILE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON (indented, UTF-8) version of :func:`atomic_write_bytes`."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


#: How unfinished writes are named: ``.<file>.<random>.tmp`` (:func:`atomic_write_bytes`) and
#: ``.<folder>.tmp-<random>`` (:func:`partial_folder`). A process killed mid-write leaves them behind.
_PARTIAL_FILE = ".tmp"
_PARTIAL_FOLDER = ".tmp-"


def partial_folder(target: Path) -> Path:
    """A new empty folder beside ``target`` (``.<target name>.tmp-<random>``) in which a folder is built
    before :func:`replace_folder` swaps it in (checkpoints, exports); the parent is created if needed.
    Left behind by a killed process, it is removed on resume (:meth:`RunDir.remove_partial_writes`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}{_PARTIAL_FOLDER}"))


def remove_partial_folders(target: Path) -> list[Path]:
    """Remove the folders that earlier, interrupted builds of ``target`` left beside it: partial folders
    ``.<target name>.tmp-*`` (:func:`partial_folder`) and the ``.<target name>.old-*`` waiting rooms of
    their swaps. Only while no other process builds ``target``.

    Returns:
        the folders removed.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    removed = []
    for kind in (_PARTIAL_FOLDER, ".old-"):
        for path in target.parent.glob(f".{glob.escape(target.name)}{kind}*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_folder(complete: Path, folder: Path, old: Path | None = None) -> None:
    """Put the finished folder ``complete`` at ``folder``: the one atomic folder swap of the project
    (checkpoints, exports).

    Every file and folder under ``complete`` is fsynced; an existing ``folder`` is renamed to ``old``,
    ``complete`` renamed to ``folder``, and ``old`` removed. A crash leaves ``folder`` or ``old``
    complete, never a mix (:func:`rsd_engine.train.checkpoints.load_checkpoint` falls back to ``old``).

    Args:
        complete: the new folder, written beside ``folder`` (same file system, so renames are atomic).
        folder: the target.
        old: where the previous ``folder`` waits during the swap (default ``<folder>.old``); a
            leftover there from an earlier crash is removed first.

    Raises:
        OSError: a rename or fsync failed (``complete`` is left in place for the caller to remove).
    """
    complete, folder = Path(complete), Path(folder)
    old = Path(old) if old is not None else folder.with_name(folder.name + ".old")
    for root, _, files in os.walk(complete):
        for name in files:
            _fsync(Path(root) / name)
        _fsync(Path(root))
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        os.replace(folder, old)
    os.replace(complete, folder)
    _fsync(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def complete_checkpoint(folder: Path) -> Path | None:
    """The complete checkpoint at ``folder``: the folder itself when its ``state.json`` (written last)
    is there, else its ``.old`` predecessor left by an interrupted swap (:func:`replace_folder`), else
    ``None``."""
    folder = Path(folder)
    if (folder / "state.json").is_file():
        return folder
    old = folder.with_name(folder.name + ".old")
    if (old / "state.json").is_file():
        return old
    return None


def read_json_object(path: Path) -> dict:
    """A JSON object file as a dict; ``{}`` when missing, unreadable, half-written or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _json_lines(text: str) -> list[dict]:
    """The JSON objects of ``text``, one a line; other lines (a partial last one) are skipped."""
    out = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


class RunDir:
    """Accessors for one run folder (see the module docstring for the layout).

    Args:
        path: the run folder (created by :meth:`create`, or existing for resume/evaluation).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        #: called with every event after it is written (the run's trackers, :mod:`rsd_engine.io.trackers`)
        self.on_event: Callable[[dict], None] | None = None

    preset_path = property(lambda self: self.path / "preset.toml")
    status_path = property(lambda self: self.path / "status.json")
    events_path = property(lambda self: self.path / "events.jsonl")
    metrics_path = property(lambda self: self.path / "metrics.json")
    log_path = property(lambda self: self.path / "log.txt")
    checkpoints = property(lambda self: self.path / "checkpoints")
    samples = property(lambda self: self.path / "samples")

    @classmethod
    def create(cls, path: str | Path, preset_toml: str) -> "RunDir":
        """Create a new run folder holding the frozen effective preset.

        Raises:
            FileExistsError: the folder already holds a run (its preset.toml exists).
            OutputError: the folder cannot be written (a read-only or full disk, a file in the way).
        """
        run = cls(path)
        if run.preset_path.exists():
            raise FileExistsError(f"{run.path} already holds a run; use --resume {run.path} or another --out")
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            run.checkpoints.mkdir(exist_ok=True)
            run.samples.mkdir(exist_ok=True)
            atomic_write_text(run.preset_path, preset_toml)
        except OSError as e:
            raise OutputError.of(run.path, "the run folder", e) from None
        return run

    def exists(self) -> bool:
        """Whether this folder holds a run (has preset.toml)."""
        return self.preset_path.is_file()

    def remove_partial_writes(self) -> list[Path]:
        """Remove what writers killed mid-write left in the run folder, ``checkpoints/`` and ``samples/``:
        partial folders ``.<name>.tmp-*`` (:func:`partial_folder`) and temporary files ``.<name>.*.tmp``
        (:func:`atomic_write_bytes`). Complete files, checkpoints and their ``<name>.old`` fallbacks are
        kept. Only while no process writes to this run: the engine calls it when resuming.

        Returns:
            the paths removed.
        """
        removed = []
        for folder in (self.path, self.checkpoints, self.samples):
            if not folder.is_dir():
                continue
            for path in folder.glob(".*"):
                if path.is_dir() and not path.is_symlink() and _PARTIAL_FOLDER in path.name:
                    shutil.rmtree(path, ignore_errors=True)
                elif path.is_file() and path.name.endswith(_PARTIAL_FILE):
                    path.unlink(missing_ok=True)
                else:
                    continue
                removed.append(path)
        return removed

    # ---------------------------------------------------------------- checkpoints and grids
    def checkpoint(self, name: str) -> Path:
        """Folder of checkpoint ``name`` (e.g. :data:`TEACHER_FINAL`, or :meth:`latest` of a stage)."""
        return self.checkpoints / name

    def has_checkpoint(self) -> bool:
        """Whether the run holds a complete checkpoint (a stage's latest or a final one,
        :func:`complete_checkpoint`), so that a resume continues from it rather than from nothing."""
        try:
            folders = [p for p in self.checkpoints.iterdir() if p.is_dir() and not p.name.startswith(".") and not p.name.endswith(".old")]
        except OSError:
            return False
        return any(complete_checkpoint(p) is not None for p in folders)

    def latest(self, stage: str) -> Path:
        """Folder of the resumable checkpoint of ``stage`` (``teacher`` | ``distill``): ``<stage>-latest``."""
        return self.checkpoint(f"{stage}-latest")

    def teacher_final(self, source: str | None = None) -> Path:
        """Where the run's teacher EMA lives: ``source`` (``teacher.checkpoint``: a run folder or a
        checkpoint folder) when set, else this run's :data:`TEACHER_FINAL`."""
        return teacher_checkpoint_folder(source) if source else self.checkpoint(TEACHER_FINAL)

    def export_folder(self, model: str, weights: str = "ema") -> Path:
        """Default folder of an export (:data:`EXPORT_MODELS`, :data:`EXPORT_WEIGHTS`):
        ``export-<model>``, or ``export-<model>-raw`` for the raw weights.

        Raises:
            ValueError: an unknown model or weights name.
        """
        if model not in EXPORT_MODELS or weights not in EXPORT_WEIGHTS:
            raise ValueError(
                f"model {model!r}, weights {weights!r}: allowed models {', '.join(EXPORT_MODELS)}, weights {', '.join(EXPORT_WEIGHTS)}"
            )
        return self.path / (f"export-{model}" if weights == "ema" else f"export-{model}-{weights}")

    def grid_path(self, grid: str, kimg: float | None = None) -> Path:
        """PNG of grid ``grid`` (a model, :data:`MEASUREMENTS_GRID` or :data:`CLEAN_GRID`): the latest
        ``samples/<grid>.png``, or the snapshot written at ``kimg`` (:func:`snapshot_name`)."""
        return self.samples / (f"{grid}.png" if kimg is None else snapshot_name(grid, kimg))

    def snapshots(self) -> list[tuple[str, float, Path]]:
        """(model, kimg, path) of every snapshot grid in ``samples/``, sorted by model then kimg."""
        if not self.samples.is_dir():
            return []
        found = []
        for path in self.samples.glob("*-kimg*.png"):
            parsed = parse_snapshot(path.name)
            if parsed:
                found.append((*parsed, path))
        return sorted(found)

    # ---------------------------------------------------------------- events
    def append_event(self, phase: str, kind: str, **fields: Any) -> dict:
        """Append one event line ``{"time", "stage", "kind", **fields}`` to events.jsonl and return it;
        its ``stage`` field holds ``phase`` (:data:`PHASES`, or ``run`` for the whole process).

        Kinds used by the engine: ``progress`` (losses, kimg, it/s, train_seconds), ``fid`` (live FID
        with n), :data:`TEACHER_BASELINE`, :data:`GENERATOR_BEATS_TEACHER`, ``checkpoint`` (with its
        seconds), ``grid``, ``metrics``, ``stopped``, ``timing`` (seconds of a part of the run,
        :mod:`rsd_engine.io.timing`). Non-finite numbers (a NaN loss) are
        written as ``null`` so every line stays valid JSON.
        """
        event = _finite({"time": round(time.time(), 3), "stage": phase, "kind": kind, **fields})
        line = json.dumps(event, sort_keys=True, allow_nan=False, default=_json_default) + "\n"
        with open(self.events_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
        if self.on_event is not None:
            self.on_event(event)
        return event

    def read_events(self) -> list[dict]:
        """All complete event lines that are JSON objects (a partial last line, being written, is
        skipped; undecodable bytes are replaced). ``[]`` when the file is missing."""
        try:
            text = self.events_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return _json_lines(text)

    def last_event(self, kind: str, max_bytes: int = 65536) -> dict | None:
        """The last event of ``kind``, reading only the last ``max_bytes`` of events.jsonl; ``None`` if none."""
        try:
            with open(self.events_path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - max_bytes))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            return None
        return next((e for e in reversed(_json_lines(tail)) if e.get("kind") == kind), None)

    # ---------------------------------------------------------------- status and metrics
    def write_status(self, **fields: Any) -> dict:
        """Merge ``fields`` into status.json (atomically), stamp ``updated`` and return the new status."""
        status = self.read_status()
        status.update(fields)
        status["updated"] = round(time.time(), 3)
        atomic_write_json(self.status_path, status)
        return status

    def read_status(self) -> dict:
        """status.json as a dict (``{}`` if absent, half-written or not an object)."""
        return read_json_object(self.status_path)

    def state(self) -> str:
        """The run's state, a dead ``running`` process read as ``failed`` (:func:`run_state`)."""
        return run_state(self.read_status())

    def mark_ended(self, state: str, error: str) -> bool:
        """Record that the run's processes ended without writing a final state: set ``state`` (one of
        :data:`FINAL_STATES`) and ``error``, keeping every other status field. Does nothing when the
        status already holds a final state (the engine's own verdict wins).

        Returns:
            whether status.json was written.

        Raises:
            ValueError: ``state`` is not a final state.
        """
        if state not in FINAL_STATES:
            raise ValueError(f"state {state!r}: allowed {', '.join(FINAL_STATES)}")
        if self.read_status().get("state") in FINAL_STATES:
            return False
        self.write_status(state=state, error=error)
        return True

    def read_metrics(self) -> dict:
        """metrics.json as a dict (``{}`` if absent or unreadable)."""
        return read_json_object(self.metrics_path)

    def write_metrics(self, metrics: dict) -> None:
        """Replace metrics.json (atomically) by ``metrics``: {model: record}.

        Raises:
            ValueError: a number in ``metrics`` is NaN or ±Inf (naming its keys, e.g.
                ``generator.fid``); nothing is written.
        """
        bad = _nonfinite_keys(metrics)
        if bad:
            raise ValueError(f"metrics.json refuses non-finite numbers: {', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}")
        atomic_write_json(self.metrics_path, metrics)


def _finite(obj: Any) -> Any:
    """``obj`` with NaN/±Inf floats (at any depth) replaced by ``None``."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _nonfinite_keys(obj: Any, prefix: str = "") -> list[str]:
    """Dotted keys (list positions as numbers) of the NaN/±Inf floats in ``obj``, at any depth."""
    if isinstance(obj, float):
        return [] if obj == obj and abs(obj) != float("inf") else [prefix or "(value)"]
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return []
    return [key for k, v in items for key in _nonfinite_keys(v, f"{prefix}.{k}" if prefix else str(k))]


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
