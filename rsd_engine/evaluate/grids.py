"""PNG sample grids (always PNG: docs/method.md §4.2), made with the single quantiser of ``metrics``."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..io.runs import atomic_write_bytes
from .metrics import display_images, quantize

__all__ = ["grid_image", "save_grid"]


def grid_image(images: torch.Tensor, columns: int | None = None, pad: int = 1) -> Image.Image:
    """Tile images (N, C, H, W) in [-1, 1] into one PIL image (grey for C = 1, RGB for C = 3).

    Args:
        columns: images per row (default ⌈√N⌉).
        pad: pixels of black between tiles.

    Raises:
        ValueError: C not in {1, 2, 3}. (Two-channel complex images are shown as their magnitude,
            :func:`rsd_engine.evaluate.metrics.display_images`.)
    """
    x = display_images(images.detach().cpu().float())
    if x.shape[1] not in (1, 3):
        raise ValueError(f"grid needs 1, 2 or 3 channels, got {x.shape[1]}")
    n, c, h, w = x.shape
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    u8 = quantize(x).numpy()
    canvas = np.zeros((c, rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[:, top : top + h, left : left + w] = u8[i]
    arr = canvas[0] if c == 1 else canvas.transpose(1, 2, 0)
    return Image.fromarray(arr, mode="L" if c == 1 else "RGB")


def save_grid(images: torch.Tensor, path: Path, columns: int | None = None) -> Path:
    """Write :func:`grid_image` to ``path`` as PNG, atomically. Returns ``path``."""
    buf = io.BytesIO()
    grid_image(images, columns).save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
