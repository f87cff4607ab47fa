"""What the Presets tab shows after each event, as plain values (no Gradio).

The tab holds an :class:`Editor` (the TOML text, the preset it was loaded from, the form values that
could not be written into the TOML). Every event is a function here from the editor and the event's
input to an :class:`Outcome`: the new editor, the page to draw (:class:`PresetsPage`) and the
messages; :mod:`workbench.ui.presets_view` only turns an outcome into component updates.

Sync rule: a form edit changes exactly one key of the TOML text (comments and layout kept); a TOML
edit re-fills the form. A form value the TOML cannot hold (letters in a number box, an emptied
required field) leaves the TOML as it is and stays a problem of its field until fixed, so the page
never says "Valid preset" for something the TOML does not hold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from . import preset_edit as pe
from .api import Workbench, WorkbenchError
from .preset_edit import err_md, md_text, ok_md

__all__ = [
    "Editor",
    "PresetsPage",
    "PluginSlot",
    "Outcome",
    "PLUGIN_SLOTS",
    "render",
    "text_edited",
    "field_edited",
    "slot_edited",
    "load",
    "opened",
    "restore",
    "forget",
    "discard_and_load",
    "pick",
    "save",
    "save_as",
    "duplicate",
    "ask_delete",
    "delete",
    "launch_md",
    "current_md",
    "edited_text",
    "form_validation",
]

#: Parameter boxes of the plug-in group: a plug-in operator's ``[corruption.params]`` fields are shown in
#: these, typed and labelled from its schema (:func:`workbench.preset_edit.plugin_fields`).
PLUGIN_SLOTS = 8


@dataclass(frozen=True)
class Editor:
    """What the Presets tab holds between events.

    Attributes:
        text: the TOML in the editor.
        loaded: the text of the preset as loaded or last saved (``text != loaded``: unsaved edits).
        name: the preset's name (``None``: an unsaved preset).
        flagged: field → the problem its widget shows now (so only changed flags are re-sent).
        input_errors: field → message for form values that could not be written into the TOML.
    """

    text: str = ""
    loaded: str = ""
    name: str | None = None
    flagged: dict[str, str] = field(default_factory=dict)
    input_errors: dict[str, str] = field(default_factory=dict)

    @property
    def modified(self) -> bool:
        """Whether the page holds something the saved preset does not (edited text or unwritable form values)."""
        return edited_text(self.text, self.loaded) or bool(self.input_errors)


@dataclass(frozen=True)
class PluginSlot:
    """One parameter box of a plug-in operator (``visible=False``: an unused box)."""

    visible: bool = False
    label: str = ""
    info: str = ""
    error: bool = False
    value: str | None = None  # None: leave the box's value as it is (the box being typed in)


@dataclass(frozen=True)
class PresetsPage:
    """Everything the tab draws after an event that re-validates the editor's text.

    Attributes:
        text: new editor text to send, or ``None`` to leave the editor as it is (the TOML was typed).
        validation: Markdown verdict (engine problems and unwritable form values).
        effective: the effective preset (TOML), or a comment while invalid.
        current: the line naming the preset and whether it has unsaved changes.
        can_save: whether *Save changes* applies (a user preset).
        sections: section → (accordion title with its problem count, forced open).
        operator: the operator whose parameter group is shown (``None``: unreadable TOML, leave as is).
        plugin_title: title of the plug-in group ("" hides it); ``plugin_slots`` its boxes.
        fields: field → widget changes (``info``, ``error``, ``value``), only for widgets that change.
        launch: the Runs tab's line about what Launch would start; ``launch_ok`` whether it is valid.
    """

    text: str | None
    validation: str
    effective: str
    current: str
    can_save: bool
    sections: dict[str, tuple[str, bool]]
    operator: str | None
    plugin_title: str
    plugin_slots: tuple[PluginSlot, ...]
    fields: dict[str, dict[str, Any]]
    launch: str
    launch_ok: bool


@dataclass(frozen=True)
class Outcome:
    """The result of one event: each attribute left ``None`` leaves that part of the page unchanged.

    Attributes:
        editor: the editor after the event.
        page: a full re-draw (:class:`PresetsPage`).
        msg: the tab's message line ("" clears it).
        choices: the preset list's new selection, with fresh choices (``(name,)``; ``(None,)`` clears it).
        switch: ``(visible, question)`` of the "discard unsaved edits?" row; ``pending`` the preset it would load.
        confirm: ``(visible, question)`` of the "delete the preset?" row.
        clear_new_name: empty the "new preset name" box.
        launch_msg: the Runs tab's message about an earlier launch ("" clears it).
        restore: ``(visible, question)`` of the "restore the unsaved edits kept from before?" row;
            ``restore_name`` the preset those edits belong to (``None``: the unsaved preset).
    """

    editor: Editor | None = None
    page: PresetsPage | None = None
    msg: str | None = None
    choices: tuple[str | None] | None = None
    switch: tuple[bool, str] | None = None
    pending: str | None = None
    confirm: tuple[bool, str] | None = None
    clear_new_name: bool = False
    launch_msg: str | None = None
    restore: tuple[bool, str] | None = None
    restore_name: str | None = None


_HIDDEN = (False, "")


def render(
    wb: Workbench, ed: Editor, *, send_text: bool, refill: dict | None, edited: str | None = None, edited_slot: int | None = None
) -> tuple[Editor, PresetsPage]:
    """Validate ``ed.text`` and compute the page: verdict, effective TOML, section titles, field flags,
    the operator's group, the plug-in group, and (``refill``: the widgets' current values) widget
    values read back from the TOML.

    Args:
        send_text: whether the editor must be given ``ed.text`` (it changed by a form edit or a load).
        refill: field → the widget's value now; widgets whose value differs from the TOML's get it
            (``None``: leave every widget's value).
        edited: the field being typed in (never overwritten under the typist).
        edited_slot: the plug-in box being typed in.

    Returns:
        the editor with its new flags, and the page.
    """
    fields = pe.form_fields()
    names = {f.name for f in fields}
    val = form_validation(wb.validate(ed.text), ed.input_errors)
    kind = _safe_kind(wb, ed.name)
    problems: dict[str, str] = {}
    for fname, msg in val.problems:
        problems.setdefault(_field_of(fname, msg, names), msg)
    per_section: dict[str, int] = {}
    for fname in problems:
        per_section[fname.split(".")[0]] = per_section.get(fname.split(".")[0], 0) + 1
    sections = {}
    for section in dict.fromkeys(f.section for f in fields):
        title, k = pe.SECTIONS[section], per_section.get(section, 0)
        sections[section] = (f"{title} — ⚠ {k} problem{'s' if k > 1 else ''}" if k else title, bool(k))
    data = _parsed(ed.text)
    operator = (
        pe.effective_value(data, pe.field_by_name("corruption.operator")) if data is not None and "corruption.operator" in names else None
    )
    flagged, changes = {}, {}
    for f in fields:
        msg = problems.get(f.name)
        if msg:
            flagged[f.name] = msg
        upd: dict[str, Any] = {}
        if ed.flagged.get(f.name) != msg:
            upd.update(info=f"⚠ {msg} — {f.help_text()}" if msg else f.help_text(), error=bool(msg))
        if refill is not None and data is not None:
            new_val = pe.to_widget(f, pe.effective_value(data, f))
            if f.name != edited and not _same(refill.get(f.name), new_val):
                upd["value"] = new_val
        if upd:
            changes[f.name] = upd
    pfields = pe.plugin_fields(ed.text, wb.launcher._env())[:PLUGIN_SLOTS]
    ed = replace(ed, flagged=flagged)
    page = PresetsPage(
        text=ed.text if send_text else None,
        validation=val.markdown(),
        effective=val.effective if val.ok else "# (shown once the preset is valid)",
        current=current_md(ed.name, kind, ed.modified),
        can_save=kind == "user",
        sections=sections,
        operator=operator,
        plugin_title=f"**Parameters of plug-in `{operator}`** (from its schema; typed, with defaults)" if pfields else "",
        plugin_slots=tuple(_slot(f, problems.get(f.name), data if i != edited_slot else None) for i, f in enumerate(pfields)),
        fields=changes,
        launch=launch_md(ed.name, ed.modified, val),
        launch_ok=val.ok,
    )
    return ed, page


def _slot(f: pe.FormField, problem: str | None, data: dict | None) -> PluginSlot:
    """A plug-in parameter's box; its value read from ``data`` (``None``: keep what is typed)."""
    value = None
    if data is not None:
        shown = pe.to_widget(f, pe.effective_value(data, f))
        value = "" if shown is None else str(shown).lower() if isinstance(shown, bool) else str(shown)
    return PluginSlot(True, f"{f.label} ({f.type})", f"⚠ {problem} — {f.help_text()}" if problem else f.help_text(), bool(problem), value)


def _redraw(wb: Workbench, ed: Editor, **kwargs) -> Outcome:
    """An outcome that re-draws the page for ``ed`` and clears the messages and the question rows."""
    ed, page = render(wb, ed, **kwargs)
    return Outcome(editor=ed, page=page, msg="", switch=_HIDDEN, launch_msg="")


def _edited(wb: Workbench, ed: Editor, **kwargs) -> Outcome:
    """:func:`_redraw` after an edit, keeping the editor's text as the preset's draft while it differs
    from the saved preset (so a reload or a closed tab loses nothing: :func:`opened`)."""
    if edited_text(ed.text, ed.loaded):
        wb.save_draft(ed.name, ed.text)
    else:
        wb.drop_draft(ed.name)
    return replace(_redraw(wb, ed, **kwargs), restore=_HIDDEN)


def text_edited(wb: Workbench, ed: Editor, text: str, widget_values: dict[str, Any]) -> Outcome:
    """The TOML editor was edited: re-fill the form (which replaces any unwritable form value) and validate."""
    return _edited(wb, replace(ed, text=text, input_errors={}), send_text=False, refill=widget_values)


def field_edited(wb: Workbench, ed: Editor, name: str, value: Any) -> Outcome:
    """Form field ``name`` was edited to ``value``: write it into the TOML and validate. A value that
    cannot be written leaves the TOML as it is and stays a problem of this field until fixed."""
    f = pe.field_by_name(name)
    errors = dict(ed.input_errors)
    try:
        text = pe.set_field(ed.text, name, pe.from_widget(f, value))
    except pe.FieldInputError as e:
        kept = pe.effective_value(_parsed(ed.text) or {}, f)
        keeps = f"{name} unset (the engine's default applies)" if kept is None else f"{name} = {pe.to_widget(f, kept)}"
        errors[name] = f"{e.args[0].split(': ', 1)[-1]}; the TOML keeps {keeps}"
        return _redraw(wb, replace(ed, input_errors=errors), send_text=False, refill=None)
    errors.pop(name, None)
    return _edited(wb, replace(ed, text=text, input_errors=errors), send_text=True, refill=None, edited=name)


def slot_edited(wb: Workbench, ed: Editor, index: int, value: Any) -> Outcome:
    """Plug-in box ``index`` was edited: write it into ``[corruption.params]`` as its schema's type, and validate."""
    pfields = pe.plugin_fields(ed.text, wb.launcher._env())
    if index >= len(pfields):
        return _redraw(wb, ed, send_text=False, refill=None)
    f = pfields[index]
    errors = dict(ed.input_errors)
    try:
        text = pe.set_field(ed.text, f.name, pe.from_widget(f, value))
    except pe.FieldInputError as e:
        errors[f.name] = e.args[0].split(": ", 1)[-1]
        return _redraw(wb, replace(ed, input_errors=errors), send_text=False, refill=None, edited_slot=index)
    errors.pop(f.name, None)
    return _edited(wb, replace(ed, text=text, input_errors=errors), send_text=True, refill=None, edited_slot=index)


def load(wb: Workbench, name: str) -> Outcome:
    """Load preset ``name`` into the editor and the form (every widget re-filled and re-flagged)."""
    try:
        text = wb.preset_text(name)
    except WorkbenchError as e:
        return Outcome(msg=err_md(e))
    flag_all = {f.name: "?" for f in pe.form_fields()}
    out = _redraw(wb, Editor(text=text, loaded=text, name=name, flagged=flag_all), send_text=True, refill={})
    offer = opened(wb, name)
    return replace(out, confirm=_HIDDEN, pending=None, restore=offer.restore, restore_name=offer.restore_name)


def opened(wb: Workbench, name: str | None = None, *, newest: bool = False) -> Outcome:
    """Offer kept unsaved edits that differ from their saved preset: those of preset ``name`` (a preset
    was loaded), or with ``newest`` the most recent of any preset (a page opened)."""
    candidates = wb.drafts() if newest else [(name, 0.0)]
    for draft_name, _ in candidates:
        kept = wb.draft(draft_name)
        try:
            saved = wb.preset_text(draft_name) if draft_name else ""
        except WorkbenchError:
            continue  # its preset is gone: nothing to restore it into
        if kept is not None and edited_text(kept[0], saved):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(kept[1]))
            label = md_text(draft_name or "the unsaved preset")
            return Outcome(restore=(True, f"Unsaved edits of **{label}** from {when} were kept. Restore them?"), restore_name=draft_name)
    return Outcome(restore=_HIDDEN)


