"""Run folders: layout, atomic writes, events.jsonl and status.json (DESIGN.md "Data flow").

Layout of a run folder::

    run_dir/preset.toml        the effective preset, frozen at creation
    run_dir/status.json        {"state", "stage", "progress", "kimg", "kimg_total", "pid", "error", "updated"}
    run_dir/events.jsonl       one JSON object a line: {"time", "stage", "kind", "kimg", …}
    run_dir/metrics.json       final metrics per model (FID, KID, NFE, images/s, each with n)
    run_dir/log.txt            the log (also on the terminal)
    run_dir/checkpoints/       <stage>-latest/ (resumable), teacher-final/, generator-final/
    run_dir/samples/           PNG grids: measurements, teacher-full, teacher-truncated, generator

States: ``running`` | ``done`` | ``failed`` | ``stopped``. Stages: ``teacher`` | ``distill`` | ``evaluate``.
The workbench reads these files only; the engine writes them atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "RunDir",
    "STATES",
    "STAGES",
]

STATES = ("running", "done", "failed", "stopped")
STAGES = ("teacher", "distill", "evaluate")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


class RunDir:
    """Accessors for one run folder (see the module docstring for the layout).

    Args:
        path: the run folder (created by :meth:`create`, or existing for resume/evaluation).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

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
        """
        run = cls(path)
        if run.preset_path.exists():
            raise FileExistsError(f"{run.path} already holds a run; use --resume {run.path} or another --out")
        run.path.mkdir(parents=True, exist_ok=True)
        run.checkpoints.mkdir(exist_ok=True)
        run.samples.mkdir(exist_ok=True)
        atomic_write_text(run.preset_path, preset_toml)
        return run

    def exists(self) -> bool:
        """Whether this folder holds a run (has preset.toml)."""
        return self.preset_path.is_file()

    def append_event(self, stage: str, kind: str, **fields: Any) -> dict:
        """Append one event line ``{"time", "stage", "kind", **fields}`` to events.jsonl and return it.

        Kinds used by the engine: ``progress`` (losses, kimg, it/s), ``fid`` (live FID with n),
        ``checkpoint``, ``grid``, ``metrics``, ``stopped``. Non-finite numbers (a NaN loss) are
        written as ``null`` so every line stays valid JSON.
        """
        event = _finite({"time": round(time.time(), 3), "stage": stage, "kind": kind, **fields})
        line = json.dumps(event, sort_keys=True, allow_nan=False, default=_json_default) + "\n"
        with open(self.events_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
        return event

    def read_events(self) -> list[dict]:
        """All complete event lines (a partial last line, being written, is skipped)."""
        if not self.events_path.exists():
            return []
        out = []
        for line in self.events_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def write_status(self, **fields: Any) -> dict:
        """Merge ``fields`` into status.json (atomically) and return the new status."""
        status = self.read_status()
        status.update(fields)
        status["updated"] = round(time.time(), 3)
        atomic_write_json(self.status_path, status)
        return status

    def read_status(self) -> dict:
        """status.json as a dict (``{}`` if absent or unreadable)."""
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def read_metrics(self) -> dict:
        """metrics.json as a dict (``{}`` if absent)."""
        try:
            return json.loads(self.metrics_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}


def _finite(obj: Any) -> Any:
    """``obj`` with NaN/±Inf floats (at any depth) replaced by ``None``."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
