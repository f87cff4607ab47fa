"""The preset form: schema fields, reading/writing single fields of TOML text, validation.

Gradio-free, so it is tested directly. The form is generated from
:func:`rsd_engine.io.config.schema_fields`; nested tables (operator parameters such as
``corruption.gaussian_blur.kernel_size``) become sub-fields tied to their operator. Edits go through
``tomlkit`` so comments and layout of a preset survive a form edit. Validation is the engine's own
(:func:`rsd_engine.io.config.loads` and :func:`rsd_engine.assembly.check`), so every message names the
dotted field; a plug-in operator is checked, and its parameter fields read, through the engine's command
line (:func:`plugin_fields`), never imported into the web server.
"""

from __future__ import annotations

import html
import json
import math
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import tomli
import tomlkit

__all__ = [
    "md_text",
    "ok_md",
    "err_md",
    "SECTIONS",
    "FormField",
    "FieldInputError",
    "Validation",
    "UNSET",
    "form_fields",
    "field_by_name",
    "operator_choices",
    "parse_toml",
    "effective_value",
    "to_widget",
    "from_widget",
    "set_field",
    "validate",
    "is_plugin",
    "plugin_fields",
]

#: Section key → heading shown on the page, in the order of the form.
SECTIONS: dict[str, str] = {
    "run": "Run",
    "data": "Data",
    "corruption": "Corruption (operator and noise)",
    "network": "Network",
    "teacher": "Teacher (phase I)",
    "distill": "Distillation (phase II)",
    "eval": "Evaluation",
    "accelerate": "Hardware (accelerate)",
}


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: Marker for "remove the key from the TOML" (the engine default applies).
UNSET = _Unset()


class FieldInputError(ValueError):
    """A form value could not be turned into a TOML value; ``field`` is the dotted name."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


@dataclass(frozen=True)
class FormField:
    """One field of the preset form.

    Attributes:
        path: keys from the top table, e.g. ``("data", "resolution")`` or
            ``("corruption", "gaussian_blur", "kernel_size")``.
        type: ``string`` | ``integer`` | ``number`` | ``boolean`` | ``array`` | ``enum``.
        default: the engine default (``None`` for optional fields).
        nullable: whether leaving it empty is allowed (the engine default then applies).
        choices: allowed values of an ``enum``.
        description: unit and meaning, from the engine.
        bounds: e.g. ``{"minimum": 0, "exclusiveMaximum": 1}``.
        operator: for operator parameters, the operator they belong to.
    """

    path: tuple[str, ...]
    type: str
    default: Any = None
    nullable: bool = False
    choices: tuple = ()
    description: str = ""
    bounds: dict = field(default_factory=dict)
    operator: str | None = None

    @property
    def name(self) -> str:
        """Dotted name, as the engine's error messages use it (``"data.resolution"``)."""
        return ".".join(self.path)

    @property
    def section(self) -> str:
        """The top-level table (``"data"``)."""
        return self.path[0]

    @property
    def label(self) -> str:
        """Short label shown above the widget (the key, with its operator table when nested)."""
        return ".".join(self.path[1:])

    def help_text(self) -> str:
        """Description, allowed range or choices and default, for the widget's info line."""
        parts = [self.description.strip()] if self.description else []
        rng = range_text(self.bounds)
        if rng:
            parts.append(f"allowed: {rng}")
        elif self.choices and not all(str(c) in self.description for c in self.choices):
            parts.append("allowed: " + " | ".join(str(c) for c in self.choices))
        if self.default is not None or "default" not in self.description:  # the description may say what unset means
            parts.append(f"default: {'none (unset)' if self.default is None else _show(self.default)}")
        if self.nullable:
            parts.append("empty = default")
        return " · ".join(parts)


def range_text(bounds: dict) -> str:
    """``{"minimum": 0, "exclusiveMaximum": 1}`` → ``"≥ 0 and < 1"`` (empty when unbounded)."""
    words = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤", "exclusiveMaximum": "<"}
    return " and ".join(f"{words[k]} {_show(v)}" for k, v in bounds.items() if k in words)


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:g}" if abs(value) >= 1e6 else str(value)
    return str(value)


