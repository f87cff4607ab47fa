"""The headless API: plain named endpoints (``gr.api``) that gradio_client can call.

Each endpoint is a thin typed wrapper around :class:`workbench.api.Workbench`; a refused action
raises ``gr.Error`` whose message reaches the client. Files (preview PNG, gallery grids) are
served by the ``/preview`` and ``/gallery`` events of their views.

Endpoints: ``/list_presets``, ``/get_preset``, ``/validate_preset``, ``/effective_preset``,
``/set_field``, ``/save_preset``, ``/save_preset_as``, ``/duplicate_preset``, ``/delete_preset``,
``/launch_run``, ``/list_runs``, ``/run_status``, ``/run_events``, ``/run_metrics``, ``/log_tail``,
``/snapshots``, ``/stop_run``, ``/resume_run``, ``/delete_run``, ``/export_run``.
"""

from __future__ import annotations

import gradio as gr

from ..api import Workbench
from .common import as_gr_error

__all__ = ["register"]


def register(wb: Workbench) -> None:
    """Register every API endpoint on the Blocks being built (call inside ``with gr.Blocks()``)."""

    def list_presets() -> list:
        """All presets: [{"name", "kind"}], kind "shipped" (read-only) or "user"."""
        return wb.list_presets()

    def get_preset(name: str) -> str:
        """The TOML text of preset `name` (a plain name; paths are refused)."""
        return wb.preset_text(name)

    def validate_preset(text: str) -> dict:
        """Validate preset TOML: {"ok", "problems": [{"field", "message"}], "effective"}."""
        return wb.validate(text).as_dict()

    def effective_preset(text: str) -> str:
        """The effective preset (every field, defaults filled) as TOML; error if invalid."""
        v = wb.validate(text)
        if not v.ok:
            raise gr.Error("; ".join(f"{f}: {m}" for f, m in v.problems), print_exception=False)
        return v.effective

    def set_field(text: str, field: str, value: str) -> dict:
        """Set dotted `field` (e.g. "data.resolution") to `value` (read by the field's type; "" = default).
        Returns {"text": new TOML, "validation": as /validate_preset}."""
        new_text = wb.set_field(text, field, value)
        return {"text": new_text, "validation": wb.validate(new_text).as_dict()}

    def save_preset(name: str, text: str) -> dict:
        """Validate and save `text` as user preset `name` (overwrites that user preset). {"name"}."""
        return {"name": wb.save_preset(name, text, overwrite=True)}

    def save_preset_as(name: str, text: str) -> dict:
        """Validate and save `text` as a new user preset `name` (refused if it exists). {"name"}."""
        return {"name": wb.save_preset(name, text, overwrite=False)}

    def duplicate_preset(source: str, target: str) -> dict:
        """Copy preset `source` (shipped or user) to new user preset `target`. {"name"}."""
        return {"name": wb.duplicate_preset(source, target)}

    def delete_preset(name: str) -> dict:
        """Delete user preset `name` (shipped presets are read-only). {"deleted"}."""
        wb.delete_preset(name)
        return {"deleted": name}

    def launch_run(text: str, run_name: str) -> dict:
        """Validate preset `text` and start a run; `run_name` "" = <run.name>-<date-time>. {"run", "pid", "command"}."""
        return wb.launch(text, run_name)

    def list_runs() -> list:
        """Every run: [{"run", "state", "stage", "progress", "kimg", "kimg_total", "images_per_s", "it_per_s", "eta_s", "updated", "error"}]."""
        return wb.run_rows()

    def run_status(run: str) -> dict:
        """status.json of `run` plus "alive" (any of its processes running)."""
        return wb.run_status(run)

    def run_events(run: str) -> list:
        """All events of `run` (events.jsonl lines)."""
        return wb.run_events(run)

    def run_metrics(run: str) -> dict:
        """metrics.json of `run` ({} before the final evaluation)."""
        return wb.run_metrics(run)

    def log_tail(run: str, lines: int) -> str:
        """The last `lines` lines of the run's log."""
        return wb.log_tail(run, lines)

    def snapshots(run: str) -> list:
        """kimg values of the snapshot grids written during training."""
        return wb.snapshots(run)

    def stop_run(run: str) -> dict:
        """Stop `run`: SIGTERM to its process group (final checkpoint), SIGKILL after the grace period. {"run", "state"}."""
        return wb.stop(run, wait_s=5.0)

    def resume_run(run: str) -> dict:
        """Resume a stopped or failed run from its latest checkpoint. {"run", "pid", "command"}."""
        return wb.resume(run)

    def delete_run(run: str, confirm: str) -> dict:
        """Delete `run` and its folder; `confirm` must repeat the run name. {"deleted"}."""
        wb.delete_run(run, confirm)
        return {"deleted": run}

    def export_run(run: str, model: str, weights: str, replace: bool) -> dict:
        """Export the `model` ("generator" | "teacher") of a finished `run` with `weights` ("ema" | "raw") as a diffusers
        pipeline folder <run>/export-<model> (`replace` an earlier export). {"run", "model", "weights", "folder"}."""
        return wb.export(run, model, weights, replace)

    for fn in (list_presets, get_preset, validate_preset, effective_preset, set_field, save_preset, save_preset_as, duplicate_preset,
               delete_preset, launch_run, list_runs, run_status, run_events, run_metrics, log_tail, snapshots, stop_run, resume_run,
               delete_run, export_run):
        gr.api(as_gr_error(fn), api_name=fn.__name__, concurrency_limit=None if fn.__name__ in _READ_ONLY else 1,
               concurrency_id=None if fn.__name__ in _READ_ONLY else "actions")


_READ_ONLY = {"list_presets", "get_preset", "validate_preset", "effective_preset", "set_field", "list_runs", "run_status", "run_events",
              "run_metrics", "log_tail", "snapshots"}