def restore(wb: Workbench, name: str | None) -> Outcome:
    """Load preset ``name`` with its kept unsaved edits in the editor and the form."""
    kept = wb.draft(name)
    if kept is None:
        return Outcome(restore=_HIDDEN, msg=err_md("no kept edits of this preset any more"))
    try:
        saved = wb.preset_text(name) if name else ""
    except WorkbenchError as e:
        return Outcome(restore=_HIDDEN, msg=err_md(e))
    flag_all = {f.name: "?" for f in pe.form_fields()}
    out = _redraw(wb, Editor(text=kept[0], loaded=saved, name=name, flagged=flag_all), send_text=True, refill={})
    return replace(out, restore=_HIDDEN, confirm=_HIDDEN, choices=(name,), msg=ok_md("Restored your unsaved edits"))


def forget(wb: Workbench, name: str | None) -> Outcome:
    """Discard the kept unsaved edits of preset ``name``."""
    wb.drop_draft(name)
    return Outcome(restore=_HIDDEN, msg=ok_md("Discarded the kept edits"))


def discard_and_load(wb: Workbench, ed: Editor, picked: str | None) -> Outcome:
    """The user chose to discard the edits of the current preset and load ``picked``."""
    if not picked:
        return Outcome(switch=_HIDDEN)
    wb.drop_draft(ed.name)
    return replace(load(wb, picked), choices=(picked,))