def _infer_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, (list, tuple)):
        return "array"
    return "string"


@lru_cache(maxsize=1)
def operator_choices() -> tuple[str, ...]:
    """Names of the engine's forward operators (``corruption.operator``), empty if unknown."""
    from rsd_engine.io import config

    for entry in config.schema_fields():
        if entry["section"] == "corruption" and entry["key"] == "operator":
            return tuple(entry["choices"])
    return ()


def form_fields() -> list[FormField]:
    """All form fields in schema order; nested tables flattened into operator sub-fields.

    Raises:
        ImportError: the engine is not installed.
    """
    return list(_form_fields())


@lru_cache(maxsize=1)
def _form_fields() -> tuple[FormField, ...]:
    from rsd_engine.io import config

    ops = set(operator_choices())
    out: list[FormField] = []
    for entry in config.schema_fields():
        section = entry["section"]
        key_path = tuple(str(entry["key"]).split("."))
        default = entry.get("default")
        if hasattr(default, "model_dump"):  # a nested pydantic table given as its default object
            default = default.model_dump(mode="json")
        if isinstance(default, dict) or entry.get("type") == "object":
            out.extend(_flatten(section, key_path, default or {}, entry, ops))
            continue
        operator = key_path[0] if section == "corruption" and len(key_path) > 1 and key_path[0] in ops else None
        typ = entry.get("type", "string")
        choices = tuple(entry.get("choices") or ())
        if section == "corruption" and key_path == ("operator",) and not choices and ops:
            typ, choices = "enum", tuple(sorted(ops))
        out.append(
            FormField(
                path=(section, *key_path),
                type=typ,
                default=default,
                nullable=bool(entry.get("nullable")),
                choices=choices,
                description=entry.get("description", ""),
                bounds={k: entry[k] for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum") if k in entry},
                operator=operator,
            )
        )
    return tuple(out)


def _flatten(section: str, prefix: tuple[str, ...], table: dict, entry: dict, ops: set) -> list[FormField]:
    out = []
    sub_descriptions = entry.get("fields") or {}
    operator = prefix[0] if section == "corruption" and prefix[0] in ops else None
    for key, value in table.items():
        if isinstance(value, dict):
            out.extend(_flatten(section, (*prefix, key), value, {}, ops))
            continue
        info = sub_descriptions.get(key, {}) if isinstance(sub_descriptions, dict) else {}
        out.append(
            FormField(
                path=(section, *prefix, key),
                type=info.get("type") or _infer_type(value),
                default=value,
                nullable=bool(info.get("nullable")),
                choices=tuple(info.get("choices") or ()),
                description=info.get("description") or f"parameter of the {prefix[-1]} operator"
                if operator
                else info.get("description", ""),
                bounds={k: info[k] for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum") if k in info},
                operator=operator,
            )
        )
    return out


def field_by_name(name: str) -> FormField:
    """The form field with dotted ``name``.

    Raises:
        KeyError: no such field; the message lists the sections.
    """
    for f in _form_fields():
        if f.name == name:
            return f
    raise KeyError(f"unknown preset field {name!r}; fields look like section.key, sections: {', '.join(SECTIONS)}")


def parse_toml(text: str) -> dict:
    """TOML text → plain nested dict.

    Raises:
        FieldInputError: syntax error (field ``"(toml)"``).
    """
    try:
        return tomli.loads(text or "")
    except tomli.TOMLDecodeError as e:
        raise FieldInputError("(toml)", f"syntax error: {e}") from None


def effective_value(data: dict, f: FormField) -> Any:
    """The value the form shows for ``f``: the TOML's own value, else the engine default."""
    node: Any = data
    for key in f.path:
        if not isinstance(node, dict) or key not in node:
            return f.default
        node = node[key]
    return node


def to_widget(f: FormField, value: Any) -> Any:
    """A preset value → the widget's value (arrays as TOML/JSON text, ``None`` → empty)."""
    if f.type == "array":
        return "" if value is None else json.dumps(value)
    if value is None:
        return "" if f.type == "string" else None
    if f.type == "boolean":
        return bool(value)
    return value


def from_widget(f: FormField, value: Any) -> Any:
    """A widget's value → the TOML value to store, or :data:`UNSET` to remove the key (only for an
    emptied optional field, whose engine default then applies).

    Raises:
        FieldInputError: an empty (or, from a number box, unreadable) value of a required number or
            list field, text that is not a TOML array, a number that is not finite, etc.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        if f.nullable:
            return UNSET
        if f.type == "string":
            return ""
        if f.type in ("integer", "number", "array"):
            # a number box holding letters hands back nothing, like an emptied one: both are errors
            # on the field, never a silent removal of the key (the run would use the default)
            what = {"integer": "a whole number", "number": "a number", "array": "a list like [32, 64, 64]"}[f.type]
            raise FieldInputError(f.name, f"is empty or not {what}; type {what} (default: {_show(f.default)})")
        return UNSET
    if f.type == "array":
        try:
            parsed = tomli.loads(f"v = {value}")["v"]
        except tomli.TOMLDecodeError:
            raise FieldInputError(f.name, f"{value!r} is not a list; write it like [32, 64, 64]") from None
        if not isinstance(parsed, list):
            raise FieldInputError(f.name, f"{value!r} is not a list; write it like [32, 64, 64]")
        return parsed
    if f.type == "integer":
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise FieldInputError(f.name, f"{value!r} is not a whole number") from None
        if not math.isfinite(number) or number != int(number):
            raise FieldInputError(f.name, f"{value!r} is not a whole number")
        return int(number)
    if f.type == "number":
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise FieldInputError(f.name, f"{value!r} is not a number") from None
        if not math.isfinite(number):
            raise FieldInputError(f.name, f"{value!r} is not a finite number")
        return number
    if f.type == "boolean":
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if f.type == "enum" and f.choices:
        for choice in f.choices:  # a dropdown may hand back "3" for the choice 3
            if value == choice or str(value) == str(choice):
                return choice
    return value


def set_field(text: str, name: str, value: Any) -> str:
    """Return ``text`` with field ``name`` set to ``value`` (or removed for :data:`UNSET`).

    Comments and layout of the rest of the file are kept. Tables are created as needed. Setting
    ``corruption.operator`` removes the parameter tables of other operators (``[corruption.<name>]``,
    ``[corruption.params]``): the engine refuses a table of an operator that is not selected.

    Raises:
        FieldInputError: ``text`` is not valid TOML, or a parent of the field is not a table.
    """
    try:
        doc = tomlkit.parse(text or "")
    except Exception as e:  # tomlkit raises its own ParseError subclasses
        raise FieldInputError("(toml)", f"syntax error: {e}; fix the TOML before editing the form") from None
    path = name.split(".")
    node: Any = doc
    for key in path[:-1]:
        if key not in node:
            if value is UNSET:
                return tomlkit.dumps(doc)
            node[key] = tomlkit.table()
        node = node[key]
        if not isinstance(node, dict):
            raise FieldInputError(name, f"{key!r} is not a table in the TOML")
    last = path[-1]
    if value is UNSET:
        if last in node:
            del node[last]
    else:
        node[last] = value
        if name == "corruption.operator":
            for key in [k for k, v in node.items() if isinstance(v, dict) and k != value]:
                del node[key]
    return tomlkit.dumps(doc)


@dataclass
class Validation:
    """Result of :func:`validate`.

    Attributes:
        ok: the preset is valid.
        problems: ``(dotted field, message)`` pairs, as the engine names them.
        effective: the effective preset as TOML (every field), when valid.
        run_name: ``run.name`` of the effective preset, when valid.
        num_processes, mixed_precision: from ``[accelerate]``, when valid.
        not_here: what a valid preset needs and this machine lacks (:class:`rsd_engine.io.config.NotHereError`:
            its data, a checkpoint, memory), ``(dotted field, message)`` pairs, told apart from the
            preset's own problems; it makes ``ok`` false only when paths were asked for.
        data_only: every ``not_here`` entry is a missing data path.
    """

    ok: bool
    problems: list[tuple[str, str]]
    effective: str = ""
    run_name: str = ""
    num_processes: int = 1
    mixed_precision: str = "no"
    not_here: list[tuple[str, str]] = field(default_factory=list)
    data_only: bool = False

    def as_dict(self) -> dict:
        """JSON-friendly form for the API: ``{"ok", "problems": [{"field", "message"}], "effective"}``."""
        return {
            "ok": self.ok,
            "problems": [{"field": f, "message": m} for f, m in self.problems],
            "effective": self.effective,
            "not_here": [{"field": f, "message": m} for f, m in self.not_here],
        }

    def markdown(self) -> str:
        """The validation panel's text: a tick, or one line per named problem."""
        if self.ok or self.not_here and not self.problems:
            text = "✓ **Valid preset** — every field checked by the engine."
            if self.not_here:
                what = "Its data is not here" if self.data_only else "It cannot run on this machine"
                text += f"\n\n⚠ **{what}** — set these before previewing or launching:\n"
                text += "\n".join(f"- `{f}`: {md_text(' '.join(m.splitlines()))}" for f, m in self.not_here)
            return text
        lines = [f"✗ **{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}** — fix before saving or launching:"]
        lines += [f"- `{f}`: {md_text(' '.join(m.splitlines()))}" for f, m in self.problems]
        return "\n".join(lines)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]~])")


