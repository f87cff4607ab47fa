"""From a validated preset to the objects a run is made of: the operator class and its parameters, the
forward model (:class:`~rsd_engine.operators.measurement.Measurement`) and the teacher objective
(:class:`~rsd_engine.train.objectives.Objective`), and the operator checks that need the operator's code
(plug-ins, objective families).

:mod:`rsd_engine.io.config` is the schema: it reads the registry's names but never imports a plug-in or
builds an operator. Here a plug-in named by import
path or entry point (docs/operators.md) is imported, its ``[corruption.params]`` validated against its
schema (:func:`rsd_engine.operators.registry.params_model`), and it is built once on a tiny batch so
a constructor that raises or a declared output shape that differs from what it returns is a preset
error named by field before any run folder exists. :func:`load`/:func:`loads` are
:func:`rsd_engine.io.config.load`/:func:`~rsd_engine.io.config.loads` plus these checks; the command line
uses them for every command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError, create_model

from .io import config as cfg
from .operators import Operator
from .operators.measurement import Measurement
from .operators.registry import OPERATORS, OperatorLoadError, import_path, package_version, params_model, resolve
from .train.objectives import FAMILIES, Objective, ObjectiveFamily

__all__ = [
    "is_plugin",
    "operator_class",
    "plugin_params_model",
    "operator_params",
    "ambient_delta",
    "resolve_objective",
    "build_operator",
    "build_measurement",
    "build_objective",
    "operator_schema",
    "operator_problems",
    "check",
    "load",
    "loads",
    "frozen_text",
]


def is_plugin(preset: cfg.Preset) -> bool:
    """Whether ``corruption.operator`` is a plug-in (an import path or a registered name), not a built-in."""
    return preset.corruption.operator not in OPERATORS


def operator_class(preset: cfg.Preset) -> type[Operator]:
    """The class of ``corruption.operator`` (imports a plug-in's module).

    Raises:
        OperatorLoadError: see :func:`rsd_engine.operators.registry.resolve`.
    """
    return resolve(preset.corruption.operator)


def _family(cls: type[Operator]) -> ObjectiveFamily:
    if cls.objective_family not in FAMILIES:
        raise OperatorLoadError(f"{import_path(cls)} declares objective_family = {cls.objective_family!r}; allowed: {', '.join(FAMILIES)}")
    return FAMILIES[cls.objective_family]


def plugin_params_model(cls: type[Operator]) -> type[BaseModel]:
    """The schema of a plug-in's ``[corruption.params]``: its own parameters
    (:func:`~rsd_engine.operators.registry.params_model`) plus the training settings of its objective
    family (δ of the mask family, :attr:`rsd_engine.train.objectives.ObjectiveFamily.settings`).

    Raises:
        OperatorLoadError: an unknown family, or a schema that cannot be built.
    """
    family = _family(cls)
    base = params_model(cls)
    if not family.settings:
        return base
    return create_model(base.__name__, __base__=base, **family.settings)


def _plugin_values(preset: cfg.Preset, cls: type[Operator]) -> dict[str, Any]:
    return plugin_params_model(cls).model_validate(preset.corruption.params).model_dump()


def operator_params(preset: cfg.Preset) -> dict[str, Any]:
    """The keyword parameters of the operator A, without the objective's settings kept beside them (δ):
    a built-in's ``[corruption.<operator>]`` table (``{"kernel_size": 9, "std": 2.0}`` for
    ``gaussian_blur``, ``{}`` without a table) or a plug-in's validated ``[corruption.params]`` with defaults.

    Raises:
        OperatorLoadError, pydantic.ValidationError: a plug-in that does not import, or bad parameters
            (:func:`check` reports both by field first).
    """
    if not is_plugin(preset):
        table = getattr(preset.corruption, preset.corruption.operator, None)
        return table.model_dump(exclude=set(getattr(table, "objective_keys", ()))) if isinstance(table, BaseModel) else {}
    cls = operator_class(preset)
    values = _plugin_values(preset, cls)
    return {k: v for k, v in values.items() if k not in _family(cls).settings}


def ambient_delta(preset: cfg.Preset) -> float:
    """δ of the Ambient further corruption (docs/method.md §2.3): a training setting of the mask family,
    ``corruption.<mask operator>.delta`` (built-ins) or ``corruption.params.delta`` (plug-ins); 0 for
    operators without a mask."""
    if is_plugin(preset):
        return float(_plugin_values(preset, operator_class(preset)).get("delta", 0.0))
    table = getattr(preset.corruption, preset.corruption.operator, None)
    return float(table.delta) if isinstance(table, BaseModel) and "delta" in getattr(table, "objective_keys", ()) else 0.0


def resolve_objective(preset: cfg.Preset) -> str:
    """The teacher objective a preset trains with (docs/method.md §2): ``teacher.objective``, or for
    ``auto`` the first objective of the operator's family (:class:`rsd_engine.train.objectives.ObjectiveFamily`):
    ``ambient_tweedie`` (plain EDM at σ_c = 0), ``ambient_mask`` or ``ambient_fourier``.

    Raises:
        ValueError: an explicit objective that the operator's family does not allow (the message lists those).
        OperatorLoadError: a plug-in that does not import, or an unknown family.
    """
    cls = operator_class(preset)
    family = _family(cls)
    chosen = preset.teacher.objective
    if chosen == "auto":
        return family.objectives[0]
    if chosen not in family.objectives:
        raise ValueError(
            f"{chosen!r} does not fit operator {preset.corruption.operator!r} (objective family {family.name}); "
            f"allowed: auto, {', '.join(sorted(family.objectives))}"
        )
    return chosen


def build_operator(preset: cfg.Preset) -> Operator:
    """Instantiate the preset's operator for its image shape (``data.channels``, ``data.resolution``)
    with :func:`operator_params`.

    Raises:
        OperatorLoadError, ValueError: a plug-in that does not import, or parameters the operator refuses
            (:func:`check` reports these by field first).
    """
    cls = operator_class(preset)
    return cls(channels=preset.data.channels, resolution=preset.data.resolution, **operator_params(preset))


def build_measurement(preset: cfg.Preset) -> Measurement:
    """The forward model y = A(x) + σ_c ε of a preset: its operator, ``corruption.noise_sigma`` and ``corruption.seed``."""
    c = preset.corruption
    return Measurement(build_operator(preset), c.noise_sigma, c.seed)


def build_objective(preset: cfg.Preset, measurement: Measurement) -> Objective:
    """The preset's teacher objective (:func:`resolve_objective`) with its σ distribution (``teacher.p_mean``,
    ``teacher.p_std``, ``teacher.sigma_sampling``) and δ (:func:`ambient_delta`)."""
    t = preset.teacher
    return Objective(resolve_objective(preset), measurement, t.p_mean, t.p_std, ambient_delta(preset), t.sigma_sampling == "above_noise")


def operator_schema(preset: cfg.Preset) -> list[dict[str, Any]]:
    """The parameter fields of the preset's operator, in the form of :func:`rsd_engine.io.config.schema_fields`
    (``section`` ``"corruption"``, ``key`` ``"params.<name>"`` for a plug-in, ``"<operator>.<name>"`` for a built-in).

    Raises:
        OperatorLoadError: a plug-in that does not import (:func:`check` reports it by field first).
    """
    if not is_plugin(preset):
        table = type(getattr(preset.corruption, preset.corruption.operator, None))
        return cfg.table_fields(table, "corruption", f"{preset.corruption.operator}.") if issubclass(table, BaseModel) else []
    return cfg.table_fields(plugin_params_model(operator_class(preset)), "corruption", "params.")


def _params_problems(err: ValidationError) -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        field = ".".join(["corruption.params", *map(str, e["loc"])])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            out.append((field, "unknown parameter"))
        elif e["type"] == "missing":
            out.append((field, "required parameter missing"))
        else:
            out.append((field, f"{cfg.quote(e.get('input'))}: {msg}"))
    return out


def operator_problems(preset: cfg.Preset) -> list[tuple[str, str]]:
    """Every problem of the preset's operator that needs its code, as ``(field, message)`` pairs:
    a plug-in that does not import or is not an :class:`Operator`, an unknown objective family, plug-in
    parameters that do not fit its schema, a teacher objective its family does not allow, a constructor
    that raises, and (plug-ins) a measurement whose shape differs from ``output_shape()`` or that fails
    on a batch of one image.
    """
    try:
        cls = operator_class(preset)
        _family(cls)
    except OperatorLoadError as e:
        return [("corruption.operator", str(e))]
    plugin = is_plugin(preset)
    if plugin:
        try:
            operator_params(preset)
        except OperatorLoadError as e:
            return [("corruption.operator", str(e))]
        except ValidationError as e:
            return _params_problems(e)
    try:
        resolve_objective(preset)
    except ValueError as e:
        return [("teacher.objective", str(e))]
    if not plugin:
        return []
    where = f"{import_path(cls)}"
    try:
        op = build_operator(preset)
    except Exception as e:  # noqa: BLE001 - a plug-in constructor's error, in one line
        return [
            (
                "corruption.params",
                f"{where}(channels={preset.data.channels}, resolution={preset.data.resolution}, **params) raised {type(e).__name__}: {e}",
            )
        ]
    x = torch.zeros(1, preset.data.channels, preset.data.resolution, preset.data.resolution)
    try:
        y = op(x, **op.sample_params(1, torch.Generator().manual_seed(0)))
        declared = tuple(op.output_shape())
    except Exception as e:  # noqa: BLE001
        return [("corruption.operator", f"{where} failed on a batch of one image: {type(e).__name__}: {e}")]
    if tuple(y.shape[1:]) != declared:
        return [
            ("corruption.operator", f"{where} returns measurements of shape {tuple(y.shape[1:])} but declares output_shape() = {declared}")
        ]
    return []


def check(preset: cfg.Preset, source: str | None = None) -> cfg.Preset:
    """Raise :class:`~rsd_engine.io.config.PresetError` for :func:`operator_problems`; returns the preset."""
    problems = operator_problems(preset)
    if problems:
        raise cfg.PresetError(problems, source)
    return preset


def loads(text: str, overrides: list[str] | None = None, source: str | None = None) -> cfg.Preset:
    """:func:`rsd_engine.io.config.loads` plus :func:`check`.

    Raises:
        PresetError: every schema problem, or the operator's problems (named by field).
    """
    return check(cfg.loads(text, overrides, source), source)


def load(path: str | Path, overrides: list[str] | None = None) -> cfg.Preset:
    """:func:`rsd_engine.io.config.load` plus :func:`check`.

    Raises:
        PresetError: an unreadable file, every schema problem, or the operator's problems (named by field).
    """
    return check(cfg.load(path, overrides), str(path))


def frozen_text(preset: cfg.Preset) -> str:
    """The effective preset a run folder keeps (``preset.toml``): a plug-in is recorded by its import path
    (a registered name too), headed by a comment naming it and its package version where it has one."""
    if not is_plugin(preset):
        return cfg.dumps(preset)
    cls = operator_class(preset)
    frozen = preset.model_copy(deep=True)
    frozen.corruption.operator = import_path(cls)
    version = package_version(cls)
    head = f"# operator plug-in {import_path(cls)}" + (f", package {version}" if version else ", not from an installed package") + "\n"
    return head + cfg.dumps(frozen)
