"""RSD engine: learn a one-step generator of clean images from corrupted measurements only
(Restoration Score Distillation, Zhang et al., ICLR 2026). No Gradio import anywhere in here."""

__version__ = "0.1.0"

__all__ = ["load_edm_teacher"]


def __getattr__(name: str):
    """``load_edm_teacher`` (:func:`rsd_engine.models.edm_import.load_edm_teacher`), imported on first use so that
    ``import rsd_engine`` stays free of torch."""
    if name == "load_edm_teacher":
        from .models.edm_import import load_edm_teacher

        return load_edm_teacher
    raise AttributeError(f"module 'rsd_engine' has no attribute {name!r}")
