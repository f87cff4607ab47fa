"""A restricted reader of EDM-format pickles (EDM, SiD, Ambient Diffusion, Ambient-MRI snapshots).

EDM's ``torch_utils.persistence`` pickles every network object as a *persistence record*: a call
``_reconstruct_persistent_obj(meta)`` with ``meta = {type, version, module_src, class_name, state}``,
where ``module_src`` is the source code of the module that defined the class and ``state`` the object's
``__dict__`` (parameters, buffers, child modules, constructor arguments ``_init_args``/``_init_kwargs``).
EDM re-executes ``module_src`` when it loads such a file, so opening a downloaded snapshot with EDM
runs whatever code it carries. This reader never does.

:class:`RestrictedUnpickler` resolves only these names (anything else is refused by name, before
any object is built, with :class:`EDMPickleError`):

- ``torch_utils.persistence._reconstruct_persistent_obj`` → a :class:`PersistentRecord` holding the
  class name and state; ``module_src`` is dropped unread;
- the tensor rebuilders ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` /
  ``_rebuild_parameter`` and ``torch.storage._load_from_bytes``, whose bytes are read with
  ``torch.load(weights_only=True)`` (itself a restricted reader of tensors and storages);
- ``torch.nn.modules.container.ModuleDict`` / ``ModuleList`` / ``Sequential`` → a :class:`ModuleRecord`
  (state only; EDM's SongUNet keeps its blocks in ModuleDicts);
- containers and numbers: ``collections.OrderedDict``, ``builtins.set`` / ``frozenset``,
  ``dnnlib.util.EasyDict`` (read as a plain dict);
- numpy scalars, dtypes and arrays, in both the ``numpy.core`` (numpy 1.x) and ``numpy._core``
  (numpy 2.x) spellings, object dtypes refused.

Persistent ids (``persistent_load``) are refused too. Reading builds plain data: no class of the file is
instantiated and no code of the file runs.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["EDMPickleError", "PersistentRecord", "ModuleRecord", "RestrictedUnpickler", "read_pickle", "module_tensors"]


class EDMPickleError(ValueError):
    """An EDM-format pickle was refused or cannot be read; the message names the file and the reason."""


@dataclass
class PersistentRecord:
    """An object of an EDM persistence record, read as data: ``class_name`` (e.g. ``"EDMPrecond"``,
    ``"SongUNet"``), ``state`` (its ``__dict__``: ``_parameters``, ``_buffers``, ``_modules``,
    ``_init_kwargs`` …) and the record's ``version``. The embedded source code is not kept."""

    class_name: str
    state: dict
    version: Any = None


@dataclass
class ModuleRecord:
    """A plain torch container module (``ModuleDict`` …) read as data: its class name and ``state``."""

    class_name: str
    state: dict = field(default_factory=dict)

    def __setstate__(self, state: dict) -> None:  # pickle's BUILD
        if not isinstance(state, dict):
            raise EDMPickleError(f"{self.class_name}: state of type {type(state).__name__}, expected a dict")
        self.state = state


