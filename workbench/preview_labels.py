"""Row labels on the engine's preview grid, so the page says what each row of images is.

``rsd-engine preview`` writes a bare grid (rows of n tiles, 1-pixel gaps, no text: pixel data only)
and prints ``rows: <label> | <label> | …``. :func:`labelled_preview` enlarges the grid by a whole
factor (nearest neighbour: every pixel stays a sharp square, no smoothing) and puts each row's label
in a white band above it.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from rsd_engine.io.runs import atomic_write_bytes

__all__ = ["row_labels", "labelled_preview", "MIN_TILE_PX"]

#: Tiles are enlarged by the smallest whole factor that makes them at least this many pixels high.
MIN_TILE_PX = 64
_FONT_PX = 14
_LINE_PX = _FONT_PX + 4


def row_labels(engine_text: str) -> list[str]:
    """The row labels in the preview command's output (its ``rows: a | b | c`` line); ``[]`` if absent."""
    for line in engine_text.splitlines():
        if line.startswith("rows: "):
            return [part.strip() for part in line[len("rows: ") :].split(" | ") if part.strip()]
    return []


def _font():
    """DejaVu Sans (shipped with matplotlib; it has σ, ε, ᵀ and ᴴ), else Pillow's built-in font."""
    from matplotlib import font_manager

    try:
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=False), _FONT_PX)
    except (OSError, ValueError):
        return ImageFont.load_default(size=_FONT_PX)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """``text`` broken between words into lines no wider than ``width`` pixels (a single longer word
    keeps its own line)."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def labelled_preview(grid_png: str | Path, labels: list[str], out_png: str | Path) -> Path:
    """Write the preview grid ``grid_png`` with a label band above each row to ``out_png``.

    Args:
        grid_png: the engine's grid: ``len(labels)`` rows of tiles H px high, 1-pixel gaps around
            every tile (height ``rows·(H+1)+1``).
        labels: one label per row, top to bottom.
        out_png: where the labelled PNG goes (RGB; tiles enlarged by a whole factor so that they are
            at least :data:`MIN_TILE_PX` high, nearest neighbour).

    Returns:
        ``out_png``; or ``grid_png`` unchanged when ``labels`` is empty or does not match the grid's
        rows (its height is not ``rows·(H+1)+1`` or its black gap lines are not where such rows put them).
    """
    grid_png, out_png = Path(grid_png), Path(out_png)
    with Image.open(grid_png) as im:
        grid = im.convert("RGB")
    rows = len(labels)
    if rows == 0 or (grid.height - 1) % rows or (grid.height - 1) // rows < 2:
        return grid_png
    tile_h = (grid.height - 1) // rows - 1
    gaps = [grid.crop((0, k * (tile_h + 1), grid.width, k * (tile_h + 1) + 1)).getextrema() for k in range(rows + 1)]
    if any(high != (0, 0) for extrema in gaps for high in extrema):  # the black gap lines are not where these rows put them
        return grid_png
    scale = max(1, math.ceil(MIN_TILE_PX / tile_h))
    big = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    font = _font()
    measure = ImageDraw.Draw(big)
    wrapped = [_wrap(measure, text, font, big.width - 8) for text in labels]
    band = [len(lines) * _LINE_PX + 6 for lines in wrapped]
    row_px = (tile_h + 1) * scale
    out = Image.new("RGB", (big.width, big.height + sum(band)), "white")
    draw = ImageDraw.Draw(out)
    y = 0
    for i, lines in enumerate(wrapped):
        for j, line in enumerate(lines):
            draw.text((4, y + 3 + j * _LINE_PX), line, fill=(20, 20, 20), font=font)
        y += band[i]
        top = i * row_px
        out.paste(big.crop((0, top, big.width, top + row_px + (scale if i == rows - 1 else 0))), (0, y))
        y += row_px
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    atomic_write_bytes(out_png, buf.getvalue())
    return out_png
