"""Presets view: the preset list, a form generated from the engine's schema, the raw TOML editor
(kept in sync both ways), validation as you type, save / save as / duplicate / delete, and the
effective preset.

What each event does is decided in :mod:`workbench.presets_page` (plain values, tested without
Gradio); this module creates the components, binds each event to its function there and turns the
returned :class:`~workbench.presets_page.Outcome` into component updates (:func:`updates`). Edits
use ``.input`` events (user edits only), so the programmatic update of one side never echoes back.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import gradio as gr

from .. import preset_edit as pe
from .. import presets_page as pp
from ..api import Workbench
from ..presets_page import PLUGIN_SLOTS
from .common import View, confirm_row

__all__ = ["build", "wire", "outputs", "updates", "on_page_load", "elem_id_for"]


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
    v = View(initial_name=first, initial_text=text)
    v.editor_state = gr.State(pp.Editor(text=text, loaded=text, name=first))  # see workbench.presets_page.Editor
    v.pending_switch = gr.State(None)  # the preset to load once unsaved edits may be discarded
    with gr.Row(equal_height=True, elem_id="preset-row"):
        v.dropdown = gr.Dropdown(
            choices=choices,
            value=first,
            label="Preset",
            scale=2,
            elem_id="preset-select",
            info="Pick a ready preset (read-only) or one of yours; picking one loads it into the editor.",
        )
        v.current = gr.Markdown(pp.current_md(first, wb.preset_kind(first) if first else None, False), elem_id="preset-current")
    # edits kept from an earlier page (a reload, a closed tab): offered back where the preset is named
    v.restore_name = gr.State(None)  # the preset whose kept edits the row offers
    with gr.Row(visible=False, elem_id="preset-restore-row") as v.restore_row:
        v.restore_md = gr.Markdown(elem_id="preset-restore-msg")
        v.restore_yes = gr.Button("Restore my edits", variant="primary", elem_id="preset-restore-yes")
        v.restore_no = gr.Button("Discard them", elem_id="preset-restore-no")
    # asked where the preset was picked, in view ("discard the unsaved edits?")
    with gr.Row(visible=False, elem_id="preset-switch-row") as v.switch_row:
        v.switch_md = gr.Markdown(elem_id="preset-switch-msg")
        v.switch_yes = gr.Button("Discard edits and load it", variant="stop", elem_id="preset-switch-yes")
        v.switch_no = gr.Button("Keep editing", elem_id="preset-switch-no")
    with gr.Row():
        with gr.Column(scale=3, elem_id="preset-form"):
            gr.Markdown("#### Form — every field with its unit, allowed range and default. Changes go straight into the TOML on the right.")
            v.widgets: dict[str, Any] = {}
            v.accordions: dict[str, gr.Accordion] = {}
            v.op_groups: dict[str, gr.Group] = {}
            current_op = (
                pe.effective_value(data, pe.field_by_name("corruption.operator"))
                if "corruption.operator" in {f.name for f in fields}
                else None
            )
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
                    if section == "corruption":
                        _plugin_group(v)
        with gr.Column(scale=2, elem_id="preset-side"):
            v.validation = gr.Markdown(pe.validate(text).markdown() if text else "", elem_id="preset-validation")
            v.editor = gr.Code(
                value=text,
                language=None,
                label="Preset TOML — edit here or in the form; both stay in sync",
                lines=22,
                max_lines=40,
                interactive=True,
                elem_id="preset-editor",
                wrap_lines=True,
            )
            with gr.Row():
                v.save_btn = gr.Button(
                    "Save changes to this preset",
                    variant="primary",
                    elem_id="preset-save",
                    scale=3,
                    interactive=(wb.preset_kind(first) if first else None) == "user",
                )
                v.delete_btn = gr.Button("Delete…", variant="stop", elem_id="preset-delete", scale=1, min_width=80)
            with gr.Group():
                v.new_name = gr.Textbox(
                    label="New preset name",
                    placeholder="e.g. my-blur-experiment",
                    elem_id="preset-new-name",
                    max_lines=1,
                    info="for Save as (saves the editor's text) and Duplicate (copies the saved file)",
                )
                with gr.Row():
                    v.save_as_btn = gr.Button("Save as new preset", elem_id="preset-save-as", min_width=80)
                    v.duplicate_btn = gr.Button("Duplicate saved preset", elem_id="preset-duplicate", min_width=80)
            confirm_row(v, "Yes, delete", "preset-delete-yes")
            v.msg = gr.Markdown(elem_id="preset-msg")
            with gr.Accordion("Effective preset — every field, defaults filled in, as the engine will run it", open=False):
                v.effective = gr.Code(
                    value=pe.validate(text).effective if text else "",
                    language=None,
                    interactive=False,
                    lines=12,
                    max_lines=40,
                    elem_id="preset-effective",
                )
    return v


def _plugin_group(v: View) -> None:
    """The group of a plug-in operator's parameters: a title and :data:`PLUGIN_SLOTS` text boxes, hidden
    until the preset names a plug-in; :func:`updates` labels and fills them from the plug-in's schema."""
    with gr.Group(visible=False, elem_id="operator-plugin") as v.plugin_group:
        v.plugin_title = gr.Markdown()
        v.plugin_slots = [
            gr.Textbox(visible=False, max_lines=1, interactive=True, elem_id=f"plugin-param-{i}") for i in range(PLUGIN_SLOTS)
        ]