def _reconstruct(meta: Any) -> PersistentRecord:
    """Stand-in for EDM's ``_reconstruct_persistent_obj``: keeps class name and state, drops ``module_src``."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise EDMPickleError("a persistence record without type 'class' and a class name")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise EDMPickleError(f"persistence record {meta['class_name']!r}: state of type {type(state).__name__}, expected a dict")
    return PersistentRecord(meta["class_name"], dict(state), meta.get("version"))


def _module_record(name: str) -> type:
    """A class whose instances, as pickle creates them (``cls.__new__(cls)``, then BUILD), are :class:`ModuleRecord` named ``name``."""

    class _Record(ModuleRecord):
        def __new__(cls, *args):
            obj = object.__new__(cls)
            obj.class_name, obj.state = name, {}
            return obj

    _Record.__name__ = name
    return _Record


def _load_storage(data: bytes):
    """``torch.storage._load_from_bytes`` read with ``torch.load(weights_only=True)`` on the CPU."""
    if not isinstance(data, (bytes, bytearray)):
        raise EDMPickleError("a storage record whose payload is not bytes")
    try:
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure of the restricted reader is a refusal
        raise EDMPickleError(f"a tensor storage could not be read with torch.load(weights_only=True): {e}") from None
    if not isinstance(storage, torch.TypedStorage):
        raise EDMPickleError(f"a storage record holds a {type(storage).__name__}, not a tensor storage")
    return storage


def _no_hooks(hooks: Any) -> None:
    if hooks:
        raise EDMPickleError("a tensor with backward hooks (refused: hooks are code)")


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    _no_hooks(backward_hooks)
    if not isinstance(storage, torch.TypedStorage):
        raise EDMPickleError("a tensor whose storage is not a tensor storage")
    return torch._utils._rebuild_tensor(storage, offset, tuple(size), tuple(stride))


def _rebuild_tensor(storage, offset, size, stride):
    return _rebuild_tensor_v2(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    _no_hooks(backward_hooks)
    if not isinstance(data, torch.Tensor):
        raise EDMPickleError("a parameter whose data is not a tensor")
    return data


def _dtype(spec, align=False, copy=False):
    if not isinstance(spec, str) or spec.startswith("O"):
        raise EDMPickleError(f"numpy dtype {spec!r} refused (object dtypes can hold code)")
    return np.dtype(spec, bool(align), bool(copy))


def _scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise EDMPickleError("a numpy scalar that is not a plain number")
    return np.frombuffer(bytes(data), dtype=dtype)[0].copy()


def _array_reconstruct(cls, shape, typecode):
    if cls is not np.ndarray:
        raise EDMPickleError("a numpy array of a class other than numpy.ndarray")
    return _Array()


class _Array:
    """A numpy array being read: pickle's BUILD gives (version, shape, dtype, fortran, the data's bytes)."""

    def __setstate__(self, state):
        _, shape, dtype, fortran, buffer = state
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(buffer, (bytes, bytearray)):
            raise EDMPickleError("a numpy array that is not of a plain numeric dtype")
        self.value = np.frombuffer(bytes(buffer), dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


class _EasyDict(dict):
    """``dnnlib.util.EasyDict`` read as a plain dict."""

    def __setstate__(self, state):
        if state:
            self.update(state)


_NUMPY = {"scalar": _scalar, "_reconstruct": _array_reconstruct}

#: (module, name) → the object the reader gives for it; everything else is refused.
ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): _dtype,
    ("numpy", "ndarray"): np.ndarray,
    **{(f"{core}.multiarray", name): fn for core in ("numpy.core", "numpy._core") for name, fn in _NUMPY.items()},
    **{("torch.nn.modules.container", name): _module_record(name) for name in ("ModuleDict", "ModuleList", "Sequential")},
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED` names (see the module docstring).

    Raises:
        EDMPickleError: on the first other global (``"refused: os.system"``) or a persistent id.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise EDMPickleError(f"refused: {module}.{name} (not a tensor, number, container or EDM persistence record)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise EDMPickleError("refused: a persistent id (EDM pickles hold none)")


def _plain(obj: Any) -> Any:
    """Replace the array stand-ins by numpy arrays, recursively through containers and records."""
    if isinstance(obj, _Array):
        return obj.value
    if isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = _plain(v)
    elif isinstance(obj, list):
        obj[:] = [_plain(v) for v in obj]
    elif isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    elif isinstance(obj, (PersistentRecord, ModuleRecord)):
        _plain(obj.state)
    return obj


def read_pickle(path: str | Path) -> Any:
    """Read an EDM-format pickle as plain data (records, tensors, containers, numbers), running none of its code.

    Args:
        path: the ``.pkl`` file (e.g. ``network-snapshot-*.pkl``: a dict with the network under ``ema``).

    Returns:
        the unpickled object, with every persistent object as a :class:`PersistentRecord`.

    Raises:
        EDMPickleError: no such file; not a pickle; a refused name (``"<path>: refused: os.system …"``).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _plain(RestrictedUnpickler(f).load())
    except FileNotFoundError:
        raise EDMPickleError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise EDMPickleError(f"{path}: is a folder; an EDM-format .pkl file is expected") from None
    except EDMPickleError as e:
        raise EDMPickleError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a malformed pickle, whatever the reader stumbled on
        raise EDMPickleError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None


def module_tensors(record: PersistentRecord | ModuleRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict of a module record: its parameters and persistent buffers and those of its
    children, under dotted names (``"model.enc.32x32_conv.weight"`` …), as ``nn.Module.state_dict`` names them.

    Raises:
        EDMPickleError: a child that is not a module record, or a parameter that is not a tensor.
    """
    state = record.state
    skip = set(state.get("_non_persistent_buffers_set") or ())
    out: dict[str, torch.Tensor] = {}
    for kind in ("_parameters", "_buffers"):
        for name, value in (state.get(kind) or {}).items():
            if value is None or (kind == "_buffers" and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise EDMPickleError(f"{prefix}{name}: a {type(value).__name__}, expected a tensor")
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, (PersistentRecord, ModuleRecord)):
            raise EDMPickleError(f"{prefix}{name}: a {type(child).__name__}, expected a module")
        out.update(module_tensors(child, f"{prefix}{name}."))
    return out
