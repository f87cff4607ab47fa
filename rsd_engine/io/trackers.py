"""Experiment trackers (TensorBoard, and W&B, Trackio or MLflow where installed) fed from the run's events.

``run.trackers = ["tensorboard"]`` mirrors every event the engine writes to ``events.jsonl`` into
the trackers through Accelerate's tracker API (:class:`accelerate.tracking.GeneralTracker`):
losses, learning rate, images/s and it/s of each stage; live FID and KID with their n in the tag;
the teacher baseline; the final FIDs; the sample grids as images. ``events.jsonl`` stays the
workbench's source; trackers are a view for the tools researchers already use.

Steps are images seen since the start of the run: the teacher stage's images, then the teacher
stage's length plus the distillation's images, so one TensorBoard axis holds both stages in order.

Everything stays in the run folder and offline unless the user configures otherwise: TensorBoard
writes ``RUN/trackers/tensorboard/``; W&B runs in offline mode unless ``WANDB_MODE`` is set; MLflow
writes ``RUN/trackers/mlruns`` unless ``MLFLOW_TRACKING_URI`` is set; Trackio is local by default.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

import numpy as np
from PIL import Image

from .runs import RunDir

log = logging.getLogger(__name__)

__all__ = ["TRACKERS", "missing_packages", "EventTrackers"]

#: Tracker name in ``run.trackers`` → the Python package it needs.
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}

#: Fields of an event that are not values to log.
_NOT_VALUES = {"time", "stage", "kind", "kimg", "train_seconds", "model", "n", "seeds", "weights", "reference", "file", "source", "name"}


def missing_packages(names: list[str]) -> list[str]:
    """The trackers among ``names`` whose package is not installed (``pip install <name>``)."""
    return [n for n in names if importlib.util.find_spec(TRACKERS[n]) is None]


class EventTrackers:
    """Mirror of a run's events into Accelerate trackers; call it with each event (main process only).

    Args:
        run: the run folder (trackers write under ``run/trackers``).
        preset: the validated preset (``run.trackers``; its fields are stored as the run's config;
            ``teacher.kimg`` sets where the distillation's steps start).

    Raises:
        ValueError: a tracker whose package is not installed.
    """

    def __init__(self, run: RunDir, preset):
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        names = list(preset.run.trackers)
        missing = missing_packages(names)
        if missing:
            raise ValueError(f"run.trackers: {', '.join(missing)} not installed (pip install {' '.join(TRACKERS[m] for m in missing)})")
        self.run = run
        self.teacher_images = int(round(preset.teacher.kimg * 1000))
        self.distill_images = int(round(preset.distill.kimg * 1000))
        folder = run.path / "trackers"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(folder))
        os.environ.setdefault("MLFLOW_TRACKING_URI", (folder / "mlruns").resolve().as_uri())
        name = run.path.name
        self.trackers = []
        for n in names:
            cls = LOGGER_TYPE_TO_CLASS[n]
            if n == "tensorboard":
                self.trackers.append(cls("tensorboard", folder))
            elif n == "mlflow":
                self.trackers.append(cls(experiment_name=preset.run.name, run_name=name))
            else:
                self.trackers.append(cls(name))
        config = _flat(preset.model_dump(mode="json", exclude_none=True))
        for t in self.trackers:
            t.start()  # what Accelerator.init_trackers does for each tracker
            t.store_init_configuration(config)

    def step(self, event: dict) -> int:
        """Images seen since the start of the run at ``event`` (teacher images, then the teacher
        stage's length plus the distillation's images; the final evaluation at the end of both)."""
        kimg = event.get("kimg")
        images = int(round(float(kimg) * 1000)) if isinstance(kimg, (int, float)) else 0
        if event.get("stage") == "distill":
            return self.teacher_images + images
        if event.get("stage") == "evaluate":
            return self.teacher_images + self.distill_images
        return images

    def __call__(self, event: dict) -> None:
        """Log one event (unknown kinds are ignored; a tracker's failure is logged, never raised)."""
        try:
            values, images = self._values(event)
            step = self.step(event)
            for t in self.trackers:
                if values:
                    t.log(values, step=step)
                if images and hasattr(t, "log_images"):
                    t.log_images(images, step=step, **({"dataformats": "NHWC"} if t.name == "tensorboard" else {}))
        except Exception as e:  # noqa: BLE001 - a tracker must never stop training
            log.warning("tracker could not log a %s event: %s", event.get("kind"), e)

    def _values(self, event: dict) -> tuple[dict[str, float], dict[str, Any]]:
        kind, phase = event.get("kind"), event.get("stage")
        if kind == "progress":
            return {f"{phase}/{k}": float(v) for k, v in event.items() if k not in _NOT_VALUES and _number(v)}, {}
        if kind in ("fid", "teacher_baseline"):
            tag = f"{event.get('model')}_n{event.get('n')}" + ("_teacher_baseline" if kind == "teacher_baseline" else "")
            out = {f"live_fid/{tag}": float(event["fid"])} if _number(event.get("fid")) else {}
            if _number(event.get("kid")):
                out[f"live_kid/{tag}"] = float(event["kid"])
            return out, {}
        if kind == "grid" and event.get("file"):
            with Image.open(self.run.path / event["file"]) as im:
                pixels = np.asarray(im.convert("RGB"))
            return {}, {f"samples/{event.get('model')}": pixels[None]}
        if kind == "metrics" and isinstance(event.get("metrics"), dict):
            out = {}
            for model, m in event["metrics"].items():
                if isinstance(m, dict) and _number(m.get("fid")):
                    out[f"final_fid/{model}_n{m.get('n')}"] = float(m["fid"])
            return out, {}
        return {}, {}

    def finish(self) -> None:
        """Close every tracker (flushes TensorBoard's event files)."""
        for t in self.trackers:
            try:
                t.finish()
            except Exception as e:  # noqa: BLE001
                log.warning("tracker %s did not close cleanly: %s", t.name, e)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _flat(d: dict, prefix: str = "") -> dict:
    """``{"teacher": {"kimg": 2}}`` → ``{"teacher.kimg": 2}``; lists as text (trackers take scalars)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = str(v) if isinstance(v, list) else v
    return out
