"""The DDPM++ / NCSN++ backbone F of EDM (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", appendix F.2 and Table 7), after Song et al. 2021 ("Score-Based
Generative Modeling through Stochastic Differential Equations", appendix H), written from the papers.

Layout (EDM Table 7, "config F" of its CIFAR-10 and 64×64 runs):

- mapping: noise embedding of c_noise (positional, DDPM++; or random Fourier features, NCSN++) → two
  fully connected layers with SiLU, giving the embedding e of ``model_channels · channel_mult_emb`` values;
- encoder: a 3×3 convolution, then per level ``num_blocks`` residual blocks (self-attention after
  the blocks of the levels whose resolution is in ``attn_resolutions``), and between levels a
  downsampling residual block; NCSN++ adds a residual path from the input image at every level;
- decoder: two blocks at the lowest resolution (the first with attention), then per level
  ``num_blocks + 1`` blocks, each taking the matching encoder activation concatenated, an upsampling
  block between levels, and GroupNorm → SiLU → 3×3 convolution to the output channels.

A residual block: GroupNorm → SiLU → conv3×3 (resampling inside) → + affine(e) → GroupNorm → SiLU →
dropout → conv3×3, plus a 1×1 (resampling) skip where the shape changes, scaled by √½; attention
(one head) adds its projection, again scaled by √½. GroupNorm takes min(32, C/4) groups.

Parameter names follow the layout of EDM's released networks (``enc.32x32_conv.weight``,
``map_layer0.weight``, ``dec.32x32_block3.qkv.weight`` …, resampling filters as buffers), so EDM-format
weights load one to one (:mod:`rsd_engine.models.edm_import`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SongUNet", "EMBEDDINGS", "ENCODERS", "group_count", "level_channels"]

#: Noise embeddings: positional (DDPM++, Vaswani et al. 2017 with EDM's endpoint rule) and random Fourier features (NCSN++).
EMBEDDINGS = ("positional", "fourier")
#: Encoders: standard (DDPM++) and with a residual path from the input image (NCSN++).
ENCODERS = ("standard", "residual")


def group_count(channels: int) -> int:
    """GroupNorm groups of EDM's SongUNet: min(32, ⌊C/4⌋) (at least 4 channels per group)."""
    return min(32, channels // 4)


def level_channels(model_channels: int, channel_mult: list[int], num_blocks: int) -> list[int]:
    """Channel counts of every GroupNorm input in the network (encoder outputs, decoder inputs with
    their concatenated skip, output norm): each must be ≥ 4 and divisible by :func:`group_count`."""
    enc = [model_channels]
    for level, mult in enumerate(channel_mult):
        if level:
            enc.append(enc[-1])
        enc += [model_channels * mult] * num_blocks
    out, c, skips = list(enc), enc[-1], list(enc)
    for mult in reversed(channel_mult):
        for _ in range(num_blocks + 1):
            out.append(c + skips.pop())
            c = model_channels * mult
    return sorted(set(out + [c]))


class Linear(nn.Module):
    """y = x Wᵀ + b with W of shape (out, in) (EDM's ``Linear``; the names ``weight``/``bias`` are kept)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class Conv2d(nn.Module):
    """A k×k convolution (k = 0: none) with optional ×2 resampling by a separable FIR filter f.

    Down: depthwise convolution with f⊗f/(Σf)², stride 2, then the convolution; up: depthwise
    transposed convolution with 4·f⊗f/(Σf)², stride 2, then the convolution ([1, 1] gives 2×2 mean
    pooling and nearest upsampling). ``fused`` (NCSN++'s input path) convolves first, then filters.
    The filter is a buffer ``resample_filter`` (1, 1, |f|, |f|), as in EDM's weights.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, up: bool = False, down: bool = False,
                 resample_filter=(1, 1), fused: bool = False, init_scale: float = 1.0):  # fmt: skip
        super().__init__()
        self.in_channels, self.out_channels, self.up, self.down, self.fused = in_channels, out_channels, up, down, fused
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel, kernel)) if kernel else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if kernel and bias else None
        if self.weight is not None:
            nn.init.xavier_uniform_(self.weight)
            with torch.no_grad():
                self.weight.mul_(init_scale)
        if up or down:
            f = torch.as_tensor(resample_filter, dtype=torch.float32)
            self.register_buffer("resample_filter", (torch.outer(f, f) / f.sum() ** 2)[None, None])
        else:
            self.resample_filter = None

    def _resample(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        f = self.resample_filter.to(x.dtype)
        if self.up:
            return F.conv_transpose2d(x, (4 * f).expand(x.shape[1], 1, -1, -1), stride=2, padding=pad, groups=x.shape[1])
        return F.conv2d(x, f.expand(x.shape[1], 1, -1, -1), stride=2, padding=pad, groups=x.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        f_pad = 0 if self.resample_filter is None else (self.resample_filter.shape[-1] - 1) // 2
        if self.fused and self.down and w is not None:
            x = self._resample(F.conv2d(x, w, padding=w_pad + f_pad), 0)
        else:
            if self.resample_filter is not None:
                x = self._resample(x, f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        return x if self.bias is None else x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)


class GroupNorm(nn.GroupNorm):
    """GroupNorm with min(32, C/4) groups (:func:`group_count`)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__(group_count(channels), channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class UNetBlock(nn.Module):
    """A residual block of DDPM++ with optional ×2 resampling and one-head self-attention (see the module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False, down: bool = False,
                 attention: bool = False, dropout: float = 0.0, resample_filter=(1, 1)):  # fmt: skip
        super().__init__()
        self.in_channels, self.out_channels, self.dropout, self.attention = in_channels, out_channels, dropout, attention
        self.norm0 = GroupNorm(in_channels)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, resample_filter=resample_filter)
        self.affine = Linear(emb_channels, out_channels)
        self.norm1 = GroupNorm(out_channels)
        self.conv1 = Conv2d(out_channels, out_channels, 3, init_scale=1e-5)
        self.skip = (
            Conv2d(in_channels, out_channels, 1, up=up, down=down, resample_filter=resample_filter)
            if out_channels != in_channels or up or down
            else None
        )
        if attention:
            self.norm2 = GroupNorm(out_channels)
            self.qkv = Conv2d(out_channels, 3 * out_channels, 1, init_scale=math.sqrt(0.2))
            self.proj = Conv2d(out_channels, out_channels, 1, init_scale=1e-5)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        h = F.silu(self.norm1(h + self.affine(emb)[:, :, None, None].to(h.dtype)))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + (x if self.skip is None else self.skip(x))) * math.sqrt(0.5)
        if self.attention:
            b, c, height, width = x.shape
            # qkv channels are ordered (channel, {q, k, v}) as in EDM's weights
            q, k, v = self.qkv(self.norm2(x)).reshape(b, c, 3, height * width).transpose(1, 3).unbind(2)
            a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # (B, HW, C), softmax(q·k/√C) v
            x = (self.proj(a.transpose(1, 2).reshape(b, c, height, width)) + x) * math.sqrt(0.5)
        return x