def md_text(text: str) -> str:
    """``text`` to be shown as it is inside Markdown: ``&``, ``<`` and ``>`` as HTML entities, and the
    characters that Markdown would swallow or turn into formatting (backslash, backtick, ``*``, ``_``,
    brackets, ``~``) escaped with a backslash."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))


def ok_md(text: str) -> str:
    """A success line for a message area of the page."""
    return f"✓ {text}"


def err_md(text: object) -> str:
    """An error line for a message area of the page (the message shown as text, not as Markdown: :func:`md_text`)."""
    return f"✗ {md_text(str(text))}"


def validate(text: str, source: str | None = None, paths: bool = False, env: dict[str, str] | None = None) -> Validation:
    """Validate preset text with the engine (:func:`rsd_engine.io.config.loads` and the operator checks of
    :func:`rsd_engine.assembly.check`), then what a valid preset needs from this machine
    (:func:`rsd_engine.io.config.check_here`: its paths and memory), as ``rsd-engine validate`` does; the
    latter are kept apart in ``not_here`` ("valid preset; its data is not here"). They make the preset
    not ``ok`` only with ``paths``: saving does not need them (a copied GPU preset is saved first, then
    its ``data.path`` edited); preview and launch do.

    A plug-in operator (an import path or a registered name) is never imported here: its preset is
    checked by ``rsd-engine validate`` in a child process (environment ``env``), so the page shows the
    same field-named errors as the command line.

    Never raises for a bad preset: problems come back named by field. An unexpected engine
    exception is reported as a problem of field ``"(engine)"``.
    """
    from rsd_engine.io import config

    try:
        preset = config.loads(text or "", source=source)
        if is_plugin(preset.corruption.operator):
            return _engine_validate(text, paths, env)
        from rsd_engine import assembly

        assembly.check(preset, source)
    except config.PresetError as e:
        return Validation(False, [(str(f), str(m)) for f, m in e.problems])
    except Exception as e:  # noqa: BLE001 - shown to the user instead of a stack trace
        return Validation(False, [("(engine)", f"{type(e).__name__}: {e}")])
    try:
        effective = config.dumps(preset)
    except Exception as e:  # noqa: BLE001
        return Validation(False, [("(engine)", f"cannot write the effective preset: {type(e).__name__}: {e}")])
    try:
        config.check_here(preset, source)
        not_here, data_only = [], False
    except config.NotHereError as e:
        not_here, data_only = [(str(f), str(m)) for f, m in e.problems], e.data_only
    acc = getattr(preset, "accelerate", None)
    return Validation(
        not (paths and not_here),
        list(not_here) if paths else [],
        effective,
        run_name=str(getattr(getattr(preset, "run", None), "name", "") or ""),
        num_processes=int(getattr(acc, "num_processes", 1) or 1),
        mixed_precision=str(getattr(acc, "mixed_precision", "no") or "no"),
        not_here=not_here,
        data_only=data_only,
    )


def _valid(effective: str) -> Validation:
    data = tomli.loads(effective)
    acc = data.get("accelerate", {})
    return Validation(
        True,
        [],
        effective,
        run_name=str(data.get("run", {}).get("name", "") or ""),
        num_processes=int(acc.get("num_processes", 1) or 1),
        mixed_precision=str(acc.get("mixed_precision", "no") or "no"),
    )


def is_plugin(operator: str) -> bool:
    """Whether ``corruption.operator`` names a plug-in (not one of the engine's built-in operators)."""
    from rsd_engine.operators.registry import OPERATORS

    return operator not in OPERATORS


#: Seconds a child ``rsd-engine`` call of the form may take (it imports torch and the plug-in).
ENGINE_TIMEOUT_S = 120.0


def _engine(args: list[str], text: str, env: dict[str, str] | None) -> subprocess.CompletedProcess:
    """``python -m rsd_engine ARGS PRESET`` on ``text`` written to a temporary file."""
    with tempfile.TemporaryDirectory(prefix="rsd-form-") as tmp:
        path = Path(tmp) / "preset.toml"
        path.write_text(text or "", encoding="utf-8")
        cmd = [sys.executable, "-m", "rsd_engine", args[0], str(path), *args[1:]]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=ENGINE_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL)


