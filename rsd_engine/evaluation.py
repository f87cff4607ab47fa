"""Evaluation of teacher and generator against clean references (METHOD.md §4).

Models evaluated: ``teacher-full`` (EDM Heun to σ = 0), ``teacher-truncated`` (Heun stopped at the
data noise σ_c, returning the denoiser output) and ``generator`` (one step, G_ema). Each record
states n, the seed range, the weights used and the reference it was measured against (CASES.md 1, 6, 7).
Samples come from fixed per-seed latents, so the same weights, n and seeds give the same FID.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from .data import CorruptedDataset, clean_reference, to_float
from .metrics import (
    FIDWeightsError,
    TooFewSamples,
    cached_features,
    extract_features,
    fid_from_features,
    kid_from_features,
    load_feature_network,
    psnr_ssim,
    quantize,
)
from .networks import EDMPrecond
from .operators import Operator, index_generator, measure
from .sampling import heun_sample, one_step_generate

__all__ = ["MODELS", "latents", "seed_masks", "generate", "Evaluator", "Samples"]

log = logging.getLogger("rsd_engine")

MODELS = ("teacher-full", "teacher-truncated", "generator")
WEIGHTS = {"teacher-full": "teacher EMA", "teacher-truncated": "teacher EMA", "generator": "generator EMA"}
_PSNR_SEED_OFFSET = 10_000_019  # noise of the evaluation copy of the test split, never a training seed
_MASK_SEED_OFFSET = 20_000_003  # network masks of evaluation samples


def latents(seeds: range, shape: tuple[int, int, int], device=None) -> torch.Tensor:
    """Standard-normal latents, one per seed, each from its own generator: (len(seeds), C, H, W).

    The same seed always gives the same latent, whatever the batch it is drawn in.
    """
    if len(seeds) == 0:
        return torch.empty(0, *shape, device=device)
    z = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    return z.to(device)


def seed_masks(op: Operator, seeds: range, device=None) -> torch.Tensor | None:
    """Network masks fixed by seed (one generator per seed, apart from the latents' seeds):
    (len(seeds), k, H, W), or ``None`` when the operator's networks take no mask."""
    if op.cond_channels == 0 or len(seeds) == 0:
        return None
    return torch.cat([op.network_mask(1, index_generator(_MASK_SEED_OFFSET, s)) for s in seeds]).to(device)


@dataclass
class Samples:
    """Generated images (N, C, H, W) float32 in ≈[-1, 1], denoiser evaluations per image (``None`` for a
    teacher sampler that drew no sample), wall seconds."""

    images: torch.Tensor
    nfe: int | None
    seconds: float

    @property
    def images_per_s(self) -> float:
        """Sampling throughput (images per wall-clock second)."""
        return self.images.shape[0] / max(self.seconds, 1e-9)


@torch.no_grad()
def generate(
    model: str,
    net: EDMPrecond,
    seeds: range,
    shape: tuple[int, int, int],
    *,
    batch_size: int,
    steps: int = 18,
    rho: float = 7.0,
    stop_sigma: float | None = None,
    sigma_init: float = 2.5,
    op: Operator | None = None,
    device=None,
) -> Samples:
    """Sample ``len(seeds)`` images from one of :data:`MODELS` with fixed per-seed latents.

    Args:
        model: ``teacher-full`` | ``teacher-truncated`` | ``generator``.
        net: teacher EMA for the teacher models, generator EMA for ``generator``.
        shape: (C, H, W) of one image.
        stop_sigma: σ at which ``teacher-truncated`` stops (σ_c).
        sigma_init: σ_init of the generator.
        op: the forward operator; for operators whose networks take a mask (inpainting) each seed
            also fixes its own network mask, so the same seed gives the same sample.

    Raises:
        ValueError: unknown model.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; allowed: {', '.join(MODELS)}")
    outs, nfe = [], (1 if model == "generator" else None)
    start = time.perf_counter()
    for s in range(0, len(seeds), batch_size):
        chunk = seeds[s : s + batch_size]
        z = latents(chunk, shape, device)
        cond = seed_masks(op, chunk, device) if op is not None else None
        if model == "generator":
            outs.append(one_step_generate(net, z, sigma_init, cond).float().cpu())
        else:
            res = heun_sample(net, z, steps, rho, stop_sigma if model == "teacher-truncated" else None, cond)
            outs.append(res.images.cpu())
            nfe = res.nfe
    seconds = time.perf_counter() - start
    images = torch.cat(outs) if outs else torch.empty(0, *shape)
    return Samples(images, nfe, seconds)


class Evaluator:
    """Feature network, cached reference features and metric records for one preset.

    If the FID weights are missing, FID/KID are skipped with one logged error naming the path
    and everything else goes on (CASES.md 5).

    Args:
        preset: validated preset.
        dataset: the corrupted training set (for proximal-FID references and measurement grids).
        device: torch device for sampling.
    """

    def __init__(self, preset, dataset: CorruptedDataset, device=None):
        self.preset = preset
        self.dataset = dataset
        self.device = device
        self._net = None
        self.fid_error: str | None = None
        self._refs: dict[str, tuple[torch.Tensor, str]] = {}

    @property
    def feature_net(self):
        """The TF-Inception feature network, or ``None`` when its weights are missing."""
        if self._net is None and self.fid_error is None:
            try:
                self._net = load_feature_network(self.preset.eval.fid_weights)
            except FIDWeightsError as e:
                self.fid_error = str(e)
                log.error("FID/KID disabled: %s", e)
        return self._net

    def clean_reference_features(self) -> tuple[torch.Tensor, str] | None:
        """Features of ``eval.reference_n`` clean held-out images, cached on disk; with the reference identity."""
        if "clean" not in self._refs:
            net = self.feature_net
            if net is None:
                return None
            n = self.preset.eval.reference_n
            images, identity = clean_reference(self.preset, n)
            ident = f"clean|{identity}|n{images.shape[0]}"
            feats = cached_features(ident, lambda: images, net, self.preset.eval.fid_cache_dir, self.preset.eval.batch_size, "reference features")
            self._refs["clean"] = (feats, f"{identity} (clean, n={images.shape[0]})")
        return self._refs["clean"]

    def measurement_reference_features(self) -> tuple[torch.Tensor, str] | None:
        """Features of the first ``eval.reference_n`` corrupted training measurements (proximal FID)."""
        if "measured" not in self._refs:
            net = self.feature_net
            if net is None:
                return None
            n = min(self.preset.eval.reference_n, len(self.dataset))
            c = self.preset.corruption
            ident = f"measured|{self.preset.data.model_dump_json()}|{c.model_dump_json()}|n{n}"
            feats = cached_features(
                ident, lambda: quantize(self.dataset.measurements(range(n))[0]), net, self.preset.eval.fid_cache_dir,
                self.preset.eval.batch_size, "measurement features",
            )
            self._refs["measured"] = (feats, f"corrupted training measurements (n={n})")
        return self._refs["measured"]

    def features(self, images: torch.Tensor, label: str | None = None) -> torch.Tensor:
        """Features of float images in [-1, 1] (quantised first). Requires the feature network."""
        return extract_features(self.feature_net, quantize(images), self.preset.eval.batch_size, label)

    def fid_record(self, model: str, samples: Samples, seeds: range, proximal: bool = False) -> dict:
        """FID/KID (and proximal FID) of one model's samples, with n, seeds, weights and reference.

        Missing weights or too few samples give a record with ``fid: None`` and a ``note``.
        """
        n = samples.images.shape[0]
        rec = {
            "model": model,
            "n": n,
            "seeds": [seeds.start, seeds.stop - 1] if n else [],
            "weights": WEIGHTS[model],
            "nfe": samples.nfe,
            "images_per_s": round(samples.images_per_s, 3),
            "fid": None,
            "kid": None,
            "kid_std": None,
        }
        ref = self.clean_reference_features()
        if ref is None:
            rec["note"] = f"no FID: {self.fid_error}"
            return rec
        ref_feats, ref_name = ref
        rec["reference"] = ref_name
        try:
            feats = self.features(samples.images, f"{model} features")
            rec["fid"] = fid_from_features(ref_feats, feats)
            rec["kid"], rec["kid_std"] = kid_from_features(ref_feats, feats, self.preset.eval.kid_subset_size)
            if proximal:
                rec.update(self.proximal_fid(samples.images, seeds))
        except TooFewSamples as e:
            rec["note"] = str(e)
            log.warning("%s: %s", model, e)
        return rec

    def proximal_fid(self, images: torch.Tensor, seeds: range) -> dict:
        """Proximal FID (METHOD.md §4): corrupt the samples with the same A and σ (seeded per sample)
        and compare with the corrupted training measurements. Returns ``{"proximal_fid", "proximal_reference"}``."""
        ref = self.measurement_reference_features()
        op, sigma = self.dataset.op, self.dataset.noise_sigma
        ys = [measure(op, images[i : i + 1], sigma, index_generator(_PSNR_SEED_OFFSET + 7, s))[0] for i, s in enumerate(seeds)]
        feats = self.features(torch.cat(ys), "proximal features")
        return {"proximal_fid": fid_from_features(ref[0], feats), "proximal_reference": ref[1]}

    @torch.no_grad()
    def denoiser_psnr(self, teacher: EDMPrecond) -> dict | None:
        """PSNR/SSIM of the teacher's posterior mean D(y; σ_c) on a noisy copy of the clean test split
        (METHOD.md "Our choices"). Only for the identity operator with σ_c > 0; else ``None``."""
        p = self.preset
        n = p.eval.psnr_n
        if p.corruption.operator != "identity" or p.corruption.noise_sigma <= 0 or n == 0:
            return None
        clean_u8, identity = clean_reference(p, n)
        x = to_float(clean_u8)
        sigma = p.corruption.noise_sigma
        noisy = torch.cat([measure(self.dataset.op, x[i : i + 1], sigma, index_generator(_PSNR_SEED_OFFSET, i))[0] for i in range(x.shape[0])])
        outs = []
        for s in range(0, x.shape[0], p.eval.batch_size):
            y = noisy[s : s + p.eval.batch_size].to(self.device)
            outs.append(teacher(y, torch.full((y.shape[0],), sigma, device=self.device)).float().cpu())
        psnr, ssim = psnr_ssim(torch.cat(outs), x)
        psnr_noisy, ssim_noisy = psnr_ssim(noisy, x)
        return {"psnr": psnr, "ssim": ssim, "psnr_noisy_input": psnr_noisy, "ssim_noisy_input": ssim_noisy,
                "n": x.shape[0], "weights": "teacher EMA", "reference": identity}
