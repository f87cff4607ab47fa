"""Evaluation, the last step of the flow (teacher → distillation → **evaluation**): sampling the
teacher and the generator, and measuring them.

``sampling`` (Karras σ, Heun, one-step generation), ``generate`` (samples of a named model from fixed
seeds), ``metrics`` (quantiser, Inception features, FID/KID, PSNR/SSIM), ``evaluation`` (live and
final evaluation into metrics.json), ``grids`` (sample grids as PNG) and ``reuse`` (an evaluation's
identity, so no figure is computed twice). Submodules are imported by name; this file imports none
of them.
"""