def outputs(v: View, launch_summary=None, launch_msg=None, launch_button=None) -> list:
    """Every component an event of the tab may update (what :func:`updates` may return)."""
    return [
        v.editor,
        v.validation,
        v.effective,
        v.current,
        v.save_btn,
        v.editor_state,
        v.msg,
        v.switch_row,
        v.switch_md,
        v.pending_switch,
        v.confirm_row,
        v.confirm_md,
        v.dropdown,
        v.new_name,
        v.restore_row,
        v.restore_md,
        v.restore_name,
        *v.accordions.values(),
        *v.op_groups.values(),
        *v.widgets.values(),
        v.plugin_group,
        v.plugin_title,
        *v.plugin_slots,
        *(c for c in (launch_summary, launch_msg, launch_button) if c is not None),
    ]


def updates(wb: Workbench, v: View, out: pp.Outcome, launch_summary=None, launch_msg=None, launch_button=None) -> dict:
    """The component updates of an event's :class:`workbench.presets_page.Outcome` (only its set parts)."""
    u: dict = {}
    if out.editor is not None:
        u[v.editor_state] = out.editor
    page = out.page
    if page is not None:
        if page.text is not None:
            u[v.editor] = page.text
        u.update(
            {
                v.validation: page.validation,
                v.effective: page.effective,
                v.current: page.current,
                v.save_btn: gr.Button(interactive=page.can_save),
            }
        )
        for section, acc in v.accordions.items():
            title, force_open = page.sections[section]
            u[acc] = gr.Accordion(label=title, **({"open": True} if force_open else {}))
        if page.operator is not None:
            for op, group in v.op_groups.items():
                u[group] = gr.Group(visible=op == page.operator)
        u[v.plugin_group] = gr.Group(visible=bool(page.plugin_title))
        u[v.plugin_title] = page.plugin_title
        for i, box in enumerate(v.plugin_slots):
            slot = page.plugin_slots[i] if i < len(page.plugin_slots) else pp.PluginSlot()
            if not slot.visible:
                u[box] = gr.update(visible=False)
                continue
            kw = dict(visible=True, label=slot.label, info=slot.info, elem_classes=["field-error"] if slot.error else [])
            u[box] = gr.update(**kw, **({} if slot.value is None else {"value": slot.value}))
        for name, change in page.fields.items():
            kw = {k: val for k, val in change.items() if k != "error"}
            if "error" in change:
                kw["elem_classes"] = ["field-error"] if change["error"] else []
            u[v.widgets[name]] = gr.update(**kw)
        if launch_summary is not None:
            u[launch_summary] = page.launch
        if launch_button is not None:  # ready-looking only when the preset would launch
            u[launch_button] = gr.Button(variant="primary" if page.launch_ok else "secondary")
    if out.msg is not None:
        u[v.msg] = out.msg
    if out.choices is not None:
        u[v.dropdown] = gr.Dropdown(choices=wb.preset_choices(), value=out.choices[0])
    if out.switch is not None:
        u[v.switch_row] = gr.Row(visible=out.switch[0])
        u[v.switch_md] = out.switch[1]
    if out.pending is not None or out.switch is not None or out.page is not None:
        u[v.pending_switch] = out.pending
    if out.confirm is not None:
        u[v.confirm_row] = gr.Row(visible=out.confirm[0])
        u[v.confirm_md] = out.confirm[1]
    if out.clear_new_name:
        u[v.new_name] = ""
    if out.restore is not None:
        u[v.restore_row], u[v.restore_md], u[v.restore_name] = gr.Row(visible=out.restore[0]), out.restore[1], out.restore_name
    if out.launch_msg is not None and launch_msg is not None:
        u[launch_msg] = out.launch_msg
    return u


