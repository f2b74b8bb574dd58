"""The Characters tab's prompt preview (what the model receives for a new chat with the draft, and its token
count) and test reply (a short reply from the draft; nothing is saved)."""

from __future__ import annotations

import threading
import time
from typing import Any

import gradio as gr

from engine import Cancel, Character, Delta, EngineError, Finished, InvalidInput, Queued, Reasoning

from ...i18n import I18N, tr
from ...markup import warn
from ..context import UIContext
from ..pages import PageMap, page_key

TEST_MAX_TOKENS = 160
UI_INTERVAL_S = 0.04


def render_messages(messages: list[dict[str, str]]) -> str:
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def with_thought(thought: str, text: str) -> str:
    """The test reply in a plain textbox: a thinking model's thought first, indented under a marker."""
    if not thought.strip():
        return text
    indented = "\n".join("    " + line for line in thought.strip().splitlines())
    return f"💭\n{indented}\n\n{text}"


def base_of(ctx: UIContext, name: Any) -> Character | None:
    """The saved preset of that name, for what the form does not show (avatar, card data)."""
    try:
        return ctx.rt.presets.get(str(name)) if name else None
    except EngineError:
        return None


def draft(ctx: UIContext, values: list[Any], current: str | None = None) -> Character:
    """The form (values in Character.form_fields order) as a Character; the loaded preset supplies its avatar
    and card data."""
    base = base_of(ctx, current) or base_of(ctx, values[0])
    return Character.from_form(dict(zip(Character.form_fields, values, strict=True)), base=base)


def lenient_draft(ctx: UIContext, values: list[Any]) -> Character:
    """The draft for previews: a bad name or bad sampling does not stop the preview. The saved preset
    supplies its card data (and so its lorebook)."""
    data = dict(zip(Character.form_fields, values, strict=True))
    base = base_of(ctx, values[0])
    try:
        return Character.from_form(data, base=base)
    except InvalidInput:
        return Character.from_form({**data, "name": "draft", "sampling": ""}, base=base)


class TestReply:
    def __init__(self, ctx: UIContext) -> None:
        self.ctx, self.rt = ctx, ctx.rt
        self.cancels: PageMap[threading.Event] = PageMap()
        with gr.Accordion(I18N("ch.preview"), open=True):
            self.tokens = gr.Markdown(elem_id="ch-tokens")
            self.preview = gr.Textbox(
                label=I18N("ch.preview_text"),
                lines=8,
                max_lines=24,
                interactive=False,
                buttons=["copy"],
                elem_id="ch-preview",
            )
        with gr.Accordion(I18N("ch.test"), open=True):
            with gr.Row(equal_height=True):
                self.message = gr.Textbox(
                    value=tr("ch.test_default", "en"),
                    label=I18N("ch.test_message"),
                    max_lines=3,
                    scale=4,
                    elem_id="ch-test-message",
                )
                with gr.Column(scale=1, min_width=140):
                    self.test_btn = gr.Button(
                        I18N("ch.test_run"), variant="primary", size="sm", elem_id="ch-test"
                    )
                    self.stop_btn = gr.Button(
                        I18N("ch.stop"), variant="stop", size="sm", elem_id="ch-test-stop"
                    )
            self.output = gr.Textbox(
                label=I18N("ch.test_output"), lines=4, interactive=False, elem_id="ch-test-output"
            )

    def history(self, character: Character, user_text: str) -> list[Any]:
        """A new chat with this draft: its greeting and one user message (the default persona)."""
        user = self.rt.personas.default_name() or self.rt.settings.chat.user_name
        history: list[Any] = [{"role": "assistant", "content": g} for g in character.greetings(user)[:1]]
        history.append({"role": "user", "content": user_text or tr("ch.test_default", "en")})
        return history

    def plan(self, character: Character, user_text: str) -> Any:
        """The test reply's prompt (`.messages`, `.lore`), as `rt.turn` builds it for a draft character."""
        return self.rt.draft(self.history(character, user_text), session="new", preset=character)

    def preview_of(self, values: list[Any], user_text: str, lang_value: str | None) -> dict[Any, Any]:
        """The preview box and the token count for the form's `values`."""
        text, count = self.rendered(values, user_text, lang_value)
        return {self.preview: text, self.tokens: count}

    def rendered(self, values: list[Any], user_text: str, lang_value: str | None) -> tuple[str, str]:
        rt = self.rt
        try:
            plan = self.plan(lenient_draft(self.ctx, values), user_text)
        except InvalidInput as exc:
            return "", tr("ch.draft_error", lang_value, message=exc.message)
        messages = plan.messages
        if plan.lore:
            lore = "\n".join(
                f"- {x['book']} #{x['uid']} {x['comment']}: {x['why']} ({x['where']})" for x in plan.lore
            )
            messages = [*messages, {"role": "lore", "content": lore}]
        backend = rt.engine.backend
        if backend is None:
            return render_messages(messages), tr(
                "ch.tokens_unknown", lang_value, reason=rt.engine.load_error or ""
            )
        try:
            n = backend.count_tokens(plan.messages)
        except EngineError as exc:
            return render_messages(messages), tr("ch.tokens_unknown", lang_value, reason=exc.message)
        if n is None:
            return render_messages(messages), tr("ch.tokens_unknown", lang_value, reason=backend.name)
        return render_messages(messages), tr("ch.tokens", lang_value, n=n)

    def on_preview(self, *args: Any):
        *values, test_text, lang_value = args
        return self.preview_of(values, test_text, lang_value)

    def on_test(self, request: gr.Request, *args: Any):
        *values, test_text, lang_value = args
        key = page_key(request)
        cancel = self.cancels[key] = Cancel()
        try:
            character = draft(self.ctx, values)
            limit = {"max_tokens": min(self.rt.params_for(character).max_tokens, TEST_MAX_TOKENS)}
            turn = self.rt.turn(
                self.history(character, test_text), preset=character, params=limit, cancel=cancel
            )
            text, thought, last = "", "", 0.0
            for event in turn:
                if isinstance(event, Queued):
                    yield tr("ch.queued", lang_value, n=event.position)
                elif isinstance(event, Delta | Reasoning):
                    if isinstance(event, Reasoning):
                        thought += event.text
                    else:
                        text += event.text
                    if time.monotonic() - last >= UI_INTERVAL_S:
                        last = time.monotonic()
                        yield with_thought(thought, text)
                elif isinstance(event, Finished):
                    break
            yield with_thought(thought, text)
        except EngineError as exc:
            warn(exc.message)
            yield gr.skip()

    def on_stop(self, request: gr.Request) -> None:
        flag = self.cancels.get(page_key(request))
        if flag is not None:
            flag.set()

    def wire(self, fields: list[Any], lang: Any) -> None:
        """The preview follows every edit of the form (`fields`) and of the test message."""
        gr.on(
            [f.change for f in fields] + [self.message.change],
            self.on_preview,
            [*fields, self.message, lang],
            [self.preview, self.tokens],
            trigger_mode="always_last",
            show_progress="hidden",
        )
        test_ev = self.test_btn.click(
            self.on_test, [*fields, self.message, lang], [self.output], concurrency_limit=None
        )
        self.stop_btn.click(self.on_stop, None, None, cancels=[test_ev], queue=False)
