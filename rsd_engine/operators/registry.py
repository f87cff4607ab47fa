"""Where ``corruption.operator`` names come from: the built-in operators, plug-ins named by import path
``"package.module:ClassName"``, and names that installed packages register in the entry-point group
``rsd_engine.operators`` (docs/operators.md).

A plug-in is an :class:`~rsd_engine.operators.base.Operator` subclass. Its parameters are the typed
keyword arguments of its constructor after ``channels`` and ``resolution`` (or a pydantic model it
declares as ``Params``); :func:`params_model` turns them into a strict pydantic model, so wrong types,
missing and unknown parameters are errors named by field. Resolving a built-in name imports no
plug-in, and nothing here is imported until a name is resolved.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import inspect
import re
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from .base import Operator
from .blur import GaussianBlur
from .identity import Identity
from .inpainting import BoxInpainting, RandomInpainting
from .motion import MotionBlur
from .mri import MultiCoilMRI
from .resample import SuperResolution

__all__ = [
    "OPERATORS",
    "ENTRY_POINT_GROUP",
    "OperatorLoadError",
    "is_import_path",
    "entry_point_names",
    "known_names",
    "resolve",
    "import_path",
    "package_version",
    "params_model",
]

#: The built-in operators by preset name (``corruption.operator``).
OPERATORS: dict[str, type[Operator]] = {
    cls.name: cls for cls in (Identity, GaussianBlur, MotionBlur, RandomInpainting, BoxInpainting, SuperResolution, MultiCoilMRI)
}

#: The entry-point group through which installed packages register operator names.
ENTRY_POINT_GROUP = "rsd_engine.operators"

_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class OperatorLoadError(ValueError):
    """An operator name or import path that does not give an :class:`Operator` subclass; the message
    names the module or the name and what is allowed."""


def is_import_path(spec: str) -> bool:
    """Whether ``spec`` has the form ``"package.module:ClassName"`` (no import is attempted)."""
    return bool(_IMPORT_PATH.match(spec))


def entry_point_names() -> dict[str, str]:
    """Operator names registered by installed packages: ``{name: "module:attr"}`` (metadata only, nothing imported)."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def known_names() -> list[str]:
    """Every operator name a preset may give without an import path: the built-ins and the registered names, sorted."""
    return sorted(set(OPERATORS) | set(entry_point_names()))


def resolve(spec: str) -> type[Operator]:
    """The operator class of ``corruption.operator``: a built-in name, a registered name or an import path.

    Importing a plug-in runs its module's top-level code (once per process).

    Raises:
        OperatorLoadError: an unknown name, a module that does not exist or raises on import, a missing
            attribute, or an object that is not an :class:`Operator` subclass.
    """
    if spec in OPERATORS:
        return OPERATORS[spec]
    target = spec if is_import_path(spec) else entry_point_names().get(spec)
    if target is None:
        raise OperatorLoadError(
            f"unknown operator {spec!r}; allowed: {', '.join(known_names())}, or an import path 'package.module:ClassName'"
        )
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise OperatorLoadError(f"module {module_name!r} not found (is its package installed, or its folder on PYTHONPATH?)") from None
        raise OperatorLoadError(f"importing module {module_name!r} failed: {type(e).__name__}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a plug-in's own import error, reported in one line
        raise OperatorLoadError(f"importing module {module_name!r} failed: {type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise OperatorLoadError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Operator)):
        raise OperatorLoadError(
            f"{target!r} is {type(obj).__name__ if not isinstance(obj, type) else 'the class ' + obj.__name__}, "
            "not a subclass of rsd_engine.operators.Operator"
        )
    return obj


def import_path(cls: type[Operator]) -> str:
    """``"module:QualifiedName"`` of an operator class, the form a frozen preset records."""
    return f"{cls.__module__}:{cls.__qualname__}"


def package_version(cls: type[Operator]) -> str | None:
    """``"distribution version"`` of the installed package that provides ``cls``, or ``None`` (a module
    on PYTHONPATH, not installed)."""
    top = cls.__module__.split(".")[0]
    dists = metadata.packages_distributions().get(top) or []
    for dist in dists:
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return None


_RESERVED = ("self", "channels", "resolution")


def params_model(cls: type[Operator]) -> type[BaseModel]:
    """The parameter schema of an operator: its ``Params`` pydantic model when it declares one, else a
    strict model of its constructor's keyword arguments after ``channels`` and ``resolution`` (the
    annotation is the type, unannotated means any value, no default means required).

    Strict: no string-to-number or number-to-bool coercion (an int is accepted for a float); unknown keys
    are refused.

    Raises:
        OperatorLoadError: a constructor with ``*args``/``**kwargs`` or annotations that do not resolve.
    """
    declared = getattr(cls, "Params", None)
    if isinstance(declared, type) and issubclass(declared, BaseModel):
        return declared
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception as e:  # noqa: BLE001 - a plug-in's annotation error, in one line
        raise OperatorLoadError(f"the annotations of {import_path(cls)}.__init__ do not resolve: {type(e).__name__}: {e}") from None
    fields: dict[str, Any] = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in _RESERVED:
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise OperatorLoadError(f"{import_path(cls)}.__init__ takes *args/**kwargs; declare each parameter by name (or a Params model)")
        default = ... if p.default is p.empty else p.default
        fields[name] = (hints.get(name, Any), default)
    return create_model(f"{cls.__name__}Params", __config__=ConfigDict(extra="forbid", strict=True), **fields)
