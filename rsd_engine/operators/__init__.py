"""Forward operators A of the measurement model y = A(x) + σε (docs/method.md §1).

``OPERATORS`` maps the preset name (``corruption.operator``) to its :class:`Operator` class. The
noise and the per-index seeding live in :class:`rsd_engine.measurement.Measurement`.
"""

from __future__ import annotations

from .base import FAMILY_OBJECTIVES, Condition, Operator
from .blur import GaussianBlur
from .identity import Identity
from .inpainting import BoxInpainting, PixelMask, RandomInpainting, further_mask
from .mri import KSpaceLines, MultiCoilMRI
from .resample import SuperResolution

__all__ = [
    "Operator",
    "Condition",
    "FAMILY_OBJECTIVES",
    "PixelMask",
    "KSpaceLines",
    "OPERATORS",
    "build_operator",
    "further_mask",
    "Identity",
    "GaussianBlur",
    "RandomInpainting",
    "BoxInpainting",
    "SuperResolution",
    "MultiCoilMRI",
]

OPERATORS: dict[str, type[Operator]] = {
    cls.name: cls for cls in (Identity, GaussianBlur, RandomInpainting, BoxInpainting, SuperResolution, MultiCoilMRI)
}


def build_operator(preset) -> Operator:
    """Instantiate the preset's operator for its image shape with the parameters of A from its
    ``[corruption.<operator>]`` table (:func:`rsd_engine.config.operator_params`).

    Args:
        preset: a validated :class:`rsd_engine.config.Preset`.

    Raises:
        KeyError: unknown operator name (validation normally catches this first).
        ValueError: parameters the operator refuses (validation normally catches these first).
    """
    from ..config import operator_params

    cls = OPERATORS[preset.corruption.operator]
    return cls(channels=preset.data.channels, resolution=preset.data.resolution, **operator_params(preset))
