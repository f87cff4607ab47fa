"""The workbench's actions as plain Python: what every named endpoint and every button calls.

:class:`Workbench` ties the preset store, the validator, the launcher and the run reader to one
presets folder and one runs folder. Every method takes and returns plain values (text, numbers,
dicts, paths) and raises :class:`WorkbenchError` with a message meant for the person at the page.
Nothing here imports Gradio.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from rsd_engine.io.runs import EXPORT_MODELS, EXPORT_WEIGHTS, FINAL_STATES, RunDir, atomic_write_bytes, default_run_folder, read_json_object

from . import preset_edit, run_reader
from .launcher import RECORD_NAME, Launcher, LaunchError
from .names import BadName, check_name, inside
from .presets_store import PresetStore, StoreError, default_shipped_dir
from .preview_labels import labelled_preview, row_labels

__all__ = ["Workbench", "WorkbenchError", "default_presets_dir"]


class WorkbenchError(ValueError):
    """An action was refused or failed; ``str(err)`` is the message shown to the user."""


def default_presets_dir() -> Path:
    """``~/.rsd-workbench/presets``, the default folder of user presets."""
    return Path.home() / ".rsd-workbench" / "presets"


def _wrap(fn):
    """Turn the store/launcher/name errors into :class:`WorkbenchError`."""

    def inner(*args, **kwargs):
        """Call the wrapped function, translating its errors."""
        try:
            return fn(*args, **kwargs)
        except (BadName, StoreError, LaunchError, preset_edit.FieldInputError, KeyError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            raise WorkbenchError(str(msg)) from None

    inner.__name__, inner.__doc__, inner.__wrapped__ = fn.__name__, fn.__doc__, fn
    return inner


class Workbench:
    """One workbench: a user presets folder, the shipped presets, a runs folder and the engine.

    Args:
        runs_dir: where runs are created and read (``./runs`` by default in :mod:`workbench.app`).
        presets_dir: the user's presets (created on first save).
        shipped_dir: read-only presets (default: the repository's ``presets/``).
        engine_cmd: command prefix for the engine CLI (default ``python -m rsd_engine``); tests
            pass a fake engine.
        grace_s: seconds between SIGTERM and SIGKILL when stopping a run.
        preview_timeout_s: limit of one preview computation.
        export_timeout_s: limit of one export (``rsd-engine export``).
        repeat_guard_s: a launch of the same preset text without a run name, less than this many
            seconds after the previous one, is refused as a repeated click.
    """

    def __init__(
        self,
        runs_dir: str | Path,
        presets_dir: str | Path | None = None,
        shipped_dir: str | Path | None = None,
        engine_cmd: list[str] | None = None,
        grace_s: float = 60.0,
        preview_timeout_s: float = 600.0,
        export_timeout_s: float = 600.0,
        repeat_guard_s: float = 30.0,
    ):
        self.runs_dir = Path(runs_dir).expanduser().resolve()
        self.store = PresetStore(shipped_dir or default_shipped_dir(), presets_dir or default_presets_dir())
        self.launcher = Launcher(self.runs_dir, engine_cmd=engine_cmd, grace_s=grace_s)
        self.preview_timeout_s = preview_timeout_s
        self.export_timeout_s = export_timeout_s
        self.repeat_guard_s = repeat_guard_s
        self.work_dir = self.runs_dir / ".workbench"
        self._last_launch: tuple[str, float, str] | None = None  # (preset text, monotonic time, run)
        self._launching = threading.Lock()

    def close(self) -> None:
        """Stop background threads. Runs keep going."""
        self.launcher.close()

    # -- presets -----------------------------------------------------------------------------
    def list_presets(self) -> list[dict]:
        """``[{"name", "kind"}]`` with kind ``shipped`` (read-only) or ``user``, shipped first."""
        return [{"name": p.name, "kind": p.kind} for p in self.store.list()]

    def preset_choices(self) -> list[tuple[str, str]]:
        """(label, name) pairs for the preset dropdown."""
        return [(p.label, p.name) for p in self.store.list()]

    @_wrap
    def preset_kind(self, name: str) -> str | None:
        """``shipped``, ``user`` or ``None``.

        Raises:
            WorkbenchError: not a plain name.
        """
        return self.store.kind(name)

    @_wrap
    def preset_text(self, name: str) -> str:
        """The TOML text of preset ``name``.

        Raises:
            WorkbenchError: a path instead of a name, or no such preset.
        """
        return self.store.read(name)

    def validate(self, text: str, paths: bool = False) -> preset_edit.Validation:
        """The engine's verdict on preset text, with its paths checked when ``paths`` (never raises;
        problems are named by field)."""
        return preset_edit.validate(text, paths=paths, env=self.launcher._env())

    @_wrap
    def set_field(self, text: str, field: str, value: Any) -> str:
        """``text`` with the dotted ``field`` set to ``value`` (a widget value or TOML literal text).

        Strings such as ``"30"``, ``"[16, 32]"`` or ``"true"`` are read according to the field's
        type; an empty value removes the key (the engine default applies).

        Raises:
            WorkbenchError: unknown field, a value that cannot be read, or TOML with a syntax error.
        """
        f = preset_edit.field_by_name(field)
        if isinstance(value, str) and f.type == "string" and f.nullable is False:
            new_value = value
        elif value is None or (isinstance(value, str) and not value.strip()):
            new_value = preset_edit.UNSET  # asked for by name through the API: the key is removed
        else:
            new_value = preset_edit.from_widget(f, value)
        return preset_edit.set_field(text, f.name, new_value)

    def _require_valid(self, text: str, action: str) -> preset_edit.Validation:
        v = self.validate(text, paths=action != "save")
        if not v.ok:
            lines = "; ".join(f"{f}: {m}" for f, m in v.problems)
            if v.problems == v.not_here:
                what = "its data is not here" if v.data_only else "it cannot run on this machine"
                raise WorkbenchError(f"cannot {action}: the preset is valid, but {what} — {lines}")
            raise WorkbenchError(f"cannot {action}: the preset has {len(v.problems)} problem(s) — {lines}")
        return v

    @_wrap
    def save_preset(self, name: str, text: str, overwrite: bool = True) -> str:
        """Validate ``text`` and save it as user preset ``name``; returns the name used.

        Raises:
            WorkbenchError: invalid preset (field-named problems), a path for a name, a shipped
                preset's name, or (``overwrite`` False) an existing name.
        """
        self._require_valid(text, "save")
        return self.store.save(name, text, overwrite=overwrite)

    @_wrap
    def duplicate_preset(self, source: str, target: str) -> str:
        """Copy preset ``source`` to the new user preset ``target``; returns ``target``.

        Raises:
            WorkbenchError: bad names, missing source, existing target.
        """
        return self.store.duplicate(source, target)

    @_wrap
    def delete_preset(self, name: str) -> None:
        """Delete user preset ``name``.

        Raises:
            WorkbenchError: a shipped or missing preset, or a path for a name.
        """
        self.store.delete(name)

    # -- drafts: unsaved edits survive a reload ---------------------------------------------------
    def _draft_path(self, name: str | None) -> Path:
        """``RUNS/.workbench/drafts/<preset>.toml`` (``unsaved`` for a preset without a name)."""
        return self.work_dir / "drafts" / f"{check_name(name, 'preset name') if name else 'unsaved'}.toml"

    def save_draft(self, name: str | None, text: str) -> None:
        """Keep ``text`` as the unsaved edits of preset ``name`` (atomically; replaces an earlier draft)."""
        atomic_write_bytes(self._draft_path(name), text.encode("utf-8"))

    def draft(self, name: str | None) -> tuple[str, float] | None:
        """The kept unsaved edits of preset ``name`` and when they were written (Unix time), or ``None``."""
        path = self._draft_path(name)
        try:
            return path.read_text(encoding="utf-8"), path.stat().st_mtime
        except OSError:
            return None

    def drafts(self) -> list[tuple[str | None, float]]:
        """Every kept draft as (preset name, or ``None`` for the unsaved preset; when written), newest first."""
        found = []
        for path in (self.work_dir / "drafts").glob("*.toml"):
            try:
                found.append((None if path.stem == "unsaved" else path.stem, path.stat().st_mtime))
            except OSError:
                continue
        return sorted(found, key=lambda item: -item[1])

    def drop_draft(self, name: str | None) -> None:
        """Forget the unsaved edits of preset ``name`` (saved, or discarded by the user)."""
        self._draft_path(name).unlink(missing_ok=True)

    # -- preview -------------------------------------------------------------------------------
    def preview(self, text: str, n: int = 16) -> tuple[Path, str]:
        """Run ``rsd_engine preview`` on ``text``: a PNG grid of clean | measurement | adjoint, each row
        under its label (:func:`workbench.preview_labels.labelled_preview`).

        The PNGs and a copy of the preset are kept in ``RUNS/.workbench/preview/`` (keyed by the
        preset text and n, so a second call is instant).

        Returns:
            (labelled PNG path, a Markdown description: data source, size and resolution; the operator
            with every setting it gets; what each row shows; the engine's grid size).

        Raises:
            WorkbenchError: invalid preset, or the engine failed (its error message is included).
        """
        v = self._require_valid(text, "preview")
        n = int(n)
        if not 1 <= n <= 64:
            raise WorkbenchError(f"n = {n}: preview shows 1 to 64 images")
        key = hashlib.sha256(f"{n}\n{v.effective}".encode()).hexdigest()[:16]
        folder = self.work_dir / "preview"
        folder.mkdir(parents=True, exist_ok=True)
        preset_path, png = folder / f"{key}.toml", folder / f"{key}.png"
        info_path = folder / f"{key}.txt"
        if not (png.is_file() and info_path.is_file()):
            preset_path.write_text(text, encoding="utf-8")
            proc = self._engine(["preview", str(preset_path), "--n", str(n), "--out", str(png)], self.preview_timeout_s, "preview")
            if not png.is_file():
                raise WorkbenchError(f"preview failed: the engine wrote no {png.name}")
            engine_lines = [
                ln
                for ln in (proc.stdout + "\n" + proc.stderr).splitlines()
                if ln.strip() and ln.strip() != str(png) and "Warning" not in ln
            ]
            info_path.write_text("\n".join(engine_lines[-12:]), encoding="utf-8")
        engine_text = info_path.read_text(encoding="utf-8")
        labelled = labelled_preview(png, row_labels(engine_text), folder / f"{key}-labelled.png")
        return labelled, self._preview_info(v.effective, engine_text, n, png)

    def _engine(self, args: list[str], timeout_s: float, action: str) -> subprocess.CompletedProcess:
        """Run the engine CLI with ``args`` and wait for it (stdout and stderr captured).

        Raises:
            WorkbenchError: it ran longer than ``timeout_s`` (and was stopped), or exited non-zero
                (the last lines of its error output are in the message; after a Python traceback only
                its last line, the whole output written to ``RUNS/.workbench/<action>-error.txt``).
        """
        cmd = [*self.launcher.engine_cmd, *args]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, env=self.launcher._env(), stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise WorkbenchError(f"{action} took longer than {timeout_s:.0f} s and was stopped") from None
        if proc.returncode != 0:
            output = (proc.stderr or proc.stdout or "").strip()
            if "Traceback (most recent call last)" in output:  # a crash: its last line here, the whole output in a file
                log = self.work_dir / f"{action.split()[0]}-error.txt"
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(output + "\n", encoding="utf-8")
                raise WorkbenchError(f"{action} failed: {output.splitlines()[-1]} (the engine's whole output: {log})")
            err = [ln.removeprefix("error: ") for ln in output.splitlines()[-8:]]
            raise WorkbenchError(f"{action} failed: " + (" ".join(err) or f"exit code {proc.returncode}"))
        return proc

    @staticmethod
    def _preview_info(effective: str, engine_text: str, n: int, png: Path) -> str:
        data = preset_edit.parse_toml(effective)
        d, c = data.get("data", {}), data.get("corruption", {})
        size = "all training images" if d.get("max_images") is None else f"first {d['max_images']} training images"
        settings = c.get("params") or c.get(str(c.get("operator")))  # a plug-in's [corruption.params] or the built-in's table
        settings = settings if isinstance(settings, dict) else {}
        rows = row_labels(engine_text)
        lines = [
            f"**Data:** `{d.get('source')}`{' at ' + repr(d['path']) if d.get('path') else ''} · {size} · "
            f"resolution {d.get('resolution')}×{d.get('resolution')} · {d.get('channels')} channel(s)",
            f"**Corruption:** `{c.get('operator')}` · noise σ = {c.get('noise_sigma')} (on [-1, 1]) · seed {c.get('seed')}",
            "**Operator settings:** "
            + (" · ".join(f"{k} = {preset_edit.md_text(str(val))}" for k, val in settings.items()) or "none (the operator's defaults)"),
            f"**Rows** ({n} held-out images each, top to bottom): "
            + ("; ".join(f"{i + 1}. {preset_edit.md_text(t)}" for i, t in enumerate(rows)) or "see the engine's output below"),
        ]
        if c.get("operator") == "multicoil_mri":
            lines.append("The k-space is simulated from real slices with synthetic coils.")
        try:
            from PIL import Image

            with Image.open(png) as im:
                lines.append(f"**Grid:** {im.width}×{im.height} px, mode {im.mode}, tiles shown enlarged without smoothing.")
        except Exception:  # noqa: BLE001 - informative only
            pass
        if engine_text.strip():
            lines.append("**Engine says:**\n```\n" + engine_text.strip() + "\n```")
        return "\n\n".join(lines)

    # -- runs ----------------------------------------------------------------------------------
    def default_run_name(self, preset_run_name: str) -> str:
        """``<run.name>-<YYYYmmdd-HHMMSS>``, made unique in the runs folder (the engine's
        :func:`rsd_engine.io.runs.default_run_folder`)."""
        return default_run_folder(preset_run_name or "run", lambda name: (self.runs_dir / name).exists())

    @_wrap
    def launch(self, text: str, run_name: str = "") -> dict:
        """Validate ``text`` and start a run (in its own process group).

        Args:
            text: preset TOML.
            run_name: folder name in the runs folder; empty = ``<run.name>-<date-time>``.

        Returns:
            ``{"run", "pid", "command"}``.

        Raises:
            WorkbenchError: invalid preset (named fields), bad or taken run name, engine not startable,
                or a repeated launch: the same text without a run name less than ``repeat_guard_s``
                after the previous launch, running or not (a double click starts one run).
        """
        v = self._require_valid(text, "launch")
        named = bool((run_name or "").strip())
        with self._launching:
            last = self._last_launch
            if not named and last and last[0] == text and time.monotonic() - last[1] < self.repeat_guard_s:
                state = "is running" if self.launcher.is_alive(last[2]) else "has ended"
                raise WorkbenchError(
                    f"not launched again: {last[2]} was started from this same preset "
                    f"{time.monotonic() - last[1]:.0f} s ago and {state}. To start a second run of it, "
                    f"give a run name (or launch again after {self.repeat_guard_s:.0f} s)"
                )
            name = check_name(run_name, "run name") if named else self.default_run_name(v.run_name)
            info = self.launcher.launch(text, name, v.num_processes, v.mixed_precision)
            self._last_launch = (text, time.monotonic(), info["run"])
        return info

    @_wrap
    def stop(self, run: str, wait_s: float = 5.0) -> dict:
        """Stop a run: SIGTERM to its process group, SIGKILL after the grace period.

        Returns:
            ``{"run", "state"}``; ``state`` is ``"stopping"`` while the processes still end.

        Raises:
            WorkbenchError: no such run, or not running.
        """
        state = self.launcher.stop(run, wait_s=wait_s)
        return {"run": check_name(run), "state": state}

    @_wrap
    def resume(self, run: str) -> dict:
        """Continue a stopped or failed run from its latest checkpoint, in a new process group.

        Raises:
            WorkbenchError: no such run, still running, done already, or no checkpoint yet.
        """
        run = check_name(run, "run name")
        frozen = self.launcher.run_dir(run) / "preset.toml"
        nproc, mp = 1, "no"
        if frozen.is_file():
            v = self.validate(frozen.read_text(encoding="utf-8"))
            if v.ok:
                nproc, mp = v.num_processes, v.mixed_precision
        return self.launcher.resume(run, nproc, mp)

    @_wrap
    def delete_run(self, run: str, confirm: str) -> None:
        """Delete a run folder; ``confirm`` must repeat the run name.

        Raises:
            WorkbenchError: confirmation missing or different, running, or no such run.
        """
        run = check_name(run, "run name")
        if (confirm or "").strip() != run:
            raise WorkbenchError(f"not deleted: confirm by giving the run name {run!r} again")
        self.launcher.delete(run)

    def run_names(self) -> list[str]:
        """Runs in the runs folder, newest first."""
        return run_reader.list_runs(self.runs_dir)

    def compare_choices(self) -> list[str]:
        """What the Live plots tab can draw: the runs (:meth:`run_names`), then each study folder as
        ``"<study>/"`` (all its runs at once) followed by its runs ``"<study>/<setting>"``
        (:func:`workbench.run_reader.list_studies`)."""
        studies = run_reader.list_studies(self.runs_dir)
        return self.run_names() + [name for study, runs in studies.items() for name in (f"{study}/", *runs)]

    def expand_runs(self, names: list[str]) -> list[str]:
        """``names`` with every study entry ``"<study>/"`` replaced by the study's runs, repeats dropped,
        order kept (a study that no longer exists expands to nothing)."""
        studies = run_reader.list_studies(self.runs_dir)
        out = []
        for name in names:
            out += studies.get(name[:-1], []) if name.endswith("/") else [name]
        return list(dict.fromkeys(out))

    @_wrap
    def run_dir(self, run: str) -> Path:
        """The folder of run ``run``: a run of the runs folder, or a study's run ``"<study>/<setting>"``
        (each part a plain name, read-only uses: plots, tables).

        Raises:
            WorkbenchError: a path for a name, or no such run.
        """
        parts = (run or "").split("/")
        if "" in parts or len(parts) == 1:
            check_name(run, "run name")  # names what is wrong with an absolute path or an empty part
        if len(parts) > 1 + run_reader.STUDY_DEPTH:
            raise WorkbenchError(f"run {run!r}: at most {run_reader.STUDY_DEPTH} folders below a study")
        path = inside(self.runs_dir, "/".join(check_name(part, "run name") for part in parts))
        if not path.is_dir():
            raise WorkbenchError(f"no run named {run!r}")
        return path

    @_wrap
    def export(self, run: str, model: str = "generator", weights: str = "ema", replace: bool = False) -> dict:
        """Export a run's generator (or teacher) as a diffusers pipeline folder inside the run folder,
        ``<run>/export-<model>`` (``-raw`` appended for raw weights), with ``rsd-engine export``.

        Args:
            run: the run's name.
            model: ``generator`` | ``teacher``.
            weights: ``ema`` | ``raw``.
            replace: replace an earlier export in that folder.

        Returns:
            ``{"run", "model", "weights", "folder"}``, the folder as an absolute path (the key is not
            "path": Gradio's client would take the dict for a file to download).

        Raises:
            WorkbenchError: a path for a name, no such run, an unknown model or weights, or the engine
                refused (no final generator yet, an earlier export without ``replace`` …).
        """
        if model not in EXPORT_MODELS or weights not in EXPORT_WEIGHTS:
            raise WorkbenchError(
                f"model {model!r}, weights {weights!r}: allowed models {', '.join(EXPORT_MODELS)}; weights {', '.join(EXPORT_WEIGHTS)}"
            )
        folder = self.run_dir(run)
        out = RunDir(folder).export_folder(model, weights)
        if out.is_dir() and any(out.iterdir()) and not replace:
            raise WorkbenchError(f"{run} already has an export at {out}; tick “replace” to write it again")
        self._engine(
            ["export", str(folder), "--out", str(out), "--model", model, "--weights", weights, *(["--force"] if replace else [])],
            self.export_timeout_s,
            "export",
        )
        return {"run": run, "model": model, "weights": weights, "folder": str(out)}

    def run_rows(self) -> list[dict]:
        """One table row per run (see :func:`workbench.run_reader.run_row`), dead runs reconciled."""
        rows = []
        for name in self.run_names():
            try:
                self.launcher.reconcile(name)
                state = self.launcher.state(name)
            except (OSError, BadName):
                state = "unknown"
            rows.append(run_reader.run_row(self.runs_dir / name, state_override=state))
        return rows

    @_wrap
    def run_status(self, run: str) -> dict:
        """status.json of a run, with ``state`` filled in (``starting`` before the engine writes it),
        ``alive`` telling whether any of its processes still runs, ``exit_code`` (the engine process's,
        once a workbench saw it end; else ``None``) and ``has_checkpoint`` (whether Resume has a
        checkpoint to continue from)."""
        path = self.run_dir(run)
        self.launcher.reconcile(run)
        folder = RunDir(path)
        status = folder.read_status()
        status["state"] = status.get("state") or self.launcher.state(run)
        status["alive"] = self.launcher.is_alive(run)
        status["exit_code"] = read_json_object(path / RECORD_NAME).get("exit_code")
        status["has_checkpoint"] = folder.has_checkpoint()
        status["run"] = run
        return status

    def run_events(self, run: str) -> list[dict]:
        """All events of a run (events.jsonl)."""
        return RunDir(self.run_dir(run)).read_events()

    def run_metrics(self, run: str) -> dict:
        """metrics.json of a run (``{}`` before evaluation)."""
        return RunDir(self.run_dir(run)).read_metrics()

    def log_tail(self, run: str, lines: int = 200) -> str:
        """The end of the run's log (and of console.txt when the run crashed)."""
        return run_reader.log_tail(self.run_dir(run), int(lines))

    def snapshots(self, run: str) -> list[float]:
        """kimg values (to the image) of the snapshot grids of a run."""
        return run_reader.snapshots(self.run_dir(run))

    def gallery(
        self, run: str, snapshot: float | None = None, models: tuple[str, ...] = run_reader.GALLERY_MODELS
    ) -> dict[str, Path | None]:
        """PNG grid per model (latest, or the snapshot at ``snapshot`` kimg); ``None`` where missing."""
        return run_reader.gallery_paths(self.run_dir(run), snapshot, models)

    def wait_state(self, run: str, states: tuple[str, ...] = FINAL_STATES, timeout_s: float = 60.0) -> str:
        """Poll until the run's state is one of ``states`` (or the timeout); returns the last state."""
        end = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < end:
            state = self.run_status(run)["state"]
            if state in states:
                return state
            time.sleep(0.5)
        return state
