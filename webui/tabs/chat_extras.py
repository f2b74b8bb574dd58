"""The chat tab's persona picker, attached lorebooks, "Start reply with", Impersonate and prompt preview.

A change to the options applies to the open chat at once (it is saved with it); with no chat open yet, the
values are used when the first message creates one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine import Delta, EngineError, Session, Turn

from ..i18n import I18N, tr
from ..markup import warn
from .context import CUSTOM, UIContext

UI_INTERVAL_S = 0.06


@dataclass
class Extras:
    persona: gr.Dropdown
    books: gr.Dropdown
    prefix: gr.Textbox
    show_prefix: gr.Checkbox
    impersonate: gr.Button
    preview_btn: gr.Button

    @property
    def inputs(self) -> list[Any]:
        return [self.persona, self.books, self.prefix, self.show_prefix]


def persona_choices(ctx: UIContext, lang: str | None) -> list[tuple[str, str]]:
    return [(tr("chat.persona_default", lang), "")] + [(p.name, p.name) for p in ctx.rt.personas.list()]


def book_choices(ctx: UIContext) -> list[str]:
    return ctx.rt.lorebooks.names()


def options_of(
    persona: str | None, books: list[str] | None, prefix: str | None, show: bool | None
) -> dict[str, Any]:
    return {
        "persona": persona or None,
        "lorebooks": [b for b in books or [] if isinstance(b, str)],
        "reply_prefix": prefix or "",
        "show_reply_prefix": True if show is None else bool(show),
    }


def option_values(ctx: UIContext, session: Session | None, lang: str | None) -> tuple[Any, ...]:
    """Updates for the four option components: the session's choices, or the defaults for a new chat."""
    opts = ctx.rt.chat_options(session)
    persona = opts.persona if isinstance(opts.persona, str) else ""
    return (
        gr.update(choices=persona_choices(ctx, lang), value=persona),
        gr.update(choices=book_choices(ctx), value=list(opts.lorebooks)),
        opts.reply_prefix,
        opts.show_reply_prefix,
    )


def build(ctx: UIContext, impersonate: gr.Button, preview_btn: gr.Button) -> Extras:
    """The options accordion; the two buttons are placed by the chat tab."""
    with gr.Accordion(I18N("chat.options"), open=False, elem_id="chat-options"):
        with gr.Row():
            persona = gr.Dropdown(
                choices=persona_choices(ctx, None),
                value="",
                label=I18N("chat.persona"),
                scale=2,
                elem_id="persona-picker",
            )
            books = gr.Dropdown(
                choices=book_choices(ctx),
                value=[],
                multiselect=True,
                label=I18N("chat.lorebooks"),
                scale=3,
                elem_id="lorebook-picker",
            )
        with gr.Row(equal_height=True):
            prefix = gr.Textbox(
                label=I18N("chat.reply_prefix"),
                info=I18N("chat.reply_prefix_info"),
                max_lines=3,
                scale=3,
                elem_id="reply-prefix",
            )
            show_prefix = gr.Checkbox(
                value=True, label=I18N("chat.show_prefix"), scale=1, elem_id="show-prefix"
            )
    return Extras(persona, books, prefix, show_prefix, impersonate, preview_btn)


def wire(
    ctx: UIContext,
    ex: Extras,
    character: gr.Dropdown,
    message: gr.Textbox,
    details: gr.JSON,
    load_session: Any,
) -> list[Any]:
    """Connect the handlers; returns the events Stop must cancel."""
    rt = ctx.rt
    sid, lang = ctx.session_id, ctx.lang
    custom = ctx.custom_prompt

    def on_option(session_id: str | None, lang_value: str | None, *values: Any) -> None:
        session = load_session(ctx, session_id)
        if session is None:
            return  # used when the first message creates the chat
        try:
            rt.update_options(session, options_of(*values))
            rt.sessions.save(session)
        except EngineError as exc:
            warn(exc.message)

    for comp in ex.inputs:
        comp.input(on_option, [sid, lang, *ex.inputs], None, show_progress="hidden")

    def on_impersonate(request: gr.Request, *args: Any) -> Iterator[Any]:
        _text, session_id, char, custom_prompt, *values = args
        cancel = ctx.cancel_flag(request, fresh=True)
        draft, last = "", 0.0
        try:
            for event in impersonation(session_id, char, custom_prompt, options_of(*values), cancel):
                if isinstance(event, Delta):
                    draft += event.text
                    if time.monotonic() - last >= UI_INTERVAL_S:
                        last = time.monotonic()
                        yield draft.lstrip()
        except EngineError as exc:
            warn(exc.message)
        yield draft.strip() or gr.skip()

    def impersonation(
        session_id: str | None,
        char: str | None,
        custom_prompt: str | None,
        opts: dict[str, Any],
        cancel: threading.Event,
    ) -> Turn:
        """The turn that drafts the user's next message (saves nothing)."""
        session = load_session(ctx, session_id)
        if session is not None:
            return rt.turn(session=session, mode="impersonate", cancel=cancel)
        is_custom = char in (None, CUSTOM)
        return rt.turn(
            new_chat_messages(char, custom_prompt, opts),
            mode="impersonate",
            preset=None if is_custom else char,
            options=opts,
            cancel=cancel,
        )

    def new_chat_messages(char: str | None, custom_prompt: str | None, opts: dict[str, Any]) -> list[Any]:
        """A chat not started yet: the custom system prompt, or the character's greeting."""
        if char in (None, CUSTOM):
            return [{"role": "system", "content": custom_prompt}] if custom_prompt else []
        user = opts["persona"] or (rt.personas.default_name() or rt.settings.chat.user_name)
        character = rt.character(char)
        opening = character.greetings(user)[:1] if character else []
        return [{"role": "assistant", "content": g} for g in opening]

    def on_preview(
        text: str, session_id: str | None, char: str | None, custom_prompt: str | None, *values: Any
    ) -> dict[str, Any] | None:
        try:
            session = load_session(ctx, session_id)
            if session is not None:
                return rt.preview(session=session, user_text=text or None)
            opts = options_of(*values)
            msgs = new_chat_messages(char, custom_prompt, opts)
            if text:
                msgs.append({"role": "user", "content": text})
            preset = None if char in (None, CUSTOM) else char
            return rt.preview(msgs, session="new", preset=preset, options=opts)
        except EngineError as exc:
            warn(exc.message)
            return None

    ev = ex.impersonate.click(
        on_impersonate,
        [message, sid, character, custom, *ex.inputs],
        [message],
        concurrency_limit=None,
    )
    ex.preview_btn.click(on_preview, [message, sid, character, custom, *ex.inputs], [details])
    return [ev]
