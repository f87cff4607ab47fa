"""Training, the first two steps of the flow: the teacher on corrupted measurements, then RSD
distillation of the one-step generator (teacher → **distillation** → evaluation).

``stage`` (the one loop, ``StageRunner``), ``training`` (the teacher step, the RSD iteration and the
two stages), ``objectives`` (the teacher losses), ``distill`` (the fake-score and generator losses),
``ema``, ``checkpoints`` (what a stage saves and resumes from), ``finite`` (the non-finite guards)
and ``budget`` (whether a preset's steps fit this machine's memory). The run that chains both stages
and the evaluation is :mod:`rsd_engine.experiment`. Submodules are imported by name; this file
imports none of them.
"""
