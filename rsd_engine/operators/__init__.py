"""Forward operators A of the measurement model y = A(x) + σε (docs/method.md §1, docs/operators.md).

``OPERATORS`` maps the built-in preset names (``corruption.operator``) to their :class:`Operator`
classes; :mod:`rsd_engine.operators.registry` also resolves plug-ins (import paths and entry points).
The noise and the per-index seeding live in :class:`rsd_engine.operators.measurement.Measurement`.

The forward model, where the flow starts (the corrupted data every step learns from): besides the
operators, this folder holds ``measurement`` (y = A(x) + σ_c ε with per-index seeding),
``conformance`` (the operator contract as checks, ``rsd-engine check-operator``) and ``preview`` (the
operator's rows before any training). Those three are imported by name, never from here, so that
importing the operators stays light.
"""

from __future__ import annotations

from .base import Condition, Operator
from .blur import GaussianBlur
from .identity import Identity
from .inpainting import BoxInpainting, PixelMask, RandomInpainting, apply_mask, further_mask
from .motion import MotionBlur
from .mri import KSpaceLines, MultiCoilMRI
from .registry import OPERATORS
from .resample import SuperResolution

__all__ = [
    "Operator",
    "Condition",
    "PixelMask",
    "KSpaceLines",
    "OPERATORS",
    "apply_mask",
    "further_mask",
    "Identity",
    "GaussianBlur",
    "MotionBlur",
    "RandomInpainting",
    "BoxInpainting",
    "SuperResolution",
    "MultiCoilMRI",
]
