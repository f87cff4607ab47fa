"""EDM preconditioning (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", Table 1 and eq. 7) and the engine's denoiser around a diffusers ``UNet2DModel``.

:class:`EDMDenoiser` is the only place that knows c_skip, c_out, c_in, c_noise and the loss weight;
backbones (the UNet here, the theory study's MLP) subclass it.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from torch import nn

__all__ = ["EDMDenoiser", "EDMPrecond", "build_network", "network_config", "count_parameters", "unwrap"]


def network_config(preset, cond_channels: int = 0, cond_kind: str = "pixel_mask") -> dict:
    """The constructor arguments of :class:`EDMPrecond` for a preset (stored with every checkpoint).

    Args:
        preset: a validated :class:`rsd_engine.config.Preset`.
        cond_channels: extra conditioning channels (masks) concatenated to the network input.
        cond_kind: what they mean (:class:`EDMDenoiser`); stored only when it is not the default
            ``"pixel_mask"``, so configurations stored before it existed compare equal.
    """
    n = preset.network
    extra = {} if cond_kind == "pixel_mask" else {"cond_kind": cond_kind}
    return {
        "resolution": preset.data.resolution,
        "channels": preset.data.channels,
        "cond_channels": int(cond_channels),
        "block_out_channels": list(n.block_out_channels),
        "layers_per_block": n.layers_per_block,
        "attention_levels": list(n.attention_levels),
        "norm_groups": n.norm_groups,
        "dropout": n.dropout,
        "sigma_data": n.sigma_data,
        "sigma_min": n.sigma_min,
        "sigma_max": n.sigma_max,
        **extra,
    }


class EDMDenoiser(nn.Module):
    """EDM's preconditioning around a backbone F: D(x; σ) = c_skip(σ)·x + c_out(σ)·F([c_in(σ)·x, cond]; c_noise(σ)).

    c_skip = σ_d²/(σ²+σ_d²), c_out = σ·σ_d/√(σ²+σ_d²), c_in = 1/√(σ²+σ_d²), c_noise = ¼·ln σ
    (EDM Table 1). Subclasses give the backbone as :meth:`raw`; this class is the only place that
    knows the four coefficients and the loss weight λ = 1/c_out². Mask channels ``cond`` are
    concatenated to c_in·x unscaled (docs/method.md §2.1).

    With a mask m = ``cond`` (1 = the network sees the pixel), the skip and output scales are taken per
    pixel: EDM's on seen pixels, and c_skip = 0, c_out = σ_d on unseen ones, so that
    D = m·(c_skip·x + c_out·F) + (1 − m)·σ_d·F. On an unseen pixel the input carries nothing to skip
    and the target x has spread σ_d at every σ, which is EDM's own rule (c_skip, c_out) = (0, σ_d)
    for an input without signal. With EDM's scales there, c_out → 0 as σ → 0 would force
    D → 0 on unseen pixels: the Ambient loss on the A-but-not-Ã pixels would ask F for x/σ, and the
    fixed-mask teacher sampler would end with the unseen pixels at 0. Our choice (docs/method.md §2.1
    and §6: the paper's Ambient Diffusion teachers are released checkpoints whose parameterisation is
    not published).

    A k-space mask (``cond_kind="kspace_mask"``, multi-coil MRI, docs/method.md §8) is not a pixel mask:
    the input is the zero-filled projection P_Ã(x + σn), in which no pixel carries its clean value, so
    every pixel is treated as unseen ((c_skip, c_out) = (0, σ_d), λ = 1/σ_d²) and the mask only enters
    as input channels. With EDM's skip the denoiser would return the aliased input as σ → 0.

    Args:
        sigma_data: σ_d (0.5 for images in [-1, 1]).
        sigma_min, sigma_max: the noise range the network was trained for (read by the samplers).
        cond_channels: extra mask channels k the backbone takes beside the image (0 for none).
        cond_kind: ``"pixel_mask"`` (1 = the pixel is seen) or ``"kspace_mask"``.

    Raises:
        ValueError: an unknown ``cond_kind``.
    """

    COND_KINDS = ("pixel_mask", "kspace_mask")

    def __init__(self, sigma_data: float = 0.5, sigma_min: float = 0.002, sigma_max: float = 80.0, cond_channels: int = 0,
                 cond_kind: str = "pixel_mask"):
        super().__init__()
        if cond_kind not in self.COND_KINDS:
            raise ValueError(f"cond_kind {cond_kind!r}: allowed {', '.join(self.COND_KINDS)}")
        self.sigma_data = float(sigma_data)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.cond_channels = int(cond_channels)
        self.cond_kind = cond_kind

    def _seen(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """The 0/1 map of pixels whose input carries their value: the mask itself, or zeros for a k-space mask."""
        if mask is None or self.cond_kind == "pixel_mask":
            return mask
        return torch.zeros_like(mask[:, :1])

    def coefficients(
        self, sigma: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in, c_noise) for σ of shape (B,) (EDM Table 1).

        c_skip and c_out have shape (B, 1, 1, 1), or with a 0/1 ``mask`` (B, k, H, W) the mask's
        shape, with (0, σ_d) where the mask is 0 (see the class docstring); c_in is (B, 1, 1, 1) and
        c_noise (B,).
        """
        sd = self.sigma_data
        s = sigma.reshape(-1, 1, 1, 1)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        mask = self._seen(mask)
        if mask is not None:
            m = mask.to(c_out.dtype)
            c_skip, c_out = m * c_skip, m * c_out + (1 - m) * sd
        c_in = 1 / (sd**2 + s**2).sqrt()
        c_noise = sigma.reshape(-1).log() / 4
        return c_skip, c_out, c_in, c_noise

    def loss_weight(self, sigma: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """λ = 1/c_out² of :meth:`coefficients`, the loss weight that gives every σ a unit-variance target
        for F (EDM Table 1, λ(σ) = (σ² + σ_d²)/(σ·σ_d)²; docs/method.md §2.1).

        Written in closed form rather than as 1/c_out² so that it is bit-identical to EDM's
        expression. With a 0/1 ``mask`` the unseen pixels (mask 0) get 1/σ_d², as their c_out = σ_d:
        EDM's λ(σ) ≈ 1/σ² there would scale an error of size σ_d by 1/σ² and let the smallest σ draws
        dominate the Ambient teacher's gradient (docs/method.md §2.3).

        Args:
            sigma: σ > 0, shape (B,) or (B, 1, 1, 1).
            mask: optional 0/1 mask (B, k, H, W).

        Returns:
            (B, 1, 1, 1), or the mask's shape when a mask is given.
        """
        sd = self.sigma_data
        s = sigma.reshape(-1, 1, 1, 1)
        weight = (s**2 + sd**2) / (s * sd) ** 2
        mask = self._seen(mask)
        if mask is None:
            return weight
        m = mask.to(weight.dtype)
        return m * weight + (1 - m) / sd**2

    def raw(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """F, the backbone, on an already scaled input (B, C+k, H, W) at c_noise (B,); returns (B, C, H, W).

        Raises:
            NotImplementedError: in this base class.
        """
        raise NotImplementedError(f"{type(self).__name__} must define raw(x_in, c_noise)")

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise: E[clean | x] estimate.

        Args:
            x: noisy images (B, C, H, W), clean signal in [-1, 1] plus noise of std σ.
            sigma: noise level, scalar or shape (B,), σ > 0 on the [-1, 1] scale.
            cond: optional 0/1 mask channels (B, k, H, W), k = 1 or C, passed unscaled; where 0 the
                pixel counts as unseen (c_skip = 0, c_out = σ_d). Callers pass x already masked.

        Returns:
            D(x; σ), shape (B, C, H, W), the clean-signal prediction, float32.

        Raises:
            ValueError: when ``cond`` is missing or extra for this network's ``cond_channels``.
        """
        x32 = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        if (cond is None) != (self.cond_channels == 0):
            raise ValueError(f"network expects {self.cond_channels} conditioning channels, got {'none' if cond is None else cond.shape[1]}")
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma, cond)
        x_in = c_in * x32
        if cond is not None:
            x_in = torch.cat([x_in, cond.to(x_in.dtype)], dim=1)
        f = self.raw(x_in, c_noise).to(torch.float32)
        return c_skip * x32 + c_out * f


class EDMPrecond(EDMDenoiser):
    """The engine's denoiser: :class:`EDMDenoiser` with a diffusers ``UNet2DModel`` as F, whose
    timestep input is c_noise.

    Args:
        resolution: image side H = W.
        channels: image channels C.
        cond_channels: extra input channels k (0 for none).
        block_out_channels, layers_per_block, attention_levels, norm_groups, dropout: UNet sizes.
        sigma_data: σ_d (0.5 for images in [-1, 1]).
        sigma_min, sigma_max: the noise range the teacher was trained for (used by samplers).
        cond_kind: what the conditioning channels mean (:class:`EDMDenoiser`).
    """

    def __init__(
        self,
        resolution: int,
        channels: int,
        cond_channels: int = 0,
        block_out_channels=(32, 64, 64),
        layers_per_block: int = 1,
        attention_levels=(),
        norm_groups: int = 8,
        dropout: float = 0.0,
        sigma_data: float = 0.5,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        cond_kind: str = "pixel_mask",
    ):
        super().__init__(sigma_data, sigma_min, sigma_max, cond_channels, cond_kind)
        self.resolution = resolution
        self.channels = channels
        levels = len(block_out_channels)
        down = ["AttnDownBlock2D" if i in attention_levels else "DownBlock2D" for i in range(levels)]
        up = ["AttnUpBlock2D" if i in attention_levels else "UpBlock2D" for i in reversed(range(levels))]
        self.unet = UNet2DModel(
            sample_size=resolution,
            in_channels=channels + cond_channels,
            out_channels=channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            norm_num_groups=norm_groups,
            dropout=dropout,
            attention_head_dim=min(8, block_out_channels[0]),
            time_embedding_type="positional",
            flip_sin_to_cos=True,
            freq_shift=0,
        )

    def raw(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """F: the bare UNet on an already scaled input (B, C+k, H, W) at c_noise (B,); returns (B, C, H, W)."""
        return self.unet(x_in, c_noise).sample


def build_network(config: dict) -> EDMPrecond:
    """Construct an :class:`EDMPrecond` from :func:`network_config` output (e.g. read from a checkpoint)."""
    return EDMPrecond(**config)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)



def unwrap(net: nn.Module) -> nn.Module:
    """The bare module inside a DistributedDataParallel (or similar ``.module``) wrapper, else ``net``."""
    return getattr(net, "module", net)
