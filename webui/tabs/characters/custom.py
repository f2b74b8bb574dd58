"""The system prompt of "Custom (no character)" chats, edited on the Characters tab: kept in the browser,
and applied at once to an open Custom chat."""

from __future__ import annotations

from typing import Any

import gradio as gr

from engine import EngineError

from ...i18n import I18N, tr
from ...markup import notify, warn
from ..chat import load_session, status_line
from ..context import ChatView, UIContext


class CustomPrompt:
    def __init__(self, ctx: UIContext) -> None:
        self.ctx = ctx
        with gr.Accordion(I18N("ch.custom"), open=False):
            self.box = gr.Textbox(
                label=I18N("ch.custom_prompt"),
                info=I18N("ch.custom_info"),
                lines=5,
                elem_id="ch-custom-prompt",
            )
            self.save_btn = gr.Button(I18N("ch.custom_save"), size="sm", elem_id="ch-custom-save")

    def current(self, session_id: str | None, stored: str | None, shown: str) -> str:
        """The prompt to show: the open Custom chat's, else what the box or the browser holds, else the
        configured default."""
        session = load_session(self.ctx, session_id)
        is_custom = session is not None and session.character_name is None
        open_custom = session.system_prompt if session is not None and is_custom else None
        return open_custom or shown or stored or self.ctx.rt.settings.chat.system_prompt

    def on_save(self, text: str, session_id: str | None, lang_value: str | None) -> tuple[Any, Any]:
        """(the browser's stored prompt, the chat tab's status line)."""
        text = text or ""
        session = load_session(self.ctx, session_id)
        if session is not None and session.character_name is None:
            session.system_prompt = text or None
            try:
                self.ctx.rt.sessions.save(session)
            except EngineError as exc:
                warn(exc.message)
                return text, gr.skip()
            notify(tr("ch.custom_applied", lang_value, title=session.title or session.id))
            return text, status_line(self.ctx, session, lang_value)
        notify(tr("ch.custom_saved", lang_value))
        return text, gr.skip()

    def wire(self, chat: ChatView) -> None:
        ctx = self.ctx
        self.save_btn.click(
            self.on_save, [self.box, ctx.session_id, ctx.lang], [ctx.custom_prompt, chat.status]
        )
