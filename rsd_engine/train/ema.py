"""Exponential moving average of weights by half-life in images, with EDM's ramp-up.

EDM (Karras et al. 2022, training loop): half-life h = ema_halflife_nimg, optionally
h ← min(h, images_seen · rampup_ratio), and β = 0.5^(batch / max(h, 1e-8)). With ramp-up the
first update (images_seen = 0) has β = 0, i.e. the EMA becomes the trained weights.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ema_beta", "update_ema"]


def ema_beta(batch: int, images_seen: float, halflife_kimg: float, rampup_ratio: float = 0.0) -> float:
    """β of one EMA update after a step of ``batch`` images taken when ``images_seen`` images had been seen.

    ``rampup_ratio`` 0 switches the ramp-up off. Returns a float in [0, 1).
    """
    halflife = halflife_kimg * 1000.0
    if rampup_ratio > 0:
        halflife = min(halflife, images_seen * rampup_ratio)
    return 0.5 ** (batch / max(halflife, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, beta: float) -> None:
    """ema ← β·ema + (1 − β)·net, parameter by parameter; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)
