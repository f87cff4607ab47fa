"""Presets view: the preset list, a form generated from the engine's schema, the raw TOML editor
(kept in sync both ways), validation as you type, save / save as / duplicate / delete, and the
effective preset.

Sync rule: a form edit changes exactly one key of the TOML text (comments and layout kept); a
TOML edit re-fills the form. Both use ``.input`` events (user edits only), so the programmatic
update of one side never echoes back.
"""

from __future__ import annotations

import re
from typing import Any

import gradio as gr

from .. import preset_edit as pe
from ..api import Workbench, WorkbenchError
from .common import View, confirm_row, err_md, ok_md

__all__ = ["build", "wire", "elem_id_for"]


def elem_id_for(f: pe.FormField) -> str:
    """HTML id of a field's widget, e.g. ``field-data-resolution`` (used by browser tests)."""
    return "field-" + re.sub(r"[^A-Za-z0-9]+", "-", f.name)


def _widget(f: pe.FormField, value: Any):
    common = dict(label=f.label, info=f.help_text(), elem_id=elem_id_for(f), interactive=True)
    v = pe.to_widget(f, value)
    if f.type == "enum" and f.choices:
        return gr.Dropdown(choices=list(f.choices), value=v, allow_custom_value=True, **common)
    if f.type == "boolean":
        return gr.Checkbox(value=bool(v), **common)
    if f.type in ("integer", "number") and not f.nullable:
        return gr.Number(value=v, precision=0 if f.type == "integer" else None, **common)
    # optional numbers are text boxes: an empty box means "unset" (a Number box would show 0)
    shown = "" if v is None else str(v)
    return gr.Textbox(value=shown, max_lines=1, placeholder="empty = default" if f.nullable else None, **common)


def build(wb: Workbench) -> View:
    """Create the Presets tab's components (call inside a ``gr.Tab``)."""
    fields = pe.form_fields()
    choices = wb.preset_choices()
    names = [n for _, n in choices]
    first = "quickstart" if "quickstart" in names else (names[0] if names else None)
    text = wb.preset_text(first) if first else ""
    try:
        data = pe.parse_toml(text)
    except pe.FieldInputError:
        data = {}
    v = View(fields=fields, initial_name=first, initial_text=text)
    v.name_state = gr.State(first)
    v.loaded_state = gr.State(text)
    v.flagged_state = gr.State({})
    # form values that could not be written into the TOML (field → message): problems until fixed
    v.input_errors = gr.State({})
    v.pending_switch = gr.State(None)  # the preset to load once unsaved edits may be discarded
    with gr.Row(equal_height=True, elem_id="preset-row"):
        v.dropdown = gr.Dropdown(choices=choices, value=first, label="Preset", scale=2, elem_id="preset-select",
                                 info="Pick a ready preset (read-only) or one of yours; picking one loads it into the editor.")
        v.current = gr.Markdown(_current_md(first, wb.preset_kind(first) if first else None, False), elem_id="preset-current")
    with gr.Row():
        with gr.Column(scale=3, elem_id="preset-form"):
            gr.Markdown("#### Form — every field with its unit, allowed range and default. Changes go straight into the TOML on the right.")
            v.widgets: dict[str, Any] = {}
            v.accordions: dict[str, gr.Accordion] = {}
            v.op_groups: dict[str, gr.Group] = {}
            current_op = pe.effective_value(data, pe.field_by_name("corruption.operator")) if "corruption.operator" in {f.name for f in fields} else None
            for section, title in pe.SECTIONS.items():
                sec = [f for f in fields if f.section == section]
                if not sec:
                    continue
                with gr.Accordion(title, open=section in ("data", "corruption"), elem_id=f"section-{section}") as acc:
                    v.accordions[section] = acc
                    plain = [f for f in sec if f.operator is None]
                    for i in range(0, len(plain), 2):
                        with gr.Row():
                            for f in plain[i : i + 2]:
                                v.widgets[f.name] = _widget(f, pe.effective_value(data, f))
                    ops = sorted({f.operator for f in sec if f.operator})
                    for op in ops:
                        with gr.Group(visible=op == current_op, elem_id=f"operator-{op}") as g:
                            gr.Markdown(f"**Parameters of `{op}`** (shown because corruption.operator = {op})")
                            for f in [f for f in sec if f.operator == op]:
                                v.widgets[f.name] = _widget(f, pe.effective_value(data, f))
                        v.op_groups[op] = g
        with gr.Column(scale=2, elem_id="preset-side"):
            v.validation = gr.Markdown(pe.validate(text).markdown() if text else "", elem_id="preset-validation")
            v.editor = gr.Code(value=text, language=None, label="Preset TOML — edit here or in the form; both stay in sync",
                               lines=22, max_lines=40, interactive=True, elem_id="preset-editor", wrap_lines=True)
            with gr.Row():
                v.save_btn = gr.Button("Save changes to this preset", variant="primary", elem_id="preset-save", scale=3,
                                       interactive=_can_save(wb.preset_kind(first) if first else None))
                v.delete_btn = gr.Button("Delete…", variant="stop", elem_id="preset-delete", scale=1, min_width=80)
            with gr.Group():
                v.new_name = gr.Textbox(label="New preset name", placeholder="e.g. my-blur-experiment", elem_id="preset-new-name", max_lines=1,
                                        info="for Save as (saves the editor's text) and Duplicate (copies the saved file)")
                with gr.Row():
                    v.save_as_btn = gr.Button("Save as new preset", elem_id="preset-save-as", min_width=80)
                    v.duplicate_btn = gr.Button("Duplicate saved preset", elem_id="preset-duplicate", min_width=80)
            confirm_row(v, "Yes, delete", "preset-delete-yes")
            with gr.Row(visible=False, elem_id="preset-switch-row") as v.switch_row:
                v.switch_md = gr.Markdown(elem_id="preset-switch-msg")
                v.switch_yes = gr.Button("Discard edits and load it", variant="stop", elem_id="preset-switch-yes")
                v.switch_no = gr.Button("Keep editing", elem_id="preset-switch-no")
            v.msg = gr.Markdown(elem_id="preset-msg")
            with gr.Accordion("Effective preset — every field, defaults filled in, as the engine will run it", open=False):
                v.effective = gr.Code(value=pe.validate(text).effective if text else "", language=None, interactive=False, lines=12, max_lines=40,
                                      elem_id="preset-effective")
    return v


