"""The Characters tab's form: a field for every part of a character, the header naming what is edited, and
Save / Save as new / Revert / Delete."""

from __future__ import annotations

from typing import Any

import gradio as gr

from engine import Character, EngineError, InvalidInput

from ...i18n import I18N, tr
from ...markup import notify, plain_md, warn
from ..confirm import confirm_row
from ..context import UIContext
from .gallery import Gallery
from .strings import FIELDS, INFO
from .test_reply import TestReply, base_of, draft
from .transfer import Transfer


def field_box(field: str) -> gr.Textbox:
    _, _, lines = FIELDS[field]
    kw: dict[str, Any] = {"label": I18N(f"ch.f.{field}"), "elem_id": f"ch-{field.replace('_', '-')}"}
    if field in INFO:
        kw["info"] = I18N(f"ch.i.{field}")
    return gr.Textbox(lines=lines, max_lines=max(lines * 4, 1), **kw)


class Form:
    """Lays out the header, the fields and the buttons; `show` fills them (and the export buttons and the
    preview of the other parts) for one character."""

    def __init__(self, ctx: UIContext) -> None:
        self.ctx, self.store = ctx, ctx.rt.presets
        self.loaded = gr.State(None)  # None: nothing shown yet; "": a new, unsaved character; else its name
        self.header = gr.Markdown(elem_id="ch-header")
        form: dict[str, gr.Textbox] = {}
        with gr.Row():
            for f in ("name", "title", "tags"):
                form[f] = field_box(f)
        for f in ("description", "personality", "scenario", "system_prompt"):
            form[f] = field_box(f)
        with gr.Row():
            form["greeting"] = field_box("greeting")
            form["alternate_greetings"] = field_box("alternate_greetings")
        for f in ("example_dialogue", "post_history_instructions"):
            form[f] = field_box(f)
        with gr.Row():
            form["creator_notes"] = field_box("creator_notes")
            form["sampling"] = field_box("sampling")
        self.boxes = form
        self.fields = [form[f] for f in Character.form_fields]
        with gr.Row():
            self.save_btn = gr.Button(I18N("ch.save"), variant="primary", elem_id="ch-save")
            self.save_new_btn = gr.Button(I18N("ch.save_new"), elem_id="ch-save-new")
            self.revert_btn = gr.Button(I18N("ch.revert"), elem_id="ch-revert")
            self.delete_btn = gr.Button(I18N("ch.delete"), variant="stop", elem_id="ch-delete")
        self.ask = confirm_row("ch")

    def connect(self, gallery: Gallery, transfer: Transfer, test: TestReply) -> None:
        """The parts that `show` and the handlers update besides the form."""
        self.gallery, self.transfer, self.test = gallery, transfer, test

    @property
    def shows(self) -> list[Any]:
        """What `show` updates."""
        return [*self.fields, self.loaded, self.header, *self.transfer.outputs, self.ask.row, *self.previews]

    @property
    def previews(self) -> list[Any]:
        return [self.test.preview, self.test.tokens]

    def header_text(self, character: Character | None, lang_value: str | None) -> str:
        if character is None:
            return tr("ch.editing_new", lang_value)
        text = tr("ch.editing", lang_value, title=plain_md(character.display_name), name=character.name)
        return text + (" " + tr("ch.shipped", lang_value) if self.store.is_shipped(character.name) else "")

    def show(self, character: Character | None, lang_value: str | None, test_text: str) -> dict[Any, Any]:
        """Everything that shows one character: form fields, loaded, header, exports, confirm row, preview."""
        values = character.to_form() if character else dict.fromkeys(Character.form_fields, "")
        name = character.name if character else ""
        return {
            **{self.boxes[f]: values[f] for f in Character.form_fields},
            self.loaded: name,
            self.header: self.header_text(character, lang_value),
            **self.transfer.exports(name),
            self.ask.row: gr.update(visible=False),
            **self.test.preview_of([values[f] for f in Character.form_fields], test_text, lang_value),
        }

    def saved(self, character: Character, chat_value: str | None, lang_value: str | None) -> dict[Any, Any]:
        """After a save: loaded name, name field, header, exports, gallery, the chat list."""
        notify(tr("ch.saved", lang_value, title=character.display_name))
        return {
            self.loaded: character.name,
            self.boxes["name"]: character.name,
            self.header: self.header_text(character, lang_value),
            **self.transfer.exports(character.name),
            **self.gallery.changed(character.name, chat_value),
        }

    def on_pick(self, evt: gr.SelectData, name_list: list[str], test_text: str, lang_value: str | None):
        character = base_of(self.ctx, self.gallery.picked(evt, name_list))
        if character is None:
            warn(tr("ch.pick", lang_value))
            return gr.skip()
        return self.show(character, lang_value, test_text)

    def on_new(self, test_text: str, lang_value: str | None):
        return {
            **self.show(None, lang_value, test_text),
            self.gallery.gallery: gr.update(selected_index=None),
        }

    def on_save(self, *args: Any):
        *values, current, chat_value, lang_value = args
        try:
            character = draft(self.ctx, values, current)
            if character.name != current and base_of(self.ctx, character.name) is not None:
                raise InvalidInput(tr("ch.exists", lang_value, name=character.name))
            self.store.save(character)
        except EngineError as exc:
            warn(exc.message)
            return gr.skip()
        return self.saved(character, chat_value, lang_value)

    def on_save_new(self, *args: Any):
        *values, current, chat_value, lang_value = args
        try:
            character = draft(self.ctx, values, current)
            name = self.store.unique_name(character.name)
            character = character.model_copy(update={"name": name})
            self.store.save(character)
        except EngineError as exc:
            warn(exc.message)
            return gr.skip()
        return self.saved(character, chat_value, lang_value)

    def on_revert(self, current: str | None, test_text: str, lang_value: str | None):
        notify(tr("ch.reverted", lang_value))
        return self.show(base_of(self.ctx, current), lang_value, test_text)

    def on_ask_delete(self, current: str | None, lang_value: str | None):
        character = base_of(self.ctx, current)
        if character is None:
            warn(tr("ch.pick", lang_value))
            return gr.skip()
        text = tr("ch.confirm", lang_value, title=plain_md(character.display_name), name=character.name)
        if self.store.is_shipped(character.name):
            text += "\n\n" + tr("ch.shipped_warn", lang_value)
        return {self.ask.row: gr.update(visible=True), self.ask.text: text}

    def on_delete(self, current: str | None, chat_value: str | None, test_text: str, lang_value: str | None):
        character = base_of(self.ctx, current)
        try:
            if character is None:
                raise InvalidInput(tr("ch.pick", lang_value))
            self.store.delete(character.name)
        except EngineError as exc:
            warn(exc.message)
            return gr.skip()
        notify(tr("ch.deleted", lang_value, title=character.display_name))
        rest = [c.name for c in self.store.list()]
        first = rest[0] if rest else None
        return {
            **self.show(base_of(self.ctx, first), lang_value, test_text),
            **self.gallery.changed(first, chat_value),
        }

    def wire(self, lang: Any) -> None:
        gallery, chat_char, test_msg = self.gallery, self.gallery.chat_char, self.test.message
        shows, listed = self.shows, self.gallery.outputs
        gallery.gallery.select(self.on_pick, [gallery.names, test_msg, lang], shows)
        gallery.new_btn.click(self.on_new, [test_msg, lang], [*shows, gallery.gallery])
        save_in = [*self.fields, self.loaded, chat_char, lang]
        save_outs = [self.loaded, self.boxes["name"], self.header, *self.transfer.outputs, *listed, chat_char]
        self.save_btn.click(self.on_save, save_in, save_outs)
        self.save_new_btn.click(self.on_save_new, save_in, save_outs)
        self.revert_btn.click(self.on_revert, [self.loaded, test_msg, lang], shows)
        self.delete_btn.click(self.on_ask_delete, [self.loaded, lang], [self.ask.row, self.ask.text])
        self.ask.confirm.click(
            self.on_delete, [self.loaded, chat_char, test_msg, lang], [*shows, *listed, chat_char]
        )
