"""No figure computed twice: the identity of an evaluation and the lookup of an earlier one.

Samples are a function of the weights, the model's sampler settings and the seeds
(:mod:`rsd_engine.evaluate.generate`), and FID/KID a function of those samples, the feature network and the
reference. An evaluation whose key (:func:`evaluation_key`: model, a hash of the weights, n, seeds,
sampler settings, reference, feature network, KID subset size) equals an earlier one's therefore has
the earlier one's FID and KID; :func:`find_earlier` finds it among the run's live FID events, teacher
baselines and metrics.json records, and the reusing record names it in ``reused_from``. In a run
whose last live evaluation falls on the last training step, the final teacher-truncated and generator
FIDs are those live FIDs.
"""

from __future__ import annotations

import hashlib
import json
import math

import torch
from torch import nn

__all__ = ["weights_digest", "evaluation_key", "find_earlier", "REUSED_FIELDS"]

#: Fields of an earlier record that a reusing record takes over.
REUSED_FIELDS = ("fid", "kid", "kid_std", "nfe", "images_per_s")


def weights_digest(net: nn.Module) -> str:
    """SHA-256 (hex) of a network's state: every parameter and buffer of ``state_dict()``, by name, dtype,
    shape and bytes (moved to the CPU). Equal digests mean bitwise equal weights; a copy loaded from a
    checkpoint has the digest of the network it was saved from."""
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def evaluation_key(
    model: str, weights_sha256: str, seeds: range, sampler: dict, reference: str, features: str, kid_subset_size: int
) -> str:
    """Identity of one FID/KID evaluation: SHA-256 (first 24 hex digits) of its defining settings.

    Args:
        model: ``teacher-full`` | ``teacher-truncated`` | ``generator``.
        weights_sha256: :func:`weights_digest` of the network that draws the samples.
        seeds: the sample seeds (n = ``len(seeds)``).
        sampler: the settings that shape the model's samples (steps, ρ, truncation σ, σ_init).
        reference: the reference's identity as recorded (``reference`` of a record).
        features: identity of the feature network's weights file.
        kid_subset_size: KID's subset size.
    """
    fields = {
        "model": model,
        "weights": weights_sha256,
        "seeds": [seeds.start, seeds.stop, seeds.step],
        "sampler": sampler,
        "reference": reference,
        "features": features,
        "kid_subset_size": kid_subset_size,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def _usable(record: dict, key: str) -> bool:
    fid = record.get("fid")
    return record.get("eval_key") == key and isinstance(fid, (int, float)) and math.isfinite(fid)


def find_earlier(key: str, events: list[dict], metrics: dict | None = None) -> dict | None:
    """The earlier evaluation with this key and a finite FID, or ``None``.

    Looks at the ``fid`` events of the live evaluations (the last one wins), then at the
    ``teacher_baseline`` events, then at the records of metrics.json.

    Returns:
        ``{"fid", "kid", "kid_std", "nfe", "images_per_s", "grid" (the earlier grid's path in the run
        folder), "grid_n" (its number of images) (those recorded), "reused_from"}``; ``reused_from``
        names the evaluation that computed the figure: ``{"stage", "kind", "kimg", "time"}`` of its event
        (an event that reused one passes its own source on) or ``{"file": "metrics.json", "model"}``.
    """
    for kind in ("fid", "teacher_baseline"):  # a baseline copies a live FID: name the original first
        for e in reversed(events):
            if e.get("kind") == kind and _usable(e, key):
                out = {k: e[k] for k in (*REUSED_FIELDS, "grid", "grid_n") if e.get(k) is not None}
                out["reused_from"] = e.get("reused_from") or {k: e[k] for k in ("stage", "kind", "kimg", "time") if k in e}
                return out
    for model, rec in (metrics or {}).items():
        if isinstance(rec, dict) and _usable(rec, key):
            out = {k: rec[k] for k in REUSED_FIELDS if k in rec}
            out["reused_from"] = {"file": "metrics.json", "model": model}
            return out
    return None