def _can_save(kind: str | None) -> bool:
    """Whether *Save changes* applies: only to a user preset (ready presets are read-only, and an
    unsaved text has no name yet; both use *Save as new preset*)."""
    return kind == "user"


def _current_md(name: str | None, kind: str | None, modified: bool) -> str:
    if not name:
        return "Editing an **unsaved preset** — use *Save as new preset*."
    what = "ready preset, read-only — use *Save as new preset* to keep changes" if kind == "shipped" else "your preset"
    state = " · **unsaved changes**" if modified else " · saved"
    return f"Editing **{name}** ({what}){state}"


def wire(wb: Workbench, v: View, launch_summary=None, launch_msg=None) -> None:
    """Attach the Presets tab's events. ``launch_summary`` (Runs tab) is refreshed with validation;
    ``launch_msg`` (Runs tab), a message about an earlier launch, is cleared by any edit of the preset."""
    fields = v.fields
    widget_list = [v.widgets[f.name] for f in fields if f.name in v.widgets]
    field_list = [f for f in fields if f.name in v.widgets]
    accordions = list(v.accordions.values())
    groups = list(v.op_groups.values())
    extra = [c for c in (launch_summary, launch_msg) if c is not None]
    render_outputs = [v.editor, v.validation, v.effective, v.current, v.save_btn, v.flagged_state, v.input_errors, v.msg, v.switch_row,
                      *accordions, *groups, *widget_list, *extra]

    def render(text: str, loaded: str, name: str | None, flagged: dict, *, set_text: bool, refill: dict | None, edited: str | None = None,
               input_errors: dict | None = None) -> dict:
        """Updates after any change: validation (the engine's problems and the form values that
        could not be written, ``input_errors``), effective TOML, section badges, field flags,
        operator groups, and (``refill``) widget values from the TOML. Earlier messages are cleared."""
        out: dict = {}
        input_errors = dict(input_errors or {})
        if set_text:
            out[v.editor] = text
        val = form_validation(wb.validate(text), input_errors)
        out[v.validation] = val.markdown()
        out[v.effective] = val.effective if val.ok else "# (shown once the preset is valid)"
        kind = _safe_kind(wb, name)
        modified = edited_text(text, loaded) or bool(input_errors)
        out[v.current] = _current_md(name, kind, modified)
        out[v.save_btn] = gr.Button(interactive=_can_save(kind))
        out[v.input_errors] = input_errors
        out[v.msg] = ""
        out[v.switch_row] = gr.Row(visible=False)
        problems: dict[str, str] = {}
        for fname, msg in val.problems:
            problems.setdefault(_field_of(fname, msg, v.widgets), msg)
        per_section: dict[str, int] = {}
        for fname in problems:
            per_section[fname.split(".")[0]] = per_section.get(fname.split(".")[0], 0) + 1
        for section, acc in v.accordions.items():
            title = pe.SECTIONS[section]
            k = per_section.get(section, 0)
            out[acc] = gr.Accordion(label=f"{title} — ⚠ {k} problem{'s' if k > 1 else ''}" if k else title, **({"open": True} if k else {}))
        try:
            data = pe.parse_toml(text)
        except pe.FieldInputError:
            data = None
        if data is not None and "corruption.operator" in v.widgets:
            op = pe.effective_value(data, pe.field_by_name("corruption.operator"))
            for name_, g in v.op_groups.items():
                out[g] = gr.Group(visible=name_ == op)
        new_flagged = {}
        for f in field_list:
            w = v.widgets[f.name]
            msg = problems.get(f.name)
            if msg:
                new_flagged[f.name] = msg
            upd: dict = {}
            if flagged.get(f.name) != msg:
                upd["info"] = f"⚠ {msg} — {f.help_text()}" if msg else f.help_text()
                upd["elem_classes"] = ["field-error"] if msg else []
            if refill is not None and data is not None:
                new_val = pe.to_widget(f, pe.effective_value(data, f))
                if f.name != edited and not _same(refill.get(f.name), new_val):
                    upd["value"] = new_val
            if upd:
                out[w] = gr.update(**upd)
        out[v.flagged_state] = new_flagged
        if launch_summary is not None:
            out[launch_summary] = launch_md(name, modified, val)
        if launch_msg is not None:
            out[launch_msg] = ""
        return out

    # -- TOML editor → form --------------------------------------------------------------------
    def on_text(text, loaded, name, flagged, *values):
        """TOML editor edited: re-fill the form (which replaces any unreadable form value) and validate."""
        return render(text, loaded, name, flagged or {}, set_text=False, refill=dict(zip([f.name for f in field_list], values)))

    v.editor.input(on_text, [v.editor, v.loaded_state, v.name_state, v.flagged_state, *widget_list], render_outputs,
                   trigger_mode="always_last", show_progress="hidden", api_visibility="private")

    # -- form → TOML editor --------------------------------------------------------------------
    for f in field_list:
        def on_field(text, loaded, name, flagged, input_errors, value, _f=f):
            """Form field edited: write it into the TOML and validate. A value that cannot be written
            (letters in a number box, an emptied required field) leaves the TOML as it is and stays a
            problem of this field until it is fixed."""
            errors = dict(input_errors or {})
            try:
                new_text = pe.set_field(text, _f.name, pe.from_widget(_f, value))
            except pe.FieldInputError as e:
                kept = pe.effective_value(_parsed(text), _f)
                errors[_f.name] = f"{e.args[0].split(': ', 1)[-1]}; the TOML keeps {_f.name} = {pe.to_widget(_f, kept)}"
                return render(text, loaded, name, flagged or {}, set_text=False, refill=None, input_errors=errors)
            errors.pop(_f.name, None)
            return render(new_text, loaded, name, flagged or {}, set_text=True, refill=None, edited=_f.name, input_errors=errors)

        v.widgets[f.name].input(on_field, [v.editor, v.loaded_state, v.name_state, v.flagged_state, v.input_errors, v.widgets[f.name]],
                                render_outputs, trigger_mode="always_last", show_progress="hidden", api_visibility="private")

    # -- loading -------------------------------------------------------------------------------
    def load(name):
        """Load a preset into the editor and the form."""
        try:
            text = wb.preset_text(name)
        except WorkbenchError as e:
            return {v.msg: err_md(e)}
        out = render(text, text, name, {f.name: "?" for f in field_list}, set_text=True, refill={})
        out.update({v.loaded_state: text, v.name_state: name, v.msg: "", v.confirm_row: gr.Row(visible=False), v.pending_switch: None})
        return out

    load_outputs = [*render_outputs, v.loaded_state, v.name_state, v.msg, v.confirm_row, v.pending_switch]

    def pick(picked, current, text, loaded, input_errors):
        """A preset was picked in the list: load it, unless the editor holds unsaved edits; then ask
        first (the list goes back to the preset being edited until the edits are discarded)."""
        if picked == current:  # the list repeats its input event after a load; nothing to do
            return {v.pending_switch: None}
        if not edited_text(text, loaded) and not input_errors:
            return load(picked)
        return {v.dropdown: gr.Dropdown(value=current), v.pending_switch: picked, v.switch_row: gr.Row(visible=True),
                v.switch_md: f"**{current or 'The unsaved preset'}** has unsaved edits. Load **{picked}** and discard them? "
                             "(*Save as new preset* keeps them.)"}

    v.dropdown.input(pick, [v.dropdown, v.name_state, v.editor, v.loaded_state, v.input_errors],
                     [*load_outputs, v.dropdown, v.switch_md], api_name="ui_load_preset", api_visibility="undocumented")
    v.switch_yes.click(lambda picked: {**load(picked), v.dropdown: gr.Dropdown(value=picked)} if picked else {v.switch_row: gr.Row(visible=False)},
                       [v.pending_switch], [*load_outputs, v.dropdown], api_visibility="private")
    v.switch_no.click(lambda: (gr.Row(visible=False), None), None, [v.switch_row, v.pending_switch], api_visibility="private")

    # -- save / save as / duplicate / delete ---------------------------------------------------
    def choices_update(selected):
        """The preset dropdown with fresh choices and this selection."""
        return gr.Dropdown(choices=wb.preset_choices(), value=selected)

    def saved_updates(saved: str, text: str, message: str) -> dict:
        """After a save: the saved text is the loaded one, so nothing is unsaved any more (here and
        in the Runs tab's launch line)."""
        out = {v.msg: ok_md(message), v.loaded_state: text, v.name_state: saved, v.current: _current_md(saved, "user", False),
               v.dropdown: choices_update(saved), v.save_btn: gr.Button(interactive=True), v.switch_row: gr.Row(visible=False)}
        if launch_summary is not None:
            out[launch_summary] = launch_md(saved, False, wb.validate(text))
        if launch_msg is not None:
            out[launch_msg] = ""
        return out

    def unsaved_form_values(input_errors: dict) -> str | None:
        """The refusal when the form holds values that are not in the TOML, else ``None``."""
        if not input_errors:
            return None
        return err_md("not saved: " + "; ".join(f"{k} {m}" for k, m in input_errors.items()))

    def save(name, text, input_errors):
        """Save the editor's text over the current user preset."""
        if not name:
            return {v.msg: err_md("this preset has no name yet: type one under New preset name and use Save as new preset")}
        if unsaved_form_values(input_errors):
            return {v.msg: unsaved_form_values(input_errors)}
        try:
            if wb.preset_kind(name) == "shipped":
                raise WorkbenchError(f"{name!r} is a ready preset and read-only; type a new name and use Save as new preset")
            saved = wb.save_preset(name, text, overwrite=True)
        except WorkbenchError as e:
            return {v.msg: err_md(e)}
        return saved_updates(saved, text, f"Saved {saved!r} in {wb.store.user_dir}")

    save_outputs = [v.msg, v.loaded_state, v.name_state, v.current, v.dropdown, v.save_btn, v.switch_row, *extra]
    v.save_btn.click(save, [v.name_state, v.editor, v.input_errors], save_outputs, api_name="ui_save_preset", api_visibility="undocumented")

    def save_as(new_name, text, input_errors):
        """Save the editor's text as a new user preset."""
        if unsaved_form_values(input_errors):
            return {v.msg: unsaved_form_values(input_errors)}
        try:
            saved = wb.save_preset(new_name, text, overwrite=False)
        except WorkbenchError as e:
            return {v.msg: err_md(e)}
        return {**saved_updates(saved, text, f"Saved as {saved!r} in {wb.store.user_dir}; you are now editing it"), v.new_name: ""}

    v.save_as_btn.click(save_as, [v.new_name, v.editor, v.input_errors], [*save_outputs, v.new_name], api_name="ui_save_preset_as",
                        api_visibility="undocumented")

    def duplicate(name, new_name):
        """Copy the saved current preset to a new user preset and open it."""
        try:
            target = wb.duplicate_preset(name or "", new_name)
        except WorkbenchError as e:
            return {v.msg: err_md(e)}
        out = load(target)
        out[v.dropdown] = choices_update(target)
        out[v.msg] = ok_md(f"Copied the saved {name!r} to {target!r} and opened it (edits not yet saved in {name!r} were not copied)")
        out[v.new_name] = ""
        return out

    v.duplicate_btn.click(duplicate, [v.name_state, v.new_name], [*load_outputs, v.dropdown, v.new_name],
                          api_name="ui_duplicate_preset", api_visibility="undocumented")

    def ask_delete(name):
        """Ask for confirmation before deleting."""
        kind = _safe_kind(wb, name)
        if kind != "user":
            why = "ready presets are read-only" if kind == "shipped" else "it is not saved"
            return {v.msg: err_md(f"cannot delete {name!r}: {why}"), v.confirm_row: gr.Row(visible=False)}
        return {v.confirm_md: f"Delete your preset **{name}** for good?", v.confirm_row: gr.Row(visible=True), v.msg: ""}

    v.delete_btn.click(ask_delete, [v.name_state], [v.msg, v.confirm_row, v.confirm_md], api_visibility="private")
    v.confirm_no.click(lambda: gr.Row(visible=False), None, v.confirm_row, api_visibility="private")

    def do_delete(name):
        """Delete after confirmation."""
        try:
            wb.delete_preset(name)
        except WorkbenchError as e:
            return {v.msg: err_md(e), v.confirm_row: gr.Row(visible=False)}
        names = [n for _, n in wb.preset_choices()]
        nxt = "quickstart" if "quickstart" in names else (names[0] if names else None)
        out = load(nxt) if nxt else {}
        out[v.dropdown] = choices_update(nxt)
        out[v.msg] = ok_md(f"Deleted {name!r}")
        out[v.confirm_row] = gr.Row(visible=False)
        return out

    v.confirm_yes.click(do_delete, [v.name_state], [*load_outputs, v.dropdown], api_name="ui_delete_preset", api_visibility="undocumented")


