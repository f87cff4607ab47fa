"""Safe names for presets and runs, and paths that cannot leave their folder.

Every name that arrives from the page or the API passes through :func:`check_name` before it
becomes a path, and :func:`inside` resolves the final path and checks that it still lies in the
folder it belongs to (symbolic links included). Nothing in the workbench opens a path built from
user input any other way. The rule itself is the engine's (:data:`rsd_engine.io.runs.NAME_RULE`), the
one ``run.name`` obeys, so every run name the engine accepts is one the workbench shows.
"""

from __future__ import annotations

import re
from pathlib import Path

from rsd_engine.io.runs import NAME_RULE, is_valid_name

__all__ = ["BadName", "check_name", "inside", "NAME_RULE"]


class BadName(ValueError):
    """A preset or run name was refused (a path, '..', an absolute path or odd characters).

    The message says what was refused and what is allowed; the page shows it as is.
    """


def check_name(name: str | None, what: str = "name", suffix: str = "") -> str:
    """Return ``name`` (stripped, ``suffix`` such as ``".toml"`` removed) if it is a plain name.

    Args:
        name: the name typed by a person or sent by an API client.
        what: "preset name" or "run name", used in the message.
        suffix: an extension that may be typed and is dropped (``".toml"`` for presets).

    Raises:
        BadName: empty, absolute, containing '/', '\\' or '..', or characters outside
            :data:`NAME_RULE`.
    """
    text = (name or "").strip()
    if suffix and text.lower().endswith(suffix):
        text = text[: -len(suffix)]
    if not text:
        raise BadName(f"{what} is empty; allowed: {NAME_RULE}")
    if text.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:[\\/]", text):
        raise BadName(f"{what} {name!r} is an absolute path; give a plain name ({NAME_RULE})")
    if "/" in text or "\\" in text or ".." in text:
        raise BadName(f"{what} {name!r} is a path; give a plain name without '/', '\\' or '..' ({NAME_RULE})")
    if not is_valid_name(text):
        raise BadName(f"{what} {name!r} is not allowed; allowed: {NAME_RULE}")
    return text


def inside(folder: str | Path, relative: str) -> Path:
    """``folder / relative`` resolved, refusing any result outside ``folder`` (links followed).

    Raises:
        BadName: the resolved path escapes ``folder``.
    """
    root = Path(folder).resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise BadName(f"{relative!r} leads outside {root}")
    return path
