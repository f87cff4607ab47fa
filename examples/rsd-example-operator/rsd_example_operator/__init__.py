"""Dead sensor columns: a forward-operator plug-in for RSD Workbench (docs/operators.md).

Each image loses whole pixel columns, each column independently with probability ``p`` (a sensor with
dead read-out lines that change from frame to frame). A(x) = M ⊙ x with a 0/1 mask M constant along
each column; A is linear and self-adjoint, and its networks take the mask as a channel, so it trains
with the mask objective family (Ambient Diffusion).
"""

import torch

from rsd_engine.operators import Operator, PixelMask


class DeadColumns(Operator):
    """A(x) = M ⊙ x, M (B, 1, H, W) zero on the dead columns of each image.

    Args:
        channels, resolution: image shape C, H = W (given by the engine).
        p: probability that a column is dead, 0 ≤ p < 1.
    """

    name = "dead_columns"
    objective_family = "mask"
    cond_channels = 1

    def __init__(self, channels: int, resolution: int, p: float = 0.25):
        super().__init__(channels, resolution)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p = {p}: allowed 0 ≤ p < 1")
        self.p = p

    def sample_params(self, batch, rng=None):
        """``{"mask": (B, 1, H, W)}``, one draw per column from ``rng`` (a ``torch.Generator``) only."""
        alive = torch.rand(batch, 1, 1, self.resolution, generator=rng) >= self.p
        return {"mask": alive.float().expand(-1, -1, self.resolution, -1).contiguous()}

    def forward(self, x, mask):
        return x * mask

    def adjoint(self, y, mask):
        return y * mask

    def condition(self, mask):
        return PixelMask(mask)