def _engine_problems(proc: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """The ``(field, message)`` lines of an engine error (``error: invalid preset …:`` then ``  field: message``)."""
    lines = (proc.stderr or "").strip().splitlines()
    problems = [tuple(ln.strip().split(": ", 1)) for ln in lines[1:] if ln.startswith("  ") and ": " in ln]
    return problems or [("(engine)", " ".join(ln.removeprefix("error: ") for ln in lines[-4:]) or f"exit code {proc.returncode}")]


def _engine_validate(text: str, paths: bool, env: dict[str, str] | None) -> Validation:
    try:
        proc = _engine(["validate", *([] if paths else ["--no-paths"])], text, env)
    except subprocess.TimeoutExpired:
        return Validation(False, [("(engine)", f"rsd-engine validate took longer than {ENGINE_TIMEOUT_S:.0f} s")])
    if proc.returncode != 0:
        return Validation(False, _engine_problems(proc))
    return _valid(proc.stdout)


_PLUGIN_FIELDS: dict[str, tuple[FormField, ...]] = {}


def plugin_fields(text: str, env: dict[str, str] | None = None) -> tuple[FormField, ...]:
    """The form fields of a plug-in operator's ``[corruption.params]`` (typed, with defaults and
    ranges), from its schema as ``rsd-engine check-operator PRESET --schema`` prints it (a child
    process: the plug-in is never imported here). Empty for built-in operators, unreadable TOML, or a
    plug-in whose schema cannot be read (its error is in :func:`validate`). Cached per operator.
    """
    try:
        op = parse_toml(text).get("corruption", {}).get("operator")
    except FieldInputError:
        return ()
    if not isinstance(op, str) or not is_plugin(op):
        return ()
    if op not in _PLUGIN_FIELDS:
        try:
            proc = _engine(["check-operator", "--schema"], tomlkit.dumps({"corruption": {"operator": op}}), env)
        except subprocess.TimeoutExpired:
            return ()
        if proc.returncode != 0:
            return ()
        _PLUGIN_FIELDS[op] = tuple(
            FormField(
                path=("corruption", *e["key"].split(".")),
                type=e["type"],
                default=e.get("default"),
                nullable=False,
                choices=tuple(e.get("choices") or ()),
                description=e.get("description") or f"parameter of {op}" + (" (required)" if e.get("required") else ""),
                bounds={k: e[k] for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum") if k in e},
                operator=op,
            )
            for e in json.loads(proc.stdout)
        )
    return _PLUGIN_FIELDS[op]
