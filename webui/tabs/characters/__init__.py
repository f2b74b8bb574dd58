"""Characters tab: a gallery, a form for every field, a live prompt preview, a test reply from the draft,
save / save as new / revert / delete, card import and export, and the Custom chat's system prompt.

Each part is its own module: `gallery`, `form`, `transfer` (import and export), `test_reply` (the preview
and the test reply) and `custom` (the Custom chat's prompt); this one lays them out and wires the tab."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..context import CUSTOM, ChatView, UIContext
from . import strings  # noqa: F401  (registers the tab's text)
from .custom import CustomPrompt
from .form import Form
from .gallery import Gallery
from .test_reply import TestReply, base_of
from .transfer import Transfer


class CharactersTab:
    def __init__(self, ctx: UIContext, chat: ChatView) -> None:
        self.ctx, self.chat = ctx, chat
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                self.gallery = Gallery(ctx, chat.character)
                self.transfer = Transfer(ctx)
                self.custom = CustomPrompt(ctx)
            with gr.Column(scale=3):
                self.form = Form(ctx)
                self.test = TestReply(ctx)
        self.form.connect(self.gallery, self.transfer, self.test)

    def on_tab(
        self,
        current: str | None,
        chat_value: str | None,
        custom: str | None,
        custom_text: str,
        test_text: str,
        session_id: str | None,
        lang_value: str | None,
    ) -> dict[Any, Any]:
        """The gallery; on the first visit, the chat's character (else the first one); the Custom prompt."""
        shown: dict[Any, Any] = {}
        if current is None:
            pick = chat_value if chat_value not in (None, CUSTOM) else None
            pick = pick or next((c.name for c in self.ctx.rt.presets.list()), None)
            shown = self.form.show(base_of(self.ctx, pick), lang_value, test_text)
            current = shown[self.form.loaded]
        prompt = self.custom.current(session_id, custom, custom_text)
        return {**self.gallery.items(current), **shown, self.custom.box: prompt}

    def wire(self, tab: gr.Tab) -> None:
        ctx, form = self.ctx, self.form
        tab.select(
            self.on_tab,
            [form.loaded, self.chat.character, ctx.custom_prompt, self.custom.box, self.test.message]
            + [ctx.session_id, ctx.lang],
            [*self.gallery.outputs, *form.shows, self.custom.box],
            show_progress="hidden",
        )
        form.wire(ctx.lang)
        self.transfer.wire(form.show, form.shows, self.gallery, self.test.message, ctx.lang)
        self.test.wire(form.fields, ctx.lang)
        self.custom.wire(self.chat)


def build(ctx: UIContext, tab: gr.Tab, chat: ChatView) -> None:
    """The Characters tab. Saving, deleting and importing update `chat`'s character list; the Custom
    prompt updates its status line."""
    CharactersTab(ctx, chat).wire(tab)