def pick(wb: Workbench, ed: Editor, picked: str) -> Outcome:
    """A preset was picked in the list: load it, unless the editor holds unsaved edits; then ask first
    (the list goes back to the preset being edited until the edits are discarded)."""
    if picked == ed.name:  # the list repeats its input event after a load; nothing to do
        return Outcome(pending=None)
    if not ed.modified:
        return load(wb, picked)
    return Outcome(
        choices=(ed.name,),
        pending=picked,
        switch=(
            True,
            f"**{ed.name or 'The unsaved preset'}** has unsaved edits. Load **{picked}** and discard them? "
            "(*Save as new preset* keeps them.)",
        ),
    )


def _saved(wb: Workbench, ed: Editor, saved: str, message: str) -> Outcome:
    """After a save: the saved text is the loaded one, so nothing is unsaved any more (here and in the
    Runs tab's launch line)."""
    wb.drop_draft(ed.name)
    wb.drop_draft(saved)
    ed = replace(ed, name=saved, loaded=ed.text)
    out = _redraw(wb, ed, send_text=False, refill=None)
    return replace(out, msg=ok_md(message), choices=(saved,))


def _unwritten(ed: Editor, action: str) -> str | None:
    """The refusal while the form holds values that are not in the TOML, else ``None``."""
    if not ed.input_errors:
        return None
    return err_md(f"not {action}: " + "; ".join(f"{k} {m}" for k, m in ed.input_errors.items()))


