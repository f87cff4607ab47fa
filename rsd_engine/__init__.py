"""RSD engine: learn a one-step generator of clean images from corrupted measurements only
(Restoration Score Distillation, Zhang et al., ICLR 2026). No Gradio import anywhere in here."""

__version__ = "0.1.0"
