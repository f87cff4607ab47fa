"""Evaluation of teacher and generator against clean references (docs/method.md §4): metric records,
the live evaluation during training and the final evaluation of a run.

Each record states n, the seed range, the weights used and the reference it was measured against.
Samples come from fixed per-seed latents (:mod:`rsd_engine.evaluate.generate`), so the same weights, n and
seeds give the same FID, on one process or split across several.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from accelerate.utils import broadcast_object_list

from ..data import CorruptedDataset, clean_reference, to_float
from ..io.runs import (
    CLEAN_GRID,
    FINAL_NETWORK,
    GENERATOR,
    GENERATOR_BEATS_TEACHER,
    GENERATOR_FINAL,
    MEASUREMENTS_GRID,
    MODELS,
    RACE,
    TEACHER_BASELINE,
    TEACHER_FINAL,
    TEACHER_FULL,
    TEACHER_TRUNCATED,
    RunDir,
    atomic_write_bytes,
    first_crossing,
    teacher_baseline,
)
from ..io.signals import StopPolicy, StopRequested
from ..io.timing import BASELINE, FINAL, LIVE, REFERENCE, TIMING
from ..models.networks import EDMPrecond
from ..seeding import EVAL_NOISE_SEED, PROXIMAL_NOISE_SEED, RECONSTRUCTION_NOISE_SEED, item_rng
from ..train.checkpoints import checkpoint_exists, load_checkpoint, load_network
from ..train.finite import NonFiniteError
from .generate import WEIGHTS, ModelSampler, Samples
from .grids import save_grid
from .metrics import (
    FEATURES_VERSION,
    RESIZE,
    FIDWeightsError,
    InceptionFeatures,
    ReferenceStatistics,
    TooFewSamples,
    cached_features,
    display_images,
    extract_features,
    feature_statistics,
    fid_from_features,
    fid_from_statistics,
    kid_from_features,
    load_feature_network,
    load_reference_statistics,
    psnr_ssim,
    quantize,
)
from .reuse import evaluation_key, find_earlier, weights_digest

__all__ = ["Evaluator", "Evaluation", "final_network", "find_teacher_baseline", "BaselineFound", "RECONSTRUCTION_SIGMA"]

log = logging.getLogger("rsd_engine")

#: Noise level σ_r of the teacher's one-step reconstruction when the data are noise-free (docs/method.md
#: §9): low enough that D(·; σ_r) is close to the posterior mean at σ → 0, high enough to be well inside
#: the log-normal range the teacher was trained on (ln σ ~ N(−1.2, 1.2²): 7 % of the draws lie below).
RECONSTRUCTION_SIGMA = 0.05


def final_network(run: RunDir, preset, model: str, device=None) -> EDMPrecond:
    """The EMA network that draws ``model``, from the run's final checkpoints: the teacher EMA (of
    ``teacher.checkpoint`` when set) for the teacher models, the generator EMA for ``generator``.
    Eval mode, no gradients, on ``device``.

    Raises:
        FileNotFoundError: the checkpoint does not exist (yet).
    """
    if model == GENERATOR:
        folder, name = run.checkpoint(GENERATOR_FINAL), FINAL_NETWORK[GENERATOR_FINAL]
    else:
        folder, name = run.teacher_final(preset.teacher.checkpoint), FINAL_NETWORK[TEACHER_FINAL]
    return load_network(folder, name).to(device)


class BaselineFound(NamedTuple):
    """What :func:`find_teacher_baseline` found: the FID record, and how it was obtained (``source``,
    the baseline event's field), or ``None`` when ``record`` is this run's baseline event already."""

    record: dict
    source: str | None


def find_teacher_baseline(
    own_events: list[dict], n: int, reference: str, model: str, trainer_events: list[dict] | None, final_kimg: float | None, where: str = ""
) -> BaselineFound | None:
    """The teacher's live-FID baseline for distillation from a run's records (a pure function: no files,
    no collectives), or ``None`` when it has to be computed from teacher-final.

    Precedence (the first that applies wins):

    1. this run's last :data:`~rsd_engine.io.runs.TEACHER_BASELINE` event with this ``n`` and ``reference``
       (``source`` ``None``: already recorded);
    2. the last such event of the run that trained the teacher (``trainer_events``);
    3. that run's teacher stage's *last* ``fid`` event, if it is of ``model``, ``n`` and ``reference`` and
       was measured at teacher-final's position ``final_kimg`` (so on the final EMA); an earlier live
       FID never counts, nor one of another model, n or reference;
    4. else ``None``.

    Args:
        own_events: this run's events.jsonl.
        n: ``eval.live_fid_n``.
        reference: the FID reference's name (clean held-out images or ``eval.reference_stats``).
        model: the teacher sampler shown during training (``ModelSampler.teacher_model``).
        trainer_events: the events of the run folder that trained the teacher (this run's own, or the
            one ``teacher.checkpoint`` names); ``None`` when the teacher comes from a folder that is no
            run (steps 2–3 are skipped).
        final_kimg: kimg of that run's teacher-final checkpoint (``images_seen`` / 1000), ``None``
            without one (step 3 is skipped).
        where: ``" of <run folder>"`` for a teacher trained in another run, named in ``source``.
    """
    own = teacher_baseline(own_events, n, reference)
    if own is not None:
        return BaselineFound(own, None)
    if trainer_events is None:
        return None
    found = teacher_baseline(trainer_events, n, reference)
    if found is not None:
        return BaselineFound(found, f"teacher baseline{where}")
    if final_kimg is None:
        return None
    last = next((e for e in reversed(trainer_events) if e.get("kind") == "fid" and e.get("stage") == "teacher"), None)
    if last is None or (last.get("model"), last.get("n"), last.get("reference"), last.get("kimg")) != (model, n, reference, final_kimg):
        return None
    return BaselineFound(last, f"teacher stage's live FID{where} at {final_kimg:g} kimg (final EMA)")


def clean_features(preset, n: int, net: InceptionFeatures, stop: Callable[[], bool] | None = None) -> tuple[torch.Tensor, str]:
    """TF-Inception features (n', 2048) of the first n clean held-out images (n' ≤ n when the split is
    smaller), cached on disk, and the reference's name (``"<identity> (clean, n=n')"``): the built-in FID
    reference of every run, and what ``rsd-engine fid-ref`` writes as EDM-format statistics.

    Raises:
        DataError: missing or malformed evaluation data. StopRequested: ``stop()`` before a feature batch.
    """
    images, identity = clean_reference(preset, n)
    ident = f"clean|{identity}|n{images.shape[0]}"
    feats = cached_features(
        ident,
        lambda: quantize(display_images(to_float(images))),
        net,
        preset.eval.fid_cache_dir,
        preset.eval.batch_size,
        "reference features",
        stop,
    )
    return feats, f"{identity} (clean, n={images.shape[0]})"


class Evaluator:
    """Feature network, cached reference features and metric records for one preset.

    If the FID weights are missing, FID/KID are skipped with one logged error naming the path
    and everything else goes on.

    Args:
        preset: validated preset.
        dataset: the corrupted training set (proximal-FID references); its measurement corrupts
            samples and test images alike.
        device: torch device of the teacher denoiser.
        stop: asked before each feature batch (a local check,
            :meth:`rsd_engine.io.signals.StopPolicy.local`); ``True`` raises
            :class:`~rsd_engine.io.signals.StopRequested` from the method computing features
            (nothing is recorded or cached). Default: never stop.
    """

    def __init__(self, preset, dataset: CorruptedDataset, device=None, stop: Callable[[], bool] | None = None):
        self.preset = preset
        self.dataset = dataset
        self.measurement = dataset.measurement
        self.device = device
        self.stop = stop
        self._net = None
        self.fid_error: str | None = None
        self._refs: dict[str, object] = {}  # reference features, their statistics, the reference file
        #: (what, seconds) of each reference's features since the caller last emptied it (computed, or read
        #: from the on-disk cache), so that one-time reference work shows apart from the evaluation that needed it.
        self.reference_seconds: list[tuple[str, float]] = []

    @property
    def feature_net(self):
        """The TF-Inception feature network, or ``None`` when its weights are missing."""
        if self._net is None and self.fid_error is None:
            try:
                self._net = load_feature_network(self.preset.eval.fid_weights).to(self.device or "cpu")
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
            start = time.perf_counter()
            self._refs["clean"] = clean_features(self.preset, self.preset.eval.reference_n, net, self.stop)
            n = self._refs["clean"][0].shape[0]
            self.reference_seconds.append((f"clean reference features (n={n})", time.perf_counter() - start))
        return self._refs["clean"]

    def clean_statistics(self) -> tuple:
        """μ (2048,) and Σ (2048, 2048), float64, of :meth:`clean_reference_features` (computed once), the
        built-in FID reference; ``fid-ref`` writes the same numbers to its file."""
        if "clean_stats" not in self._refs:
            self._refs["clean_stats"] = feature_statistics(self.clean_reference_features()[0])
        return self._refs["clean_stats"]

    def reference_statistics(self) -> ReferenceStatistics | None:
        """The statistics of ``eval.reference_stats`` (read once), which every FID of the run is measured
        against instead of the clean held-out images; ``None`` when unset.

        Raises:
            ReferenceStatsError: the file is missing or malformed (named).
        """
        path = self.preset.eval.reference_stats
        if path and "stats" not in self._refs:
            self._refs["stats"] = load_reference_statistics(path)
        return self._refs.get("stats")

    def shown_measurements(self, indices) -> torch.Tensor:
        """The frozen training measurements of ``indices`` as images (:meth:`Operator.display`: y itself,
        or the zero-filled image of k-space measurements), (B, C, H, W)."""
        y, params = self.dataset.measurements(indices)
        return self.measurement.op.display(y, **params)

    def measurement_reference_features(self) -> tuple[torch.Tensor, str] | None:
        """Features of the first ``eval.reference_n`` corrupted training measurements (proximal FID), shown
        as images (:meth:`shown_measurements`)."""
        if "measured" not in self._refs:
            net = self.feature_net
            if net is None:
                return None
            start = time.perf_counter()
            n = min(self.preset.eval.reference_n, len(self.dataset))
            c = self.preset.corruption
            ident = f"measured|{self.preset.data.model_dump_json()}|{c.model_dump_json()}|n{n}"
            feats = cached_features(
                ident,
                lambda: quantize(display_images(self.shown_measurements(range(n)))),
                net,
                self.preset.eval.fid_cache_dir,
                self.preset.eval.batch_size,
                "measurement features",
                self.stop,
            )
            self._refs["measured"] = (feats, f"corrupted training measurements (n={n})")
            self.reference_seconds.append((f"measurement reference features (n={n})", time.perf_counter() - start))
        return self._refs["measured"]

    def features(self, images: torch.Tensor, label: str | None = None) -> torch.Tensor:
        """Features of float images in [-1, 1] (complex ones as their magnitude, :func:`display_images`;
        quantised first). Requires the feature network."""
        return extract_features(self.feature_net, quantize(display_images(images)), self.preset.eval.batch_size, label, self.stop)

    def features_identity(self) -> str:
        """Identity of the features: the network's weights file (name and size) and
        :data:`~rsd_engine.evaluate.metrics.FEATURES_VERSION`; part of an evaluation's key."""
        w = self.feature_net.weights
        return f"{w.name}:{w.stat().st_size}:{FEATURES_VERSION}:{RESIZE}"

    def identity(self, model: str, net: EDMPrecond, seeds: range, sampler: dict) -> dict | None:
        """``{"eval_key", "weights_sha256"}`` of evaluating ``model`` drawn by ``net`` from ``seeds``
        (:func:`rsd_engine.evaluate.reuse.evaluation_key`), or ``None`` when FID is disabled."""
        stats = self.reference_statistics()
        ref = self.clean_reference_features() if stats is None else (None, f"{stats.name} {stats.sha256}")
        if ref is None or self.feature_net is None:
            return None
        digest = weights_digest(net)
        key = evaluation_key(model, digest, seeds, sampler, ref[1], self.features_identity(), self.preset.eval.kid_subset_size)
        return {"eval_key": key, "weights_sha256": digest}

    def fid_record(
        self,
        model: str,
        samples: Samples | None,
        seeds: range,
        proximal: bool = False,
        weights: str | None = None,
        ident: dict | None = None,
        earlier: dict | None = None,
    ) -> dict:
        """FID/KID (and proximal FID) of one model's samples, with n, seeds (or held-out image indices),
        weights (default :data:`rsd_engine.evaluate.generate.WEIGHTS` of the model) and reference.

        Args:
            ident: the evaluation's identity (:meth:`identity`), stored in the record.
            earlier: an earlier evaluation with the same identity (:func:`rsd_engine.evaluate.reuse.find_earlier`):
                its FID, KID (and, without ``samples``, NFE and images/s) are taken over and the record
                names it in ``reused_from``; no features of the samples are computed. ``samples`` may
                then be ``None`` unless ``proximal``.

        Missing weights or too few samples give a record with ``fid: None`` and a ``note``.
        """
        n = samples.images.shape[0] if samples is not None else len(seeds)
        rec = {
            "model": model,
            "n": n,
            "seeds": [seeds.start, seeds.stop - 1] if n else [],
            "weights": weights or WEIGHTS[model],
            "nfe": samples.nfe if samples is not None else earlier.get("nfe"),
            "images_per_s": round(samples.images_per_s, 3) if samples is not None else earlier.get("images_per_s"),
            "fid": None,
            "kid": None,
            "kid_std": None,
        }
        stats = self.reference_statistics()
        ref = self.clean_reference_features() if stats is None else (None, stats.name)
        if ref is None or self.feature_net is None:
            rec["note"] = f"no FID: {self.fid_error}"
            return rec
        ref_feats, ref_name = ref
        rec["reference"] = ref_name
        if stats is not None:
            rec["reference_sha256"] = stats.sha256
        rec.update(ident or {})
        try:
            if earlier is not None:
                rec.update({k: earlier.get(k) for k in ("fid", "kid", "kid_std")}, reused_from=earlier["reused_from"])
            else:
                feats = self.features(samples.images, f"{model} features")
                mu, sigma = (stats.mu, stats.sigma) if stats is not None else self.clean_statistics()
                rec["fid"] = fid_from_statistics(mu, sigma, feats)
                if stats is not None:
                    rec["note"] = "KID not computed: eval.reference_stats holds statistics, not reference images"
                else:
                    rec["kid"], rec["kid_std"] = kid_from_features(ref_feats, feats, self.preset.eval.kid_subset_size)
            if proximal:
                rec.update(self.proximal_fid(samples.images, seeds))
        except TooFewSamples as e:
            rec["note"] = str(e)
            log.warning("%s: %s", model, e)
        return rec

    def proximal_fid(self, images: torch.Tensor, seeds: range) -> dict:
        """Proximal FID (docs/method.md §4.3): corrupt the samples with the same A and σ_c (sample of
        seed s with the RNG of s in the proximal stream) and compare with the corrupted training
        measurements, both shown as images (for MRI the zero-filled magnitudes, §9).
        Returns ``{"proximal_fid", "proximal_reference"}``."""
        ref = self.measurement_reference_features()
        y, params = self.measurement.frozen(images, seeds, seed=PROXIMAL_NOISE_SEED)
        feats = self.features(self.measurement.op.display(y, **params), "proximal features")
        return {"proximal_fid": fid_from_features(ref[0], feats), "proximal_reference": ref[1]}

    @torch.no_grad()
    def denoiser_psnr(self, teacher: EDMPrecond) -> dict | None:
        """PSNR/SSIM of the teacher's posterior mean D(y; σ_c) on a noisy copy of the clean test split
        (docs/method.md §4.4). Only for the identity operator with σ_c > 0; else ``None``."""
        p, m = self.preset, self.measurement
        n = p.eval.psnr_n
        if m.op.name != "identity" or m.noise_sigma <= 0 or n == 0:
            return None
        clean_u8, identity = clean_reference(p, n)
        x = to_float(clean_u8)
        noisy, _ = m.frozen(x, range(x.shape[0]), seed=EVAL_NOISE_SEED)
        outs = []
        for s in range(0, x.shape[0], p.eval.batch_size):
            y = noisy[s : s + p.eval.batch_size].to(self.device)
            outs.append(teacher(y, torch.full((y.shape[0],), m.noise_sigma, device=self.device)).float().cpu())
        psnr, ssim = psnr_ssim(torch.cat(outs), x)
        psnr_noisy, ssim_noisy = psnr_ssim(noisy, x)
        return {
            "psnr": psnr,
            "ssim": ssim,
            "psnr_noisy_input": psnr_noisy,
            "ssim_noisy_input": ssim_noisy,
            "n": x.shape[0],
            "weights": "teacher EMA",
            "reference": identity,
        }

    @torch.no_grad()
    def restoration_baseline(self, teacher: EDMPrecond) -> dict[str, tuple[dict, torch.Tensor]]:
        """The restoration records of an operator with a baseline (multi-coil MRI, docs/method.md §9), on
        the clean held-out images (at most ``eval.reference_n``), each measured with its frozen draw of
        the evaluation noise stream:

        - ``zero-filled``: the adjoint Aᴴy of the measurements (the baseline);
        - ``teacher-reconstruction``: the teacher's posterior mean D([Aᴴy + √(σ_r² − σ_c²)·P_A n, A]; σ_r)
          at σ_r = max(σ_c, :data:`RECONSTRUCTION_SIGMA`), one network evaluation (n of image i from
          its own RNG of the reconstruction stream).

        The ``seeds`` of these records are held-out image indices.

        Each has FID/KID against the clean reference and PSNR/SSIM of the magnitude against the clean
        magnitude (both mapped by :func:`display_images`).

        Returns:
            name → (record, restored images (n, C, H, W) in the order of the clean held-out images);
            empty for operators without a baseline.
        """
        p, m = self.preset, self.measurement
        op = m.op
        if op.baseline is None:
            return {}
        clean, _ = clean_reference(p, p.eval.reference_n)
        x = to_float(clean)
        y, params = m.frozen(x, range(x.shape[0]), seed=EVAL_NOISE_SEED)
        zero_filled = op.adjoint(y, **params)
        sigma = max(m.noise_sigma, RECONSTRUCTION_SIGMA)
        top_up = (sigma**2 - m.noise_sigma**2) ** 0.5
        noise = torch.stack([torch.randn(x.shape[1:], generator=item_rng(RECONSTRUCTION_NOISE_SEED, i)) for i in range(x.shape[0])])
        start, outs = time.perf_counter(), []
        for s in range(0, x.shape[0], p.eval.batch_size):
            rows = slice(s, s + p.eval.batch_size)
            cond = op.condition(**{k: v[rows] for k, v in params.items()}).to(self.device)
            inp = zero_filled[rows].to(self.device) + top_up * cond.project(noise[rows].to(self.device))
            outs.append(teacher(inp, torch.full((inp.shape[0],), sigma, device=self.device), cond.channels).float().cpu())
        seconds = time.perf_counter() - start
        models = {
            op.baseline: (zero_filled, "none: the adjoint of the measurements", 0, None),
            "teacher-reconstruction": (torch.cat(outs), f"teacher EMA, D(·; σ = {sigma:g}) given Aᴴy and the mask", 1, seconds),
        }
        out = {}
        for name, (images, weights, nfe, secs) in models.items():
            rec = self.fid_record(name, Samples(images, nfe, secs or 0.0), range(images.shape[0]), weights=weights)
            if secs is None:
                rec.pop("images_per_s")
            rec["psnr"], rec["ssim"] = psnr_ssim(display_images(images), display_images(x))
            quality = f"PSNR {rec['psnr']:.2f} dB, SSIM {rec['ssim']:.3f} of the magnitude against the {x.shape[0]} clean held-out images"
            rec["note"] = "; ".join(filter(None, [rec.get("note"), quality]))
            out[name] = (rec, images)
        return out