def save(wb: Workbench, ed: Editor) -> Outcome:
    """Save the editor's text over the current user preset (ready presets are read-only)."""
    if not ed.name:
        return Outcome(msg=err_md("this preset has no name yet: type one under New preset name and use Save as new preset"))
    if _unwritten(ed, "saved"):
        return Outcome(msg=_unwritten(ed, "saved"))
    try:
        if wb.preset_kind(ed.name) == "shipped":
            raise WorkbenchError(f"{ed.name!r} is a ready preset and read-only; type a new name and use Save as new preset")
        saved = wb.save_preset(ed.name, ed.text, overwrite=True)
    except WorkbenchError as e:
        return Outcome(msg=err_md(e))
    return _saved(wb, ed, saved, f"Saved {saved!r} in {wb.store.user_dir}")


def save_as(wb: Workbench, ed: Editor, new_name: str) -> Outcome:
    """Save the editor's text as a new user preset ``new_name`` and go on editing it."""
    if _unwritten(ed, "saved"):
        return Outcome(msg=_unwritten(ed, "saved"))
    try:
        saved = wb.save_preset(new_name, ed.text, overwrite=False)
    except WorkbenchError as e:
        return Outcome(msg=err_md(e))
    out = _saved(wb, ed, saved, f"Saved as {saved!r} in {wb.store.user_dir}; you are now editing it")
    return replace(out, clear_new_name=True)


def duplicate(wb: Workbench, ed: Editor, new_name: str) -> Outcome:
    """Copy the saved current preset to a new user preset ``new_name`` and open it."""
    try:
        target = wb.duplicate_preset(ed.name or "", new_name)
    except WorkbenchError as e:
        return Outcome(msg=err_md(e))
    out = load(wb, target)
    return replace(
        out,
        choices=(target,),
        clear_new_name=True,
        msg=ok_md(f"Copied the saved {ed.name!r} to {target!r} and opened it (edits not yet saved in {ed.name!r} were not copied)"),
    )