def launch_md(name: str | None, modified: bool, val: pe.Validation) -> str:
    """The Runs tab's line about the preset that Launch would start."""
    label = f"**{name}**" if name else "the unsaved preset"
    mod = " with unsaved edits" if modified else ""
    if not val.ok:
        return f"Launch starts {label}{mod} from the Presets tab — ✗ it has {len(val.problems)} problem(s); fix them there first."
    procs = f"{val.num_processes} process{'es' if val.num_processes > 1 else ''}"
    return f"Launch starts {label}{mod} from the Presets tab — ✓ valid · run.name `{val.run_name}` · {procs} · mixed precision `{val.mixed_precision}`"


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


def _parsed(text: str) -> dict:
    try:
        return pe.parse_toml(text)
    except pe.FieldInputError:
        return {}


def _field_of(name: str, message: str, widgets: dict) -> str:
    """The form field a problem belongs to. A problem the engine reports for a whole section
    (``network``) whose message starts with one of its keys is shown on that key's widget."""
    if "." in name or name.startswith("("):
        return name
    first = message.strip().split(" ", 1)[0].rstrip(":")
    candidate = f"{name}.{first}"
    return candidate if candidate in widgets else name


def _safe_kind(wb: Workbench, name: str | None) -> str | None:
    if not name:
        return None
    try:
        return wb.preset_kind(name)
    except WorkbenchError:
        return None


def _same(a: Any, b: Any) -> bool:
    if a == b:
        return True
    if a in (None, "") and b in (None, ""):
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)