class Evaluation:
    """The live evaluation during training and the final evaluation of one run.

    Sampling is split across the accelerator's processes (:meth:`ModelSampler.generate_across`);
    files, events and metrics are written by the main process only. Every process must call the
    methods at the same points.

    Args:
        preset: validated preset.
        run: the run folder.
        accelerator: the run's ``Accelerator``.
        dataset: the corrupted training set.
        sampler: how each model draws its samples.
        stops: the run's stop policy (:class:`rsd_engine.io.signals.StopPolicy`): its agreed check comes
            before each model of the final evaluation.

    Every evaluation is also interrupted between its sampling and feature batches as soon as this
    process sees SIGTERM/SIGINT (:meth:`StopPolicy.local`): the processes agree on it
    (:meth:`StopPolicy.agree`) and raise :class:`~rsd_engine.io.signals.StopRequested`, and no FID or
    metric of the interrupted evaluation is recorded (a grid only once all its images are drawn).
    """

    def __init__(self, preset, run: RunDir, accelerator, dataset: CorruptedDataset, sampler: ModelSampler, stops: StopPolicy):
        self.preset = preset
        self.run = run
        self.acc = accelerator
        self.dataset = dataset
        self.sampler = sampler
        self.stops = stops
        self.evaluator = Evaluator(preset, dataset, accelerator.device, stop=stops.local)
        self._baseline: dict | None = None
        self._baseline_known = False
        self._crossing: dict | None = None

    @property
    def main(self) -> bool:
        """Whether this is the process that writes files."""
        return self.acc.is_main_process

    def _samples(self, model: str, net: EDMPrecond, seeds: range) -> Samples:
        """:meth:`ModelSampler.generate_across`, interrupted by the stop policy (every process calls it)."""
        return self.sampler.generate_across(self.acc, model, net, seeds, self.stops)

    def live(self, stage: str, net: EDMPrecond, images_seen: int, train_seconds: float = 0.0) -> dict | None:
        """Grid from fixed seeds and a small-n live FID (labelled with n) of the stage's model: the
        teacher model of :class:`ModelSampler` for ``stage="teacher"``, the generator otherwise.

        Writes ``samples/<model>.png``, its snapshot ``<model>-kimg<NNNNNN.NNN>.png`` and the events
        ``grid`` and ``fid`` (with ``train_seconds``, the stage's training time so far, the evaluation's
        identity ``eval_key``/``weights_sha256`` and the snapshot's path) and a ``timing`` event. The grid
        is the first ``grid_n`` of the FID's samples (the same seeds); a live FID whose identity equals an
        earlier evaluation's is taken from it (``reused_from``, e.g. when a resumed run redoes one). During
        distillation the generator's live FID is compared with :meth:`teacher_baseline`; the first
        time it is lower, a :data:`~rsd_engine.io.runs.GENERATOR_BEATS_TEACHER` event and the status
        field ``generator_beats_teacher`` record the kimg and the training minutes.

        Returns:
            the FID record on the main process when a live FID was computed, else ``None``.

        Raises:
            StopRequested: a stop signal during the sampling or the features (no FID recorded).
        """
        e = self.preset.eval
        model = self.sampler.teacher_model if stage == "teacher" else GENERATOR
        kimg = images_seen / 1000
        baseline = self.teacher_baseline() if stage == "distill" else None
        start = time.perf_counter()
        n = e.live_fid_n if e.live_fid_n >= 2 else 0
        drawn = self._samples(model, net, range(max(e.grid_n, n)))  # the grid's seeds are the first of the FID's
        rec = None
        with self.stops.agree():  # main-process work; the others wait
            if not self.main:
                return None
            snapshot = self.run.grid_path(model, kimg)
            save_grid(drawn.images[: e.grid_n], self.run.grid_path(model))
            save_grid(drawn.images[: e.grid_n], snapshot)
            self.run.append_event(
                stage, "grid", kimg=kimg, model=model, file=self.run.grid_path(model).relative_to(self.run.path).as_posix()
            )
            if n:
                seeds = range(n)
                samples = Samples(drawn.images[:n], drawn.nfe, drawn.seconds * n / drawn.images.shape[0])
                ident, earlier = self._identity(model, net, seeds)
                rec = self.evaluator.fid_record(model, samples, seeds, ident=ident, earlier=earlier)
                if rec["fid"] is None:
                    rec = None
                else:
                    log.info("%s live FID %.2f (n=%d) at %g kimg%s", model, rec["fid"], rec["n"], kimg, _reuse_note(rec))
                    self.run.append_event(
                        stage,
                        "fid",
                        kimg=kimg,
                        model=model,
                        **{k: rec.get(k) for k in _FID_EVENT_FIELDS if k in rec},
                        grid=snapshot.relative_to(self.run.path).as_posix(),
                        grid_n=e.grid_n,
                        train_seconds=round(train_seconds, 3),
                    )
                    if baseline is not None:
                        self._race(rec, baseline, kimg, train_seconds)
            self._timed(stage, LIVE, start, model=model, kimg=kimg, reused_from=(rec or {}).get("reused_from"))
        return rec

    def _sampler_settings(self, model: str) -> dict:
        """The sampler settings that shape ``model``'s samples (part of an evaluation's key)."""
        s = self.sampler
        if model == GENERATOR:
            return {"sigma_init": s.sigma_init}
        return {"steps": s.steps, "rho": s.rho, **({"truncation_sigma": s.truncation_sigma} if model == TEACHER_TRUNCATED else {})}

    def _identity(self, model: str, net: EDMPrecond, seeds: range) -> tuple[dict | None, dict | None]:
        """(identity of this evaluation, an earlier evaluation with the same identity or ``None``) (main
        process; ``(None, None)`` when FID is disabled)."""
        ident = self.evaluator.identity(model, net, seeds, self._sampler_settings(model))
        if ident is None:
            return None, None
        return ident, find_earlier(ident["eval_key"], self.run.read_events(), self.run.read_metrics())

    def _timed(self, phase: str, part: str, start: float, **fields) -> None:
        """Append the ``timing`` event of ``part`` in ``phase`` (:data:`~rsd_engine.io.runs.PHASES`): seconds
        since ``start`` (a ``time.perf_counter()``), with the given fields (``None`` ones left out) (main
        process). Reference features loaded or
        computed meanwhile get their own :data:`~rsd_engine.io.timing.REFERENCE` events, and their seconds
        are not counted in ``part``."""
        seconds = time.perf_counter() - start
        for what, ref_seconds in self.evaluator.reference_seconds:
            self.run.append_event(phase, TIMING, part=REFERENCE, seconds=round(ref_seconds, 3), what=what)
            seconds -= ref_seconds
        self.evaluator.reference_seconds.clear()
        self.run.append_event(
            phase, TIMING, part=part, seconds=round(max(seconds, 0.0), 3), **{k: v for k, v in fields.items() if v is not None}
        )

    def teacher_baseline(self) -> dict | None:
        """The teacher sampler's live FID that the generator's live FIDs are compared with: the
        truncated teacher (the full one when σ_c = 0 and no ``eval.stop_sigma``), teacher EMA of
        teacher-final, ``eval.live_fid_n`` samples from seeds 0…n−1, the same clean reference.

        Taken from the records when there (:func:`find_teacher_baseline`, which states the precedence:
        a :data:`~rsd_engine.io.runs.TEACHER_BASELINE` event with this n and reference, or the teacher
        stage's last live FID measured on the final EMA, in this run or in the run folder that
        ``teacher.checkpoint`` names), on the main process, which then tells the others whether to
        compute it from teacher-final (a broadcast). Written as a TEACHER_BASELINE event once. Every
        process must call it (the computation is split across them); the record is returned on the
        main process.

        Returns:
            the baseline event, or ``None`` when live FID is off (``eval.live_fid_n`` < 2), the FID
            weights are missing, or on processes other than the main one.
        """
        if self._baseline_known:
            return self._baseline
        start = time.perf_counter()
        n, model = self.preset.eval.live_fid_n, self.sampler.teacher_model
        compute = False
        with self.stops.agree():  # main-process work; the others wait
            if self.main and n >= 2:
                stats = self.evaluator.reference_statistics()
                ref = self.evaluator.clean_reference_features() if stats is None else (None, stats.name)
                if ref is not None and self.evaluator.feature_net is not None:
                    events = self.run.read_events()
                    self._crossing = first_crossing(events)
                    found = find_teacher_baseline(events, n, ref[1], model, *self._trainer_records(events))
                    if found is not None:
                        self._baseline = found.record if found.source is None else self._record_baseline(*found)
                    compute = self._baseline is None
        if self.acc.num_processes > 1:
            compute = broadcast_object_list([compute])[0]
        if compute:
            teacher = final_network(self.run, self.preset, model, self.acc.device)
            samples = self._samples(model, teacher, range(n))
            with self.stops.agree():  # main-process work; the others wait
                if self.main:
                    ident, earlier = self._identity(model, teacher, range(n))
                    rec = self.evaluator.fid_record(model, samples, range(n), ident=ident, earlier=earlier)
                    if rec["fid"] is not None:
                        self._baseline = self._record_baseline(rec, "computed from teacher-final at the start of distillation")
        if self.main and self._baseline is not None:
            self._timed("distill", BASELINE, start, model=model, source=self._baseline.get("source"))
        self._baseline_known = True
        return self._baseline

    def _trainer_records(self, own_events: list[dict]) -> tuple[list[dict] | None, float | None, str]:
        """The records of the run folder that trained the teacher, for :func:`find_teacher_baseline`:
        (its events, its teacher-final's kimg or ``None``, ``" of <folder>"`` or ``""`` for this run).
        The trainer is this run (``own_events``), or the run folder that ``teacher.checkpoint`` names;
        ``(None, None, "")`` when ``teacher.checkpoint`` is a folder that is no run."""
        source = self.preset.teacher.checkpoint
        trainer = RunDir(source) if source and RunDir(source).exists() else (None if source else self.run)
        if trainer is None:
            return None, None, ""
        events = own_events if trainer is self.run else trainer.read_events()
        where = "" if trainer is self.run else f" of {trainer.path}"
        final = trainer.checkpoint(TEACHER_FINAL)
        kimg = load_checkpoint(final).state.get("images_seen", -1) / 1000 if checkpoint_exists(final) else None
        return events, kimg, where

    def _record_baseline(self, rec: dict, source: str) -> dict:
        """Write the TEACHER_BASELINE event of a FID record (main process); returns the event."""
        same = {
            k: rec[k] for k in ("kid_std", "nfe", "images_per_s", "eval_key", "weights_sha256", "grid", "grid_n") if rec.get(k) is not None
        }
        event = self.run.append_event(
            "distill",
            TEACHER_BASELINE,
            model=rec["model"],
            fid=rec["fid"],
            kid=rec.get("kid"),
            n=rec["n"],
            seeds=rec["seeds"],
            weights=rec["weights"],
            reference=rec["reference"],
            source=source,
            **same,
        )
        log.info("teacher baseline for the generator's live FID: %s FID %.2f (n=%d; %s)", rec["model"], rec["fid"], rec["n"], source)
        return event

    def _race(self, rec: dict, baseline: dict, kimg: float, train_seconds: float) -> None:
        """Record the first live evaluation at which the generator's FID is below the baseline's (main process)."""
        if self._crossing is not None or rec["fid"] >= baseline["fid"]:
            return
        info = {
            "kimg": kimg,
            "minutes": round(train_seconds / 60, 3),
            "fid": rec["fid"],
            "teacher_fid": baseline["fid"],
            "teacher_model": baseline["model"],
            "n": rec["n"],
        }
        self._crossing = self.run.append_event("distill", GENERATOR_BEATS_TEACHER, **info)
        self.run.write_status(generator_beats_teacher=info)
        log.info(
            "generator live FID %.2f is below the %s's %.2f (n=%d) at %g kimg, %.1f min of distillation",
            rec["fid"],
            baseline["model"],
            baseline["fid"],
            rec["n"],
            kimg,
            train_seconds / 60,
        )

    def final(self, models: tuple[str, ...] = MODELS, reuse: bool = True) -> dict:
        """Final metrics of the given models (default teacher-full, teacher-truncated, generator), their
        grids, the teacher-denoiser PSNR/SSIM and, for operators with a restoration baseline (MRI), the
        zero-filled and teacher-reconstruction records and grids; merged into metrics.json (other
        models' records are kept).

        ``teacher-truncated`` is left out when the sampler is not truncated, ``generator`` when the run
        has no generator-final yet. Proximal FID is computed for the generator, the model it selects
        checkpoints of (docs/method.md §4.3), unless ``eval.proximal_fid`` is off. A model whose weights,
        n, seeds, sampler and reference equal an earlier evaluation's (a live FID, the teacher baseline,
        or metrics.json; :mod:`rsd_engine.evaluate.reuse`) takes that FID/KID instead of computing it again, with
        ``reused_from`` naming it; when no proximal FID is wanted either, its samples are not drawn and
        its grid is the earlier evaluation's (``reuse=False``: every FID is computed again). Each model's
        seconds go to a ``timing`` event.

        Returns:
            the merged metrics (on processes other than the main one: metrics.json as it was).

        Raises:
            StopRequested: a stop was requested; checked before each model and between the batches of
                its sampling and features (metrics.json is then left as it was).
            FileNotFoundError: no teacher checkpoint.
            NonFiniteError: a final network, a sample or a denoiser output is not finite
                (``"evaluate: …"``); metrics.json is left as it was.
            ValueError: an unknown model name.
        """
        try:
            return self._final(models, reuse)
        except NonFiniteError as err:
            raise NonFiniteError(f"evaluate: {err}") from None

    def _final(self, models: tuple[str, ...], reuse: bool) -> dict:
        """:meth:`final` without the ``evaluate:`` prefix on non-finite errors."""
        e, device = self.preset.eval, self.acc.device
        start, per_model = time.perf_counter(), 0.0
        metrics: dict = self.run.read_metrics()
        models = self.sampler.models(models)
        if self.main:
            # the training stages' numbers do not describe the evaluation
            self.run.write_status(
                state="running", stage="evaluate", progress=0.0, kimg=None, kimg_total=None, eta_s=None, it_per_s=None, images_per_s=None
            )
            save_grid(self.evaluator.shown_measurements(range(min(e.grid_n, len(self.dataset)))), self.run.grid_path(MEASUREMENTS_GRID))
            clean_u8, _ = clean_reference(self.preset, e.grid_n)
            save_grid(to_float(clean_u8), self.run.grid_path(CLEAN_GRID))
        teacher = final_network(self.run, self.preset, TEACHER_FULL, device)
        generator = (
            final_network(self.run, self.preset, GENERATOR, device) if checkpoint_exists(self.run.checkpoint(GENERATOR_FINAL)) else None
        )
        for i, model in enumerate(models):
            if self.stops.agreed():  # evaluation restarts from scratch on resume; nothing to checkpoint
                raise StopRequested()
            net = generator if model == GENERATOR else teacher
            if net is None:
                continue
            model_start = time.perf_counter()
            seeds = range(e.final_fid_n)
            ident, earlier = self._identity(model, net, seeds) if self.main and seeds.stop >= 2 else (None, None)
            earlier = earlier if reuse else None
            grid_file = self._earlier_grid(earlier)
            # a reused figure needs no samples (its grid is the earlier one: same weights and seeds), unless
            # the generator's proximal FID needs them
            skip = [grid_file is not None and not self._proximal(model)]
            if self.acc.num_processes > 1:
                skip = broadcast_object_list(skip)
            samples = grid = None
            if not skip[0]:
                samples = self._samples(model, net, seeds)
                grid = samples if e.final_fid_n >= e.grid_n else self._samples(model, net, range(e.grid_n))
            with self.stops.agree():  # main-process work; the others wait
                if self.main:
                    metrics[model] = self._final_record(model, samples, seeds, ident, earlier)
                    if grid is None:
                        atomic_write_bytes(self.run.grid_path(model), grid_file.read_bytes())
                    else:
                        save_grid(grid.images[: e.grid_n], self.run.grid_path(model))
                    self.run.write_status(progress=(i + 1) / (len(models) + 1))
                    self._timed("evaluate", FINAL, model_start, model=model, reused_from=metrics[model].get("reused_from"))
            per_model += time.perf_counter() - model_start
        if self.main:
            for name, (rec, images) in self.evaluator.restoration_baseline(teacher).items():
                metrics[name] = rec
                save_grid(images[: e.grid_n], self.run.grid_path(name))  # tile i restores tile i of the clean grid
                log.info("%s: FID %s, %s (n=%d)", name, _fmt(rec.get("fid")), rec["note"], rec["n"])
            race = self._race_summary(metrics)
            if race:
                metrics[RACE] = race
            den = self.evaluator.denoiser_psnr(teacher)
            if den:
                metrics["teacher-denoiser"] = den
                log.info(
                    "teacher denoiser D(y; σ_c): PSNR %.2f dB, SSIM %.3f (noisy input %.2f dB), n=%d",
                    den["psnr"],
                    den["ssim"],
                    den["psnr_noisy_input"],
                    den["n"],
                )
            self.run.write_metrics(metrics)
            self.run.append_event("evaluate", "metrics", metrics=metrics)
            self._timed("evaluate", FINAL, start + per_model)
        self.acc.wait_for_everyone()
        return metrics

    def _race_summary(self, metrics: dict) -> dict | None:
        """The generator against the teacher sampler (metrics.json key :data:`~rsd_engine.io.runs.RACE`):
        ``live`` (the baseline's n and FID, and the first live evaluation below it, or ``None``) and
        ``final`` (both final FIDs at the same n, their ratio, and whether the generator's is lower).
        ``None`` when neither comparison exists."""
        events = self.run.read_events()
        model = self.sampler.teacher_model
        out: dict = {"teacher_model": model}
        base = teacher_baseline(events)
        if base is not None:
            crossing = first_crossing(events)
            keep = ("kimg", "minutes", "fid")
            out["live"] = {
                "n": base["n"],
                "teacher_fid": base["fid"],
                "first_below": None if crossing is None else {k: crossing.get(k) for k in keep},
            }
        t, g = metrics.get(model), metrics.get(GENERATOR)
        if t and g and t.get("fid") is not None and g.get("fid") is not None and t.get("n") == g.get("n"):
            out["final"] = {
                "n": g["n"],
                "teacher_fid": t["fid"],
                "generator_fid": g["fid"],
                "ratio": g["fid"] / t["fid"],
                "generator_better": g["fid"] < t["fid"],
            }
        return out if len(out) > 1 else None

    def _proximal(self, model: str) -> bool:
        """Whether the final record of ``model`` has a proximal FID: the generator's, unless ``eval.proximal_fid`` is off."""
        return model == GENERATOR and self.preset.eval.proximal_fid

    def _earlier_grid(self, earlier: dict | None) -> Path | None:
        """The grid file of an earlier evaluation when it shows this evaluation's grid (the same number of
        images, still on disk), else ``None``."""
        if not earlier or not earlier.get("grid") or earlier.get("grid_n") != self.preset.eval.grid_n:
            return None
        path = self.run.path / earlier["grid"]
        return path if path.is_file() else None

    def _final_record(self, model: str, samples: Samples | None, seeds: range, ident: dict | None, earlier: dict | None) -> dict:
        """The metrics.json record of one model (FID disabled below 2 samples; taken from ``earlier``, an
        evaluation with the same identity ``ident``, when given), logged."""
        if seeds.stop >= 2:
            rec = self.evaluator.fid_record(model, samples, seeds, proximal=self._proximal(model), ident=ident, earlier=earlier)
        else:
            rec = {
                "model": model,
                "n": seeds.stop,
                "nfe": samples.nfe,
                "images_per_s": round(samples.images_per_s, 3),
                "weights": WEIGHTS[model],
                "fid": None,
                "note": "final FID disabled (eval.final_fid_n < 2)",
            }
        log.info(
            "%s: FID %s KID %s (n=%d, NFE %s, %s img/s)%s",
            model,
            _fmt(rec.get("fid")),
            _fmt(rec.get("kid")),
            rec["n"],
            rec["nfe"],
            _fmt(rec["images_per_s"]),
            _reuse_note(rec),
        )
        return rec


#: Fields of a FID record that its ``fid`` event carries (besides kimg, model, grid and training seconds).
_FID_EVENT_FIELDS = (
    "fid",
    "kid",
    "kid_std",
    "n",
    "seeds",
    "weights",
    "reference",
    "nfe",
    "images_per_s",
    "eval_key",
    "weights_sha256",
    "reused_from",
)


def _reuse_note(rec: dict) -> str:
    """`` (reused from …)`` for a record that took an earlier evaluation's FID, else ``""``."""
    src = rec.get("reused_from")
    if not src:
        return ""
    kimg = src.get("kimg")
    where = src.get("file") or f"the {src.get('stage')} stage's {src.get('kind')}" + (
        f" at {kimg:g} kimg" if isinstance(kimg, (int, float)) else ""
    )
    return f" (same weights, n, seeds and reference: reused from {where})"


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"