def ask_delete(wb: Workbench, ed: Editor) -> Outcome:
    """Ask before deleting the current preset (only user presets can be deleted)."""
    kind = _safe_kind(wb, ed.name)
    if kind != "user":
        why = "ready presets are read-only" if kind == "shipped" else "it is not saved"
        return Outcome(msg=err_md(f"cannot delete {ed.name!r}: {why}"), confirm=_HIDDEN)
    return Outcome(msg="", confirm=(True, f"Delete your preset **{md_text(ed.name)}** for good?"))


def delete(wb: Workbench, ed: Editor) -> Outcome:
    """Delete the current user preset (after confirmation) and load the quickstart (else the first preset)."""
    try:
        wb.delete_preset(ed.name)
    except WorkbenchError as e:
        return Outcome(msg=err_md(e), confirm=_HIDDEN)
    wb.drop_draft(ed.name)
    names = [n for _, n in wb.preset_choices()]
    nxt = "quickstart" if "quickstart" in names else (names[0] if names else None)
    out = load(wb, nxt) if nxt else Outcome()
    return replace(out, choices=(nxt,), msg=ok_md(f"Deleted {ed.name!r}"), confirm=_HIDDEN)


def launch_md(name: str | None, modified: bool, val: pe.Validation) -> str:
    """The Runs tab's line about the preset that Launch would start."""
    label = f"**{name}**" if name else "the unsaved preset"
    mod = " with unsaved edits" if modified else ""
    if not val.ok:
        return f"Launch starts {label}{mod} from the Presets tab — ✗ it has {len(val.problems)} problem(s); fix them there first."
    procs = f"{val.num_processes} process{'es' if val.num_processes > 1 else ''}"
    return (
        f"Launch starts {label}{mod} from the Presets tab — ✓ valid · run.name `{val.run_name}` · {procs} · mixed precision "
        f"`{val.mixed_precision}`"
    )


def current_md(name: str | None, kind: str | None, modified: bool) -> str:
    """The line naming the preset being edited, whether it is read-only, and whether it has unsaved changes."""
    if not name:
        return "Editing an **unsaved preset** — use *Save as new preset*."
    what = "ready preset, read-only — use *Save as new preset* to keep changes" if kind == "shipped" else "your preset"
    state = " · **unsaved changes**" if modified else " · saved"
    return f"Editing **{name}** ({what}){state}"


def edited_text(text: str | None, loaded: str | None) -> bool:
    """Whether the editor's text differs from the loaded preset's, ignoring line endings and
    trailing blanks (which the browser's editor may change on its own)."""

    def norm(t: str | None) -> str:
        return "\n".join(line.rstrip() for line in (t or "").strip().splitlines())

    return norm(text) != norm(loaded)


def form_validation(val: pe.Validation, input_errors: dict[str, str]) -> pe.Validation:
    """The page's verdict: the engine's on the TOML text, plus the form values that could not be
    written into it (``input_errors``, field → message). Valid only when both are clean, so the
    page never says "Valid preset" while a field shows something the TOML does not hold."""
    if not input_errors:
        return val
    engine = [(f, m) for f, m in val.problems if f not in input_errors]
    return pe.Validation(False, [*input_errors.items(), *engine])


def _parsed(text: str) -> dict | None:
    """The TOML as a dict, ``None`` when unreadable."""
    try:
        return pe.parse_toml(text)
    except pe.FieldInputError:
        return None


def _field_of(name: str, message: str, fields: set[str]) -> str:
    """The form field a problem belongs to. A problem the engine reports for a whole section
    (``network``) whose message starts with one of its keys is shown on that key's widget."""
    if "." in name or name.startswith("("):
        return name
    first = message.strip().split(" ", 1)[0].rstrip(":")
    candidate = f"{name}.{first}"
    return candidate if candidate in fields else name


def _safe_kind(wb: Workbench, name: str | None) -> str | None:
    """ "shipped", "user", or ``None`` (no name, or no such preset)."""
    if not name:
        return None
    try:
        return wb.preset_kind(name)
    except WorkbenchError:
        return None


def _same(a: Any, b: Any) -> bool:
    """Whether a widget's value and the TOML's show the same thing (empty = unset; numbers by value)."""
    if a == b:
        return True
    if a in (None, "") and b in (None, ""):
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)
