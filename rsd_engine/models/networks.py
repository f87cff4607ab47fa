"""EDM preconditioning (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", Table 1 and eq. 7) and the engine's denoisers around a diffusers ``UNet2DModel``
or EDM's DDPM++ / NCSN++ backbone (:mod:`rsd_engine.models.songunet`).

:class:`EDMDenoiser` is the only place that knows c_skip, c_out, c_in, c_noise and the loss weight;
backbones subclass it: :class:`UNetDenoiser` (a given UNet, as the exported pipelines load it),
:class:`EDMPrecond` (``network.architecture = "unet2d"``) and :class:`SongUNetPrecond`
(``"ddpmpp"`` / ``"ncsnpp"``), both diffusers models with ``save_pretrained`` / ``from_pretrained``, and
the theory study's MLP. :func:`build_network` and :func:`network_from_config` pick the class.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers import ConfigMixin, ModelMixin, UNet2DModel
from diffusers.configuration_utils import register_to_config
from torch import nn

from .songunet import SongUNet

__all__ = [
    "EDMDenoiser",
    "UNetDenoiser",
    "EDMPrecond",
    "SongUNetPrecond",
    "ARCHITECTURES",
    "build_network",
    "network_arguments",
    "network_from_config",
    "network_differences",
    "count_parameters",
    "unwrap",
    "frozen",
]


class EDMDenoiser(nn.Module):
    """EDM's preconditioning around a backbone F: D(x; σ) = c_skip(σ)·x + c_out(σ)·F([c_in(σ)·x, cond]; c_noise(σ)).

    c_skip = σ_d²/(σ²+σ_d²), c_out = σ·σ_d/√(σ²+σ_d²), c_in = 1/√(σ²+σ_d²), c_noise = ¼·ln σ
    (EDM Table 1). Subclasses give the backbone as :meth:`backbone`; this class is the only place that
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

    A k-space mask (``cond_kind="kspace_mask"``, multi-coil MRI, docs/method.md §9) is not a pixel mask:
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

    def __init__(
        self,
        sigma_data: float = 0.5,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        cond_channels: int = 0,
        cond_kind: str = "pixel_mask",
    ):
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

    def backbone(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """F, the backbone, on an already scaled input (B, C+k, H, W) at c_noise (B,); returns (B, C, H, W).

        Raises:
            NotImplementedError: in this base class.
        """
        raise NotImplementedError(f"{type(self).__name__} must define backbone(x_in, c_noise)")

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
        f = self.backbone(x_in, c_noise).to(torch.float32)
        return c_skip * x32 + c_out * f


class UNetDenoiser(EDMDenoiser):
    """:class:`EDMDenoiser` around a given diffusers ``UNet2DModel`` F, whose timestep input is c_noise
    (EDM eq. 7 with F = the UNet; docs/method.md §2.1).

    The exported pipelines (:mod:`rsd_engine.pipelines`) wrap the bare UNet they load with it;
    :class:`EDMPrecond` is the same denoiser with its UNet built from sizes.

    Args:
        unet: F, taking C + k input channels (image and mask) and returning C channels.
        sigma_data, sigma_min, sigma_max, cond_channels, cond_kind: as in :class:`EDMDenoiser`.

    Raises:
        ValueError: the UNet's input channels are not its output channels plus ``cond_channels``; an
            unknown ``cond_kind``.
    """

    def __init__(self, unet: UNet2DModel, sigma_data: float = 0.5, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 cond_channels: int = 0, cond_kind: str = "pixel_mask"):  # fmt: skip
        c = unet.config
        if c.in_channels != c.out_channels + int(cond_channels):
            raise ValueError(
                f"the UNet takes {c.in_channels} input channels and returns {c.out_channels}; "
                f"with {cond_channels} mask channels it should take {c.out_channels + int(cond_channels)}"
            )
        super().__init__(sigma_data, sigma_min, sigma_max, cond_channels, cond_kind)
        self.unet = unet

    def backbone(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """F: the bare UNet on an already scaled input (B, C+k, H, W) at c_noise (B,); returns (B, C, H, W)."""
        return self.unet(x_in, c_noise).sample


class _Configured:
    """What the engine's diffusers denoisers share: comparing their config with wanted arguments."""

    def differences(self, arguments: dict) -> dict:
        """``{name: (this network's value, the wanted value)}`` for every constructor argument in
        ``arguments`` that differs from this network's config (lists and tuples compare equal);
        ``{}`` when the network is the one ``arguments`` describe."""

        def plain(v):
            return list(v) if isinstance(v, (list, tuple)) else v

        return {k: (plain(self.config.get(k)), plain(v)) for k, v in arguments.items() if plain(self.config.get(k)) != plain(v)}


class EDMPrecond(_Configured, UNetDenoiser, ModelMixin, ConfigMixin):
    """The engine's denoiser: :class:`UNetDenoiser` with its ``UNet2DModel`` built from sizes, as a
    diffusers model.

    Its constructor arguments are its diffusers config (``register_to_config``), the one record of the
    architecture and the preconditioning: ``save_pretrained(folder)`` writes them to config.json beside
    the weights and ``EDMPrecond.from_pretrained(folder)`` rebuilds the same network; checkpoints
    store the same config (:mod:`rsd_engine.train.checkpoints`). The weights are under ``unet.*``.

    Args:
        resolution: image side H = W in pixels.
        channels: image channels C.
        cond_channels: extra mask input channels k (0 for none).
        block_out_channels, layers_per_block, attention_levels, norm_groups, dropout: UNet sizes
            (``[network]`` of a preset; attention at the listed level indices, 0 = full resolution).
        sigma_data: σ_d (0.5 for images in [-1, 1]).
        sigma_min, sigma_max: the noise range the teacher was trained for (used by samplers).
        cond_kind: what the mask channels mean (:class:`EDMDenoiser`): ``"pixel_mask"``, or
            ``"kspace_mask"`` for multi-coil MRI (C = 2 channels re, im; k = 1 line-mask channel).

    Raises:
        ValueError: an unknown ``cond_kind``.
    """

    @register_to_config
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
        levels = len(block_out_channels)
        down = ["AttnDownBlock2D" if i in attention_levels else "DownBlock2D" for i in range(levels)]
        up = ["AttnUpBlock2D" if i in attention_levels else "UpBlock2D" for i in reversed(range(levels))]
        unet = UNet2DModel(
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
        super().__init__(unet, sigma_data, sigma_min, sigma_max, cond_channels, cond_kind)
        self.resolution = resolution
        self.channels = channels

    @staticmethod
    def preset_arguments(preset, cond_channels: int = 0, cond_kind: str = "pixel_mask") -> dict:
        """The constructor arguments (the diffusers config) of the network a preset trains.

        Args:
            preset: a validated :class:`rsd_engine.io.config.Preset` (``[data]`` shape, ``[network]``).
            cond_channels: mask channels of the operator (``Measurement.op.cond_channels``).
            cond_kind: what they mean (``Measurement.op.cond_kind``).
        """
        n = preset.network
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
            "cond_kind": cond_kind,
        }

    @classmethod
    def from_preset(cls, preset, cond_channels: int = 0, cond_kind: str = "pixel_mask") -> "EDMPrecond":
        """A freshly initialised network for a preset (:meth:`preset_arguments`); torch's global RNG draws the weights."""
        return cls(**cls.preset_arguments(preset, cond_channels, cond_kind))


class SongUNetPrecond(_Configured, EDMDenoiser, ModelMixin, ConfigMixin):
    """The engine's denoiser around EDM's DDPM++ / NCSN++ backbone (:class:`rsd_engine.models.songunet.SongUNet`,
    EDM appendix F.2, Table 7) under the same preconditioning (:class:`EDMDenoiser`), as a diffusers model.

    The backbone is ``self.model``, so the weights are named as in EDM's ``EDMPrecond``
    (``model.enc.32x32_conv.weight``, ``model.map_layer0.weight`` …) and EDM-format weights load one to
    one (:func:`rsd_engine.models.edm_import.load_edm_teacher`). The constructor arguments are the diffusers
    config (``save_pretrained`` / ``from_pretrained``, checkpoints).

    Args:
        resolution: image side H = W in pixels (divisible by 2^(len(channel_mult) − 1)).
        channels: image channels C.
        cond_channels: extra mask input channels k (0 for none).
        model_channels, channel_mult, channel_mult_emb, num_blocks, attn_resolutions, dropout,
        embedding_type, channel_mult_noise, encoder_type, resample_filter, augment_dim: the backbone's
            sizes (:class:`~rsd_engine.models.songunet.SongUNet`; EDM's CIFAR-10 DDPM++: 128, [2, 2, 2], 4, 4, [16], 0.13).
        sigma_data, sigma_min, sigma_max, cond_kind: as in :class:`EDMDenoiser`.

    Raises:
        ValueError: sizes the backbone cannot take, an unknown ``cond_kind``.
    """

    @register_to_config
    def __init__(self, resolution: int, channels: int, cond_channels: int = 0, model_channels: int = 128, channel_mult=(2, 2, 2),
                 channel_mult_emb: int = 4, num_blocks: int = 4, attn_resolutions=(16,), dropout: float = 0.1,
                 embedding_type: str = "positional", channel_mult_noise: int = 1, encoder_type: str = "standard",
                 resample_filter=(1, 1), augment_dim: int = 0, sigma_data: float = 0.5, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, cond_kind: str = "pixel_mask"):  # fmt: skip
        super().__init__(sigma_data, sigma_min, sigma_max, cond_channels, cond_kind)
        self.model = SongUNet(
            resolution,
            channels + int(cond_channels),
            channels,
            model_channels,
            list(channel_mult),
            channel_mult_emb,
            num_blocks,
            list(attn_resolutions),
            dropout,
            embedding_type,
            channel_mult_noise,
            encoder_type,
            list(resample_filter),
            augment_dim,
        )
        self.resolution = resolution
        self.channels = channels

    def backbone(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """F: the backbone on an already scaled input (B, C+k, H, W) at c_noise (B,); returns (B, C, H, W)."""
        return self.model(x_in, c_noise)

    #: The backbone settings of ``network.architecture`` (EDM's train.py choices of the two configurations).
    VARIANTS = {
        "ddpmpp": {"embedding_type": "positional", "channel_mult_noise": 1, "encoder_type": "standard", "resample_filter": [1, 1]},
        "ncsnpp": {"embedding_type": "fourier", "channel_mult_noise": 2, "encoder_type": "residual", "resample_filter": [1, 3, 3, 1]},
    }

    @classmethod
    def preset_arguments(cls, preset, cond_channels: int = 0, cond_kind: str = "pixel_mask") -> dict:
        """The constructor arguments of the network a preset with ``network.architecture`` ``"ddpmpp"`` or
        ``"ncsnpp"`` trains (``[data]`` shape, ``[network]`` sizes, the operator's mask channels)."""
        n = preset.network
        return {
            "resolution": preset.data.resolution,
            "channels": preset.data.channels,
            "cond_channels": int(cond_channels),
            "model_channels": n.model_channels,
            "channel_mult": list(n.channel_mult),
            "channel_mult_emb": n.channel_mult_emb,
            "num_blocks": n.num_blocks,
            "attn_resolutions": list(n.attn_resolutions),
            "dropout": n.dropout,
            **cls.VARIANTS[n.architecture],
            "augment_dim": n.augment_dim,
            "sigma_data": n.sigma_data,
            "sigma_min": n.sigma_min,
            "sigma_max": n.sigma_max,
            "cond_kind": cond_kind,
        }


#: ``network.architecture`` → the denoiser class that builds it.
ARCHITECTURES = {"unet2d": EDMPrecond, "ddpmpp": SongUNetPrecond, "ncsnpp": SongUNetPrecond}


def network_arguments(preset, cond_channels: int = 0, cond_kind: str = "pixel_mask") -> dict:
    """The diffusers config of the network a preset trains: its class's constructor arguments and
    ``_class_name`` (``EDMPrecond`` or ``SongUNetPrecond``, from ``network.architecture``)."""
    cls = ARCHITECTURES[preset.network.architecture]
    return {"_class_name": cls.__name__, **cls.preset_arguments(preset, cond_channels, cond_kind)}


def build_network(preset, cond_channels: int = 0, cond_kind: str = "pixel_mask") -> EDMPrecond | SongUNetPrecond:
    """A freshly initialised network for a preset (:func:`network_arguments`); torch's global RNG draws the weights."""
    return network_from_config(network_arguments(preset, cond_channels, cond_kind))


def network_from_config(config: dict) -> EDMPrecond | SongUNetPrecond:
    """The network a stored diffusers config describes (freshly initialised), by its ``_class_name``
    (configs without one, from older checkpoints, are :class:`EDMPrecond`'s).

    Raises:
        ValueError: an unknown ``_class_name``.
    """
    name = config.get("_class_name", EDMPrecond.__name__)
    classes = {c.__name__: c for c in ARCHITECTURES.values()}
    if name not in classes:
        raise ValueError(f"network class {name!r} is not one of the engine's ({', '.join(sorted(classes))})")
    return classes[name].from_config({k: v for k, v in config.items() if k != "_class_name"})


def network_differences(net: nn.Module, preset, cond_channels: int = 0, cond_kind: str = "pixel_mask") -> dict:
    """``{name: (net's value, the preset's)}`` where ``net`` is not the network the preset trains (the
    class as ``"network"``, then every constructor argument); ``{}`` when it is."""
    wanted = network_arguments(preset, cond_channels, cond_kind)
    name = wanted.pop("_class_name")
    if type(net).__name__ != name:
        return {"network": (type(net).__name__, name)}
    return net.differences(wanted)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Freeze ``module``'s parameters for the block (``requires_grad`` off) and give back each one's
    previous flag at its end, also when the block raises; yields ``module``.

    For a network that takes part in another network's loss without being trained by it (the fake
    score inside the generator's loss, SiD's alternating updates): gradients still flow through its
    inputs, none is accumulated in its parameters. A wrapped module (DistributedDataParallel) and the
    bare one inside share their parameters, so freezing either freezes both. Train/eval mode is left
    as it is.
    """
    params = list(module.parameters())
    before = [p.requires_grad for p in params]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


def unwrap(net: nn.Module) -> nn.Module:
    """The bare module inside a DistributedDataParallel (or similar ``.module``) wrapper, else ``net``."""
    return getattr(net, "module", net)
