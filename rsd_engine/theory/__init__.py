"""The linear-Gaussian theory of RSD, computed (docs/method.md §8).

``rsd-engine theory`` runs :func:`run_theory` and writes :func:`write_report`'s table and plot.
"""

from .experiment import TheoryConfig, run_theory
from .gaussian import GaussianDenoiser, ambient_affine_minimiser, gaussian_denoiser, gaussian_w2, principal_angles_deg
from .models import LinearGenerator, MLPDenoiser

__all__ = [
    "TheoryConfig",
    "run_theory",
    "GaussianDenoiser",
    "ambient_affine_minimiser",
    "gaussian_denoiser",
    "gaussian_w2",
    "principal_angles_deg",
    "LinearGenerator",
    "MLPDenoiser",
]