def on_page_load(wb: Workbench, v: View):
    """Per-viewer start: offer the newest unsaved edits kept from an earlier page, of any preset
    (:func:`workbench.presets_page.opened`). Returns ``(fn, outputs)`` for ``demo.load``."""
    return (lambda: updates(wb, v, pp.opened(wb, newest=True))), [v.restore_row, v.restore_md, v.restore_name]


def wire(wb: Workbench, v: View, launch_summary=None, launch_msg=None, launch_button=None) -> None:
    """Bind the Presets tab's events to :mod:`workbench.presets_page`. ``launch_summary`` (Runs tab) is
    refreshed with validation; ``launch_msg`` (Runs tab), a message about an earlier launch, is cleared
    by any edit of the preset; ``launch_button`` (Runs tab) looks ready only while the preset is valid."""
    outs = outputs(v, launch_summary, launch_msg, launch_button)
    names = list(v.widgets)
    quiet = dict(show_progress="hidden", api_visibility="private")

    def bind(event, fn, inputs, **kw):
        """``event`` calls ``fn(editor, *inputs)`` (the editor's state with the TOML as typed) and shows its outcome."""

        def handler(ed, text, *args):
            """Run the event on the current editor and turn its outcome into updates (never none: Gradio
            would read an empty dict as one value for all its outputs)."""
            current = replace(ed or pp.Editor(), text=text)
            return {v.editor_state: current, **updates(wb, v, fn(current, *args), launch_summary, launch_msg, launch_button)}

        event(handler, [v.editor_state, v.editor, *inputs], outs, **kw)

    bind(
        v.editor.input,
        lambda ed, *values: pp.text_edited(wb, ed, ed.text, dict(zip(names, values))),
        list(v.widgets.values()),
        trigger_mode="always_last",
        **quiet,
    )
    for name, widget in v.widgets.items():
        bind(
            widget.input, lambda ed, value, _name=name: pp.field_edited(wb, ed, _name, value), [widget], trigger_mode="always_last", **quiet
        )
    for i, box in enumerate(v.plugin_slots):
        bind(box.input, lambda ed, value, _i=i: pp.slot_edited(wb, ed, _i, value), [box], trigger_mode="always_last", **quiet)
    bind(
        v.dropdown.input, lambda ed, picked: pp.pick(wb, ed, picked), [v.dropdown], api_name="ui_load_preset", api_visibility="undocumented"
    )
    bind(v.switch_yes.click, lambda ed, picked: pp.discard_and_load(wb, ed, picked), [v.pending_switch], **quiet)
    bind(v.restore_yes.click, lambda ed, name: pp.restore(wb, name), [v.restore_name], **quiet)
    bind(v.restore_no.click, lambda ed, name: pp.forget(wb, name), [v.restore_name], **quiet)
    v.switch_no.click(lambda: (gr.Row(visible=False), None), None, [v.switch_row, v.pending_switch], api_visibility="private")
    bind(v.save_btn.click, lambda ed: pp.save(wb, ed), [], api_name="ui_save_preset", api_visibility="undocumented")
    for button, action, api_name in (
        (v.save_as_btn, pp.save_as, "ui_save_preset_as"),
        (v.duplicate_btn, pp.duplicate, "ui_duplicate_preset"),
    ):
        bind(
            button.click,
            lambda ed, new, _action=action: _action(wb, ed, new),
            [v.new_name],
            api_name=api_name,
            api_visibility="undocumented",
        )
    bind(v.delete_btn.click, lambda ed: pp.ask_delete(wb, ed), [], **quiet)
    v.confirm_no.click(lambda: gr.Row(visible=False), None, v.confirm_row, api_visibility="private")
    bind(v.confirm_yes.click, lambda ed: pp.delete(wb, ed), [], api_name="ui_delete_preset", api_visibility="undocumented")
