"""diffusers pipelines of an exported run (``rsd-engine export``, :mod:`rsd_engine.export`).

An exported folder holds the bare ``UNet2DModel`` under ``unet/`` (loadable by diffusers alone) and,
in model_index.json, the pipeline class and its settings: the EDM preconditioning (σ_d, σ_min,
σ_max, mask channels k) and the sampler's own (σ_init, or Heun steps, ρ and the truncation σ). At
call time the pipeline puts the engine's preconditioning around the UNet
(:class:`rsd_engine.models.networks.UNetDenoiser`, EDM Table 1 with the mask rule of docs/method.md §2.1)
and runs the engine's sampler, so the images are those ``rsd-engine sample`` draws:

- :class:`RSDOneStepPipeline`: the generator, x = G(σ_init·z; σ_init) (docs/method.md §3.1);
- :class:`RSDHeunPipeline`: the teacher, EDM Heun (Algorithm 1), full or truncated (docs/method.md §4.1).

Latents come from ``seeds`` (one ``torch.Generator`` per seed, :func:`rsd_engine.evaluate.generate.latents`,
the engine's rule), a ``generator`` (one, or one per image), or ``latents`` given directly. With the
same seeds, weights and batch split (the engine draws ``eval.batch_size`` images per network call)
the images equal the engine's bit for bit; other batch sizes can differ in the last float bits.

Images come back as ``output_type`` ``"pil"`` (PIL images made with the engine's quantiser, the
same pixels as its PNG grids), ``"np"`` (float32 (B, H, W, C) in [0, 1], those pixels / 255) or
``"pt"`` (the network output itself: float32 (B, C, H, W) on the engine's [-1, 1] scale, neither
clipped nor quantised).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from .evaluate.generate import latents as seed_latents
from .evaluate.grids import grid_image
from .evaluate.metrics import quantize
from .evaluate.sampling import heun_sample, one_step_generate
from .models.networks import UNetDenoiser
from .operators import PixelMask

__all__ = ["RSDOneStepPipeline", "RSDHeunPipeline", "OUTPUT_TYPES"]

#: The accepted ``output_type`` values.
OUTPUT_TYPES = ("pil", "np", "pt")


class _EDMPipeline(DiffusionPipeline):
    """What both pipelines share: the UNet and the EDM preconditioning in the config, the latents,
    the mask check and the output conversion. Subclasses define ``__init__`` (diffusers reads the
    pipeline's settings from its signature) and ``__call__``."""

    def _register(self, unet: UNet2DModel, **settings) -> None:
        """Register ``unet`` and the settings (written to model_index.json by ``save_pretrained``).

        Raises:
            ValueError: the UNet's channels do not fit ``settings["cond_channels"]``.
        """
        self.register_modules(unet=unet)
        self.register_to_config(**settings)
        self.denoiser()

    def denoiser(self) -> UNetDenoiser:
        """D(x; σ): the engine's EDM preconditioning around this pipeline's UNet (shares its weights)."""
        c = self.config
        return UNetDenoiser(self.unet, c.sigma_data, c.sigma_min, c.sigma_max, c.cond_channels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return self.unet.config.out_channels, h, w

    def _latents(self, batch_size: int | None, generator, latents: torch.Tensor | None, seeds, device) -> torch.Tensor:
        """Standard-normal latents (B, C, H, W): from ``latents`` (as given), ``seeds`` (the engine's
        one-CPU-generator-per-seed rule) or ``generator`` (drawn on its device, else on ``device``);
        B from whichever is given.

        Raises:
            ValueError: more than one source given, a batch size that contradicts them, or latents
                of the wrong shape.
        """
        given = [name for name, v in (("latents", latents), ("seeds", seeds), ("generator", generator)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"give one of latents, seeds and generator, not {' and '.join(given)}")
        shape = self.image_shape
        if latents is not None:
            if latents.ndim != 4 or tuple(latents.shape[1:]) != shape:
                raise ValueError(f"latents of shape {tuple(latents.shape)}; expected (B, {', '.join(map(str, shape))})")
            z = latents
        elif seeds is not None:
            z = seed_latents(list(seeds), shape)
        else:
            n = 1 if batch_size is None else int(batch_size)
            if isinstance(generator, list) and batch_size is None:
                n = len(generator)
            if isinstance(generator, list) and len(generator) != n:
                raise ValueError(f"{len(generator)} generators for batch_size {n}: give one per image or a single one")
            if n < 1:
                raise ValueError(f"batch_size {n}: must be ≥ 1")
            z = randn_tensor((n, *shape), generator=generator, device=torch.device(device), dtype=torch.float32)
        if batch_size is not None and int(batch_size) != z.shape[0]:
            raise ValueError(
                f"batch_size {batch_size} but {z.shape[0]} {given[0] if given else 'latents'}; leave batch_size out or make them agree"
            )
        if z.shape[0] == 0:
            raise ValueError("no images asked for: give at least one seed or latent")
        return z

    def _mask(self, mask: torch.Tensor | None, batch: int, device) -> PixelMask | None:
        """The networks' condition of a mask (float32 on ``device``; the sampler shows them m ⊙ x and m),
        checked against the network; ``None`` for a network without mask channels.

        Raises:
            ValueError: a mask network called without a mask, a mask for a network without mask
                channels, or a mask of the wrong shape.
        """
        k = self.config.cond_channels
        _, h, w = self.image_shape
        if k == 0:
            if mask is not None:
                raise ValueError("this network takes no mask channels; call it without mask")
            return None
        if mask is None:
            raise ValueError(
                f"this network was trained on masked measurements and takes a mask: pass mask=(B, {k}, {h}, {w}) "
                "with 1 where the network sees the pixel (see the model card)"
            )
        if tuple(mask.shape) != (batch, k, h, w):
            raise ValueError(f"mask of shape {tuple(mask.shape)}; expected ({batch}, {k}, {h}, {w})")
        return PixelMask(mask.to(device, torch.float32))

    @staticmethod
    def _output(images: torch.Tensor, output_type: str, return_dict: bool):
        """Convert (B, C, H, W) float32 images on the [-1, 1] scale (see the module docstring).

        Raises:
            ValueError: an unknown ``output_type``; ``"pil"`` for images of other than 1, 2 or 3
                channels (two channels are shown as magnitude, as in the engine's grids).
        """
        if output_type == "pt":
            out = images
        elif output_type == "np":
            out = quantize(images).permute(0, 2, 3, 1).cpu().numpy().astype(np.float32) / 255.0
        elif output_type == "pil":
            out = [grid_image(images[i : i + 1], columns=1, pad=0) for i in range(images.shape[0])]
        else:
            raise ValueError(f"output_type {output_type!r}; allowed: {', '.join(OUTPUT_TYPES)}")
        return ImagePipelineOutput(images=out) if return_dict else (out,)


class RSDOneStepPipeline(_EDMPipeline):
    """The one-step RSD generator as a diffusers pipeline: x = G(σ_init·z; σ_init), z ~ N(0, I)
    (docs/method.md §3.1; SiD), with G the EDM-preconditioned UNet (EDM Table 1). One network
    evaluation per image.

    Load an export with ``RSDOneStepPipeline.from_pretrained(folder)``; ``.to("cuda")`` as any
    pipeline.

    Args:
        unet: the generator's bare UNet (C + k input channels, C output channels).
        sigma_init: σ_init, the noise level the generator was distilled at (> 0, [-1, 1] scale).
        sigma_data, sigma_min, sigma_max: the EDM preconditioning's σ_d and the teacher's σ range.
        cond_channels: mask channels k (0, or 1 for the inpainting operators).

    Raises:
        ValueError: the UNet's channels do not fit ``cond_channels``.
    """

    def __init__(self, unet: UNet2DModel, sigma_init: float = 2.5, sigma_data: float = 0.5, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, cond_channels: int = 0):  # fmt: skip
        super().__init__()
        self._register(unet, sigma_init=float(sigma_init), sigma_data=float(sigma_data), sigma_min=float(sigma_min),
                       sigma_max=float(sigma_max), cond_channels=int(cond_channels))  # fmt: skip

    @torch.no_grad()
    def __call__(self, batch_size: int | None = None, generator: torch.Generator | list[torch.Generator] | None = None,
                 output_type: str = "pil", latents: torch.Tensor | None = None, mask: torch.Tensor | None = None, seeds=None,
                 return_dict: bool = True):  # fmt: skip
        """Draw images in one network evaluation.

        Args:
            batch_size: images to draw (default 1, or as many as ``seeds``, ``latents`` or a list of
                generators hold).
            generator: a ``torch.Generator`` for all latents, or one per image.
            output_type: ``"pil"`` | ``"np"`` | ``"pt"`` (module docstring).
            latents: z, standard normal (B, C, H, W), instead of drawing it.
            mask: for networks with mask channels (inpainting runs), required: (B, k, H, W) 0/1 float,
                1 where the generator sees its input. Draw it like the training masks, e.g. as the
                engine does per seed (the model card shows how); the generator fills every pixel.
            seeds: ints; image i starts from the latent of seed ``seeds[i]``, as in ``rsd-engine sample``.
            return_dict: ``False`` returns the tuple ``(images,)``.

        Returns:
            ``ImagePipelineOutput`` whose ``images`` are B images of the generator (≈[-1, 1] before
            conversion).

        Raises:
            ValueError: conflicting latent sources, shapes that do not fit, a missing or extra mask,
                an unknown output type.
        """
        device = self._execution_device
        z = self._latents(batch_size, generator, latents, seeds, device)
        cond = self._mask(mask, z.shape[0], device)
        images = one_step_generate(self.denoiser(), z.to(device, torch.float32), self.config.sigma_init, cond)
        return self._output(images.float(), output_type, return_dict)


class RSDHeunPipeline(_EDMPipeline):
    """The RSD teacher as a diffusers pipeline: EDM's deterministic Heun sampler (Algorithm 1, the σ
    steps of EDM eq. 5) from σ_max to 0 (teacher-full), or stopped at the truncation σ and returning
    the denoiser output there (teacher-truncated, docs/method.md §4.1). NFE 2N − 1 for N steps run
    to 0. Masked networks sample with one fixed mask per image (m ⊙ x at every step).

    Args:
        unet: the teacher's bare UNet (C + k input channels, C output channels).
        sigma_data, sigma_min, sigma_max: the EDM preconditioning's σ_d and the σ range of the schedule.
        cond_channels: mask channels k.
        num_inference_steps: N Heun steps (≥ 2; the run's ``eval.teacher_steps``).
        rho: ρ of the schedule (EDM: 7).
        stop_sigma: the truncation σ (the run's σ_c or ``eval.stop_sigma``; 0: not truncated).

    Raises:
        ValueError: the UNet's channels do not fit ``cond_channels``.
    """

    def __init__(self, unet: UNet2DModel, sigma_data: float = 0.5, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 cond_channels: int = 0, num_inference_steps: int = 18, rho: float = 7.0, stop_sigma: float = 0.0):  # fmt: skip
        super().__init__()
        self._register(unet, sigma_data=float(sigma_data), sigma_min=float(sigma_min), sigma_max=float(sigma_max),
                       cond_channels=int(cond_channels), num_inference_steps=int(num_inference_steps), rho=float(rho),
                       stop_sigma=float(stop_sigma))  # fmt: skip

    @torch.no_grad()
    def __call__(self, batch_size: int | None = None, generator: torch.Generator | list[torch.Generator] | None = None,
                 output_type: str = "pil", latents: torch.Tensor | None = None, mask: torch.Tensor | None = None, seeds=None,
                 num_inference_steps: int | None = None, stop_sigma: float | None = None,
                 return_dict: bool = True):  # fmt: skip
        """Draw images with the Heun sampler.

        Args:
            batch_size, generator, output_type, latents, seeds, return_dict: as
                :meth:`RSDOneStepPipeline.__call__`; the start is latents · σ_max.
            mask: for masked networks, required: (B, k, H, W) 0/1, fixed for the whole trajectory.
            num_inference_steps: N ≥ 2 (default: the exported value).
            stop_sigma: truncation σ; 0 runs to σ = 0 (teacher-full, whose samples keep the data
                noise); default: the exported value (teacher-truncated when it is > 0).

        Returns:
            ``ImagePipelineOutput`` of B images.

        Raises:
            ValueError: as :meth:`RSDOneStepPipeline.__call__`, or fewer than 2 steps.
        """
        steps = self.config.num_inference_steps if num_inference_steps is None else int(num_inference_steps)
        if steps < 2:
            raise ValueError(f"num_inference_steps {steps}: the Heun sampler needs ≥ 2")
        stop = self.config.stop_sigma if stop_sigma is None else float(stop_sigma)
        device = self._execution_device
        z = self._latents(batch_size, generator, latents, seeds, device)
        cond = self._mask(mask, z.shape[0], device)
        res = heun_sample(self.denoiser(), z.to(device, torch.float32), steps, self.config.rho, stop or None, cond)
        return self._output(res.images, output_type, return_dict)