class SongUNet(nn.Module):
    """F of EDM's DDPM++ / NCSN++ configurations (module docstring), unconditional.

    Args:
        img_resolution: input side H = W (divisible by 2^(len(channel_mult) − 1)).
        in_channels: C + k (image and mask channels); out_channels: C.
        model_channels: base channel count (EDM 128).
        channel_mult: per-level channel multipliers (EDM CIFAR-10 [2, 2, 2]; 64×64 [1, 2, 2, 2]).
        channel_mult_emb: embedding size e = model_channels · channel_mult_emb (EDM 4).
        num_blocks: residual blocks per encoder level (EDM 4).
        attn_resolutions: resolutions with self-attention (EDM [16]).
        dropout: dropout probability in the blocks (EDM 0.13 CIFAR-10, 0.05 64×64).
        embedding_type: ``"positional"`` (DDPM++) or ``"fourier"`` (NCSN++).
        channel_mult_noise: noise embedding size = model_channels · channel_mult_noise (DDPM++ 1, NCSN++ 2).
        encoder_type: ``"standard"`` (DDPM++) or ``"residual"`` (NCSN++).
        resample_filter: FIR filter taps of the ×2 resampling ([1, 1] DDPM++, [1, 3, 3, 1] NCSN++).
        augment_dim: inputs of EDM's augmentation-label layer ``map_augment`` (0 = none). The layer is
            kept so that networks trained with EDM's augmentation load; it is never given labels here,
            which is how EDM samples.

    Raises:
        ValueError: an unknown embedding or encoder type, a resolution not divisible by
            2^(levels − 1), or a channel count GroupNorm cannot split (:func:`level_channels`).
    """

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, model_channels: int = 128, channel_mult=(2, 2, 2),
                 channel_mult_emb: int = 4, num_blocks: int = 4, attn_resolutions=(16,), dropout: float = 0.1,
                 embedding_type: str = "positional", channel_mult_noise: int = 1, encoder_type: str = "standard",
                 resample_filter=(1, 1), augment_dim: int = 0):  # fmt: skip
        super().__init__()
        if embedding_type not in EMBEDDINGS or encoder_type not in ENCODERS:
            raise ValueError(f"embedding_type {embedding_type!r} / encoder_type {encoder_type!r}: allowed {EMBEDDINGS} / {ENCODERS}")
        if img_resolution % 2 ** (len(channel_mult) - 1):
            raise ValueError(f"resolution {img_resolution} is not divisible by 2^{len(channel_mult) - 1} ({len(channel_mult)} levels)")
        bad = [c for c in level_channels(model_channels, list(channel_mult), num_blocks) if c < 4 or c % group_count(c)]
        if bad:
            raise ValueError(f"channel counts {bad} cannot be split into GroupNorm's min(32, C/4) groups")
        emb, noise = model_channels * channel_mult_emb, model_channels * channel_mult_noise
        self.embedding_type, self.encoder_type = embedding_type, encoder_type
        if embedding_type == "fourier":
            self.map_noise = FourierFeatures(noise)
        self.map_augment = Linear(augment_dim, noise, bias=False) if augment_dim else None
        self.map_layer0 = Linear(noise, emb)
        self.map_layer1 = Linear(emb, emb)
        self.noise_channels = noise
        block = dict(emb_channels=emb, dropout=dropout, resample_filter=resample_filter)

        self.enc = nn.ModuleDict()
        c = aux = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(c, model_channels, 3)
                c = model_channels
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(c, c, down=True, **block)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(aux, c, 3, down=True, resample_filter=resample_filter, fused=True)
                    aux = c
            for i in range(num_blocks):
                self.enc[f"{res}x{res}_block{i}"] = UNetBlock(c, model_channels * mult, attention=res in attn_resolutions, **block)
                c = model_channels * mult
        skips = [m.out_channels for name, m in self.enc.items() if "aux" not in name]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(c, c, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(c, c, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(c, c, up=True, **block)
            for i in range(num_blocks + 1):
                self.dec[f"{res}x{res}_block{i}"] = UNetBlock(
                    c + skips.pop(), model_channels * mult, attention=i == num_blocks and res in attn_resolutions, **block
                )
                c = model_channels * mult
        self.dec[f"{img_resolution}x{img_resolution}_aux_norm"] = GroupNorm(c)
        self.dec[f"{img_resolution}x{img_resolution}_aux_conv"] = Conv2d(c, out_channels, 3, init_scale=1e-5)

    def embed(self, c_noise: torch.Tensor) -> torch.Tensor:
        """The noise embedding (B, noise_channels) of c_noise (B,), laid out [sin | cos] as the mapping
        layers' weights expect: angles c·f with f_i = 10000^(−i/(n/2 − 1)) (positional, DDPM++) or
        2π·c·f with the buffer f (Fourier, NCSN++)."""
        if self.embedding_type == "fourier":
            freqs = 2 * math.pi * self.map_noise.freqs.to(torch.float32)
        else:
            half = self.noise_channels // 2
            freqs = (1 / 10000) ** (torch.arange(half, dtype=torch.float32, device=c_noise.device) / (half - 1))
        angle = torch.outer(c_noise.to(torch.float32), freqs)
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """F(x; c_noise): x (B, in_channels, H, W), c_noise (B,) → (B, out_channels, H, W)."""
        emb = F.silu(self.map_layer0(self.embed(c_noise).to(x.dtype)))
        emb = F.silu(self.map_layer1(emb))
        skips, aux = [], x
        for name, m in self.enc.items():
            if name.endswith("aux_residual"):
                x = aux = skips[-1] = (x + m(aux)) / math.sqrt(2)
            else:
                x = m(x, emb) if isinstance(m, UNetBlock) else m(x)
                skips.append(x)
        for name, m in self.dec.items():
            if name.endswith("aux_norm"):
                x = F.silu(m(x))
            elif name.endswith("aux_conv"):
                x = m(x)
            else:
                if "_block" in name:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = m(x, emb)
        return x


class FourierFeatures(nn.Module):
    """The frequencies f ~ N(0, 16²) of NCSN++'s random Fourier features, a buffer ``freqs`` (channels/2,)
    read by :meth:`SongUNet.embed`."""

    def __init__(self, channels: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(channels // 2) * scale)
