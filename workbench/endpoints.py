"""The headless API's endpoints as plain methods (no Gradio): what gradio_client calls.

Each endpoint is a thin typed wrapper around :class:`workbench.api.Workbench` with a docstring that
the API page shows; a refused action raises :class:`workbench.api.WorkbenchError` (its message
reaches the client). :func:`workbench.ui.api_endpoints.register` only binds them, by name.
``/gallery`` names the grids' files by their paths on the server.

Endpoints: ``/list_presets``, ``/get_preset``, ``/validate_preset``, ``/effective_preset``,
``/set_field``, ``/save_preset``, ``/save_preset_as``, ``/duplicate_preset``, ``/delete_preset``,
``/launch_run``, ``/list_runs``, ``/run_status``, ``/run_events``, ``/run_metrics``, ``/log_tail``,
``/snapshots``, ``/gallery``, ``/stop_run``, ``/resume_run``, ``/delete_run``, ``/export_run``.
"""

from __future__ import annotations

from rsd_engine.io.runs import CLEAN_GRID

from . import run_reader
from .api import Workbench, WorkbenchError

__all__ = ["Endpoints", "ENDPOINTS", "READ_ONLY"]

#: The endpoints in the order of the API page.
ENDPOINTS = tuple(
    "list_presets get_preset validate_preset effective_preset set_field save_preset save_preset_as duplicate_preset "
    "delete_preset launch_run list_runs run_status run_events run_metrics log_tail snapshots gallery stop_run resume_run "
    "delete_run export_run".split()
)

#: Endpoints that change nothing: served concurrently (the others one at a time).
READ_ONLY = frozenset(
    "list_presets get_preset validate_preset effective_preset set_field list_runs run_status run_events run_metrics log_tail "
    "snapshots gallery".split()
)


class Endpoints:
    """The API of one :class:`workbench.api.Workbench`: one method per endpoint of :data:`ENDPOINTS`."""

    def __init__(self, wb: Workbench):
        self.wb = wb

    def list_presets(self) -> list:
        """All presets: [{"name", "kind"}], kind "shipped" (read-only) or "user"."""
        return self.wb.list_presets()

    def get_preset(self, name: str) -> str:
        """The TOML text of preset `name` (a plain name; paths are refused)."""
        return self.wb.preset_text(name)

    def validate_preset(self, text: str) -> dict:
        """Validate preset TOML: {"ok", "problems": [{"field", "message"}], "effective"}."""
        return self.wb.validate(text).as_dict()

    def effective_preset(self, text: str) -> str:
        """The effective preset (every field, defaults filled) as TOML; error if invalid."""
        v = self.wb.validate(text)
        if not v.ok:
            raise WorkbenchError("; ".join(f"{f}: {m}" for f, m in v.problems))
        return v.effective

    def set_field(self, text: str, field: str, value: str) -> dict:
        """Set dotted `field` (e.g. "data.resolution") to `value` (read by the field's type; "" = default).
        Returns {"text": new TOML, "validation": as /validate_preset}."""
        new_text = self.wb.set_field(text, field, value)
        return {"text": new_text, "validation": self.wb.validate(new_text).as_dict()}

    def save_preset(self, name: str, text: str) -> dict:
        """Validate and save `text` as user preset `name` (overwrites that user preset). {"name"}."""
        return {"name": self.wb.save_preset(name, text, overwrite=True)}

    def save_preset_as(self, name: str, text: str) -> dict:
        """Validate and save `text` as a new user preset `name` (refused if it exists). {"name"}."""
        return {"name": self.wb.save_preset(name, text, overwrite=False)}

    def duplicate_preset(self, source: str, target: str) -> dict:
        """Copy preset `source` (shipped or user) to new user preset `target`. {"name"}."""
        return {"name": self.wb.duplicate_preset(source, target)}

    def delete_preset(self, name: str) -> dict:
        """Delete user preset `name` (shipped presets are read-only). {"deleted"}."""
        self.wb.delete_preset(name)
        return {"deleted": name}

    def launch_run(self, text: str, run_name: str) -> dict:
        """Validate preset `text` and start a run; `run_name` "" = <run.name>-<date-time>. {"run", "pid", "command"}."""
        return self.wb.launch(text, run_name)

    def list_runs(self) -> list:
        """Every run: [{"run", "state", "stage", "progress", "kimg", "kimg_total", "images_per_s", "it_per_s", "eta_s", "updated",
        "error", "exit_code", "beats_teacher", "race", "final", "duration_s"}]."""
        return self.wb.run_rows()

    def run_status(self, run: str) -> dict:
        """status.json of `run` plus "alive" (any of its processes running), "exit_code" (once ended) and "has_checkpoint"."""
        return self.wb.run_status(run)

    def run_events(self, run: str) -> list:
        """All events of `run` (events.jsonl lines)."""
        return self.wb.run_events(run)

    def run_metrics(self, run: str) -> dict:
        """metrics.json of `run` ({} before the final evaluation)."""
        return self.wb.run_metrics(run)

    def log_tail(self, run: str, lines: int) -> str:
        """The last `lines` lines of the run's log."""
        return self.wb.log_tail(run, lines)

    def snapshots(self, run: str) -> list:
        """kimg values of the snapshot grids written during training."""
        return self.wb.snapshots(run)

    def gallery(self, run: str, snapshot: str) -> dict:
        """The grids of `run` at `snapshot` ("latest", or a kimg from /snapshots) and its metrics table:
        {"run", "snapshot", "state", "grids": {grid name: PNG path on the server, or null}, "metrics":
        {"headers", "data"}}. Grids: measurements, teacher-truncated, teacher-full, generator, clean."""
        kimg = None if snapshot in ("", "latest", None) else _kimg(snapshot)
        grids = self.wb.gallery(run, kimg, (*run_reader.GALLERY_MODELS, CLEAN_GRID))
        frame = run_reader.metrics_frame(run_reader.metrics_rows(run, self.wb.run_metrics(run)), drop_empty=False)
        return {
            "run": run,
            "snapshot": "latest" if kimg is None else run_reader.kimg_text(kimg),
            "state": self.wb.run_status(run)["state"],
            "grids": {name: str(path) if path else None for name, path in grids.items()},
            "metrics": {"headers": list(frame.columns), "data": frame.values.tolist()},
        }

    def stop_run(self, run: str) -> dict:
        """Stop `run`: SIGTERM to its process group (final checkpoint), SIGKILL after the grace period. {"run", "state"}."""
        return self.wb.stop(run, wait_s=5.0)

    def resume_run(self, run: str) -> dict:
        """Resume a stopped or failed run from its latest checkpoint. {"run", "pid", "command"}."""
        return self.wb.resume(run)

    def delete_run(self, run: str, confirm: str) -> dict:
        """Delete `run` and its folder; `confirm` must repeat the run name. {"deleted"}."""
        self.wb.delete_run(run, confirm)
        return {"deleted": run}

    def export_run(self, run: str, model: str, weights: str, replace: bool) -> dict:
        """Export the `model` ("generator" | "teacher") of a finished `run` with `weights` ("ema" | "raw") as a diffusers
        pipeline folder <run>/export-<model> (`replace` an earlier export). {"run", "model", "weights", "folder"}."""
        return self.wb.export(run, model, weights, replace)


def _kimg(snapshot: str) -> float:
    """The kimg of a snapshot argument.

    Raises:
        WorkbenchError: not "latest" and not a number.
    """
    try:
        return float(snapshot)
    except (TypeError, ValueError):
        raise WorkbenchError(f'snapshot {str(snapshot)[:40]!r}: give "latest" or a kimg from /snapshots') from None
