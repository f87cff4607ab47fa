"""Shipped and user presets on disk.

Shipped presets (the repository's ``presets/*.toml``) are read-only. User presets live in their own
folder (default ``~/.rsd-workbench/presets``). A name is the file name without ``.toml``; names are
unique across both folders, so a user preset may not take a shipped preset's name. Every name is
checked by :func:`workbench.names.check_name` and every path by :func:`workbench.names.inside`, so
no call reads or writes outside these two folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rsd_engine.io.runs import atomic_write_text

from .names import BadName, check_name, inside

__all__ = ["PresetStore", "PresetInfo", "StoreError", "default_shipped_dir"]


class StoreError(ValueError):
    """A preset operation was refused (read-only, missing, already exists); the message says why."""


@dataclass(frozen=True)
class PresetInfo:
    """One entry of the preset list: ``name`` and ``kind`` ("shipped" or "user")."""

    name: str
    kind: str

    @property
    def label(self) -> str:
        """What the dropdown shows, short enough for a phone: ``"quickstart · ready"`` (read-only) or
        ``"my-exp · yours"``."""
        return f"{self.name} · ready" if self.kind == "shipped" else f"{self.name} · yours"


def default_shipped_dir() -> Path:
    """The repository's ``presets/`` folder (beside the ``workbench`` package)."""
    return Path(__file__).resolve().parent.parent / "presets"


class PresetStore:
    """Lists, reads, saves and deletes presets.

    Args:
        shipped_dir: folder of read-only presets (may be missing: then there are none).
        user_dir: folder of the user's presets, created on first save.
    """

    def __init__(self, shipped_dir: str | Path, user_dir: str | Path):
        self.shipped_dir = Path(shipped_dir).expanduser().resolve()
        self.user_dir = Path(user_dir).expanduser().resolve()

    # -- listing -----------------------------------------------------------------------------
    def list(self) -> list[PresetInfo]:
        """All presets, shipped first, each group sorted by name. Files with odd names are skipped."""
        out: list[PresetInfo] = []
        seen: set[str] = set()
        for kind, folder in (("shipped", self.shipped_dir), ("user", self.user_dir)):
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.toml")):
                try:
                    name = check_name(path.stem)
                except BadName:
                    continue
                if name in seen:
                    continue
                seen.add(name)
                out.append(PresetInfo(name, kind))
        return out

    def kind(self, name: str) -> str | None:
        """``"shipped"``, ``"user"`` or ``None`` when no preset has this name.

        Raises:
            BadName: ``name`` is not a plain name.
        """
        name = check_name(name, "preset name", ".toml")
        if self.shipped_dir.is_dir() and inside(self.shipped_dir, f"{name}.toml").is_file():
            return "shipped"
        if self.user_dir.is_dir() and inside(self.user_dir, f"{name}.toml").is_file():
            return "user"
        return None

    # -- reading -------------------------------------------------------------------------------
    def read(self, name: str) -> str:
        """The TOML text of preset ``name``.

        Raises:
            BadName: not a plain name.
            StoreError: no such preset.
        """
        name = check_name(name, "preset name", ".toml")
        kind = self.kind(name)
        if kind is None:
            raise StoreError(f"no preset named {name!r}; available: {', '.join(p.name for p in self.list()) or '(none)'}")
        folder = self.shipped_dir if kind == "shipped" else self.user_dir
        return inside(folder, f"{name}.toml").read_text(encoding="utf-8")

    # -- writing -------------------------------------------------------------------------------
    def save(self, name: str, text: str, overwrite: bool = True) -> str:
        """Write ``text`` as user preset ``name`` (atomically) and return the name used.

        Args:
            name: plain name; ``.toml`` may be typed and is dropped.
            text: TOML text (the caller validates it).
            overwrite: when False, an existing user preset of that name is an error.

        Raises:
            BadName: not a plain name.
            StoreError: the name belongs to a shipped preset, or exists and ``overwrite`` is False.
        """
        name = check_name(name, "preset name", ".toml")
        kind = self.kind(name)
        if kind == "shipped":
            raise StoreError(f"{name!r} is a shipped preset and read-only; save under another name (Save as)")
        if kind == "user" and not overwrite:
            raise StoreError(f"a preset named {name!r} exists already; choose another name or use Save")
        self.user_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(inside(self.user_dir, f"{name}.toml"), text)
        return name

    def duplicate(self, source: str, target: str) -> str:
        """Copy preset ``source`` (shipped or user) to new user preset ``target``; returns ``target``.

        Raises:
            BadName, StoreError: as :meth:`read` and :meth:`save` (``target`` must be new).
        """
        return self.save(target, self.read(source), overwrite=False)

    def delete(self, name: str) -> None:
        """Delete user preset ``name``.

        Raises:
            BadName: not a plain name.
            StoreError: shipped (read-only) or missing.
        """
        name = check_name(name, "preset name", ".toml")
        kind = self.kind(name)
        if kind == "shipped":
            raise StoreError(f"{name!r} is a shipped preset and cannot be deleted")
        if kind is None:
            raise StoreError(f"no user preset named {name!r}")
        inside(self.user_dir, f"{name}.toml").unlink()
