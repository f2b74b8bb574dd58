"""Chat tab: streaming chatbot, Send/Stop/Regenerate/Continue/Delete/New, alternatives, status line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine import Delta, EngineError, Finished, NotFound, Notice, Queued, Reasoning, Session

from ..avatars import avatar_pair, user_avatar
from ..chatview import memoize
from ..i18n import I18N, tr
from ..markup import escape_text, warn
from ..prepared import prepared
from ..streaming import RunAhead
from . import chat_extras, chat_group, chat_thinking, chat_tools, chat_tree
from .context import CUSTOM, ChatView, Step, UIContext
from .pages import PageMap, page_key

UI_INTERVAL_S = 0.06  # at most about 16 UI updates a second
# Gradio re-processes the whole chat on every update, so an update costs more the longer the chat is.
# The interval grows to UI_COST_RATIO times what the last updates cost, so the UI takes a bounded share
# of the machine (and of the GIL the decode loop needs) however long the chat gets.
UI_COST_RATIO = 6.0
UI_MAX_INTERVAL_S = 0.5
# Send, in the page: the box's text becomes the turn's input and the box empties (a blank one stays)
TAKE_MESSAGE_JS = "(text) => (text && text.trim()) ? ['', text] : [text, '']"


def chatbot_rows(messages: list[Any]) -> list[tuple[Any, Any]]:
    """(session message, what of it) for each row the Chatbot shows: "" its text, "thought" its thought,
    an int its tool call of that index (the results, role "tool", show inside the calls). An index from a
    Chatbot event maps back to its message through this list; only "" rows are edited."""
    rows: list[tuple[Any, Any]] = []
    for m in messages:
        if m.role not in ("user", "assistant"):
            continue
        calls = (getattr(m, "tool_calls", None) or []) if m.role == "assistant" else []
        if m.role == "assistant" and getattr(m, "reasoning", ""):
            rows.append((m, "thought"))
        if m.content or not (calls or getattr(m, "reasoning", "")):
            rows.append((m, ""))
        rows += [(m, i + 1) for i in range(len(calls))]  # 1-based: a row kind is truthy unless text
    return rows


WINDOW, WINDOW_STEP = 30, 10  # a long chat shows its last rows; "Show earlier" adds WINDOW more


def window_start(total: int, limit: int | None) -> int:
    """The first row shown of `total`, showing at least `limit` (all when None). The start moves in steps,
    so a new message rarely shifts every row the browser has drawn."""
    if limit is None or total <= limit:
        return 0
    start = total - limit
    return start - start % WINDOW_STEP


def shown_limit(ctx: UIContext, session: Session | None) -> int:
    return ctx.shown.get(session.id, WINDOW) if session is not None else WINDOW


def visible_rows(ctx: UIContext, session: Session) -> list[tuple[Any, Any]]:
    """The rows the chatbot shows, in order: a Chatbot event's index maps to its message through this."""
    rows = chatbot_rows(session.messages)
    return rows[window_start(len(rows), shown_limit(ctx, session)) :]


def to_chatbot(
    messages: list[Any],
    lang: str | None = None,
    heads: dict[str, str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The chatbot's rows: each message's text, with `◂ n/m ▸` under a message that has versions, and in a
    group chat (`heads`: chat_tree.speaker_heads) each reply's speaker above it; thoughts and tool calls
    as collapsible blocks. With `limit`, only the last rows (window_start)."""
    results = chat_tools.session_results(messages)
    all_rows = chatbot_rows(messages)
    rows = []
    for m, kind in all_rows[window_start(len(all_rows), limit) :]:
        if kind == "thought":
            rows.append(thought_view(m, lang))
        elif kind:
            call = m.tool_calls[kind - 1]
            rows.append(chat_tools.call_row(call, results.get(call.get("id")), lang))
        else:
            rows.append({"role": m.role, "content": chat_tree.shown(m, heads)})
    return rows


def thought_view(m: Any, lang: str | None) -> dict[str, Any]:
    """A thinking model's thought as a collapsible message above its answer (Gradio's metadata): open with
    "Thinking…" while it streams, collapsed with its duration and token count once the answer starts."""
    metrics = m.metrics or {}
    done = bool(m.content) or bool(metrics)
    meta: dict[str, Any] = {"title": tr("chat.thinking", lang), "status": "pending"}
    if done:
        tokens = metrics.get("reasoning_tokens")
        title = tr("chat.thought", lang) + (f" · {tokens} tokens" if tokens else "")
        meta = {"title": title, "status": "done"}
        if metrics.get("reasoning_ms") is not None:
            meta["duration"] = round(metrics["reasoning_ms"] / 1000, 1)
    return {"role": "assistant", "content": escape_text(m.reasoning.strip()), "metadata": meta}


def status_line(ctx: UIContext, session: Session | None, lang: str | None, extra: str = "") -> str:
    rt = ctx.rt
    info = rt.model_info()
    parts = [
        f"**{escape_text(str(info.get('name')))}**"
        if info.get("loaded")
        else f"⚠ {tr('status.no_model', lang)}: {escape_text(str(info.get('error')))}"
    ]
    metrics = None
    if session:
        last = next((m for m in reversed(session.messages) if m.role == "assistant" and m.metrics), None)
        metrics = last.metrics if last else None
    if metrics:
        if metrics.get("tokens_per_s"):
            parts.append(f"{metrics['tokens_per_s']:.1f} tok/s")
        if metrics.get("ttft_ms") is not None:
            parts.append(f"TTFT {metrics['ttft_ms']:.0f} ms")
        if metrics.get("context_used") is not None:
            parts.append(
                tr("status.ctx", lang, used=metrics["context_used"], total=metrics.get("context_size") or "?")
            )
        if metrics.get("dropped_messages"):
            parts.append("⚠ " + tr("status.dropped", lang, n=metrics["dropped_messages"]))
    if session:
        rows = chatbot_rows(session.messages)
        hidden = window_start(len(rows), shown_limit(ctx, session))
        if hidden:
            parts.append("⋯ " + tr("chat.hidden", lang, n=hidden))
        title = escape_text(session.title or session.id)
        parts.append(f"{tr('status.session', lang)}: {title} (`{session.id}`)")
    else:
        parts.append(tr("status.new_session", lang))
    if extra:
        parts.append(extra)
    return " · ".join(parts)


def unsaved_sessions(ctx: UIContext) -> dict[str, Session]:
    """Chats whose last turn could not be saved (disk full, read-only): they stay open in memory."""
    return ctx.unsaved


def load_session(ctx: UIContext, session_id: str | None) -> Session | None:
    if not session_id:
        return None
    kept = unsaved_sessions(ctx).get(session_id)
    if kept is not None:
        return kept
    try:
        return ctx.rt.sessions.get(session_id)
    except (NotFound, EngineError):
        return None


def greeting_view(ctx: UIContext, character: str | None) -> list[dict[str, str]]:
    if not character or character == CUSTOM:
        return []
    try:
        char = ctx.rt.presets.get(character)
    except EngineError:
        return []
    opening = char.greetings(ctx.rt.settings.chat.user_name)
    return [{"role": "assistant", "content": escape_text(opening[0])}] if opening and opening[0] else []


def with_avatars(ctx: UIContext, view: list[dict[str, str]], character: str | None, title: str | None = None):
    """The chatbot's messages with the avatar pair of `character` (the user's, the character's)."""
    name = None if character in (None, CUSTOM) else character
    return gr.update(value=view, avatar_images=avatar_pair(ctx.rt, name, title))


def session_view(ctx: UIContext, session: Session):
    """The chatbot showing `session`, with its character's avatar (the snapshot's title if it was deleted).
    A group chat shows each speaker's avatar in their replies, and no avatar of its own."""
    if session.characters:
        return gr.update(value=chat_of(ctx, session), avatar_images=(user_avatar(ctx.rt), None))
    title = (session.character or {}).get("title")
    return with_avatars(ctx, chat_of(ctx, session), session.character_name, title)


def chat_of(ctx: UIContext, session: Session) -> list[dict[str, Any]]:
    """The chatbot's value for `session` (its speakers in a group chat; the last rows of a long chat)."""
    heads = chat_tree.speaker_heads(ctx.rt, session)
    return to_chatbot(session.messages, None, heads, shown_limit(ctx, session))


@dataclass
class ChatLayout:
    """The chat tab's components."""

    character: gr.Dropdown
    new_btn: gr.Button
    chatbot: gr.Chatbot
    message: gr.Textbox
    sending: gr.Textbox  # hidden: the message Send took from the box, the turn's input
    send: gr.Button
    stop: gr.Button
    regen: gr.Button
    branch: gr.Button
    cont: gr.Button
    prev_alt: gr.Button
    next_alt: gr.Button
    delete_last: gr.Button
    status: gr.Markdown
    details: gr.JSON
    extras: chat_extras.Extras
    group: chat_group.GroupControls
    selected: gr.State  # [session id, message index] of the message last clicked
    tool_mode: gr.Dropdown
    earlier: gr.Button


def layout(ctx: UIContext) -> ChatLayout:
    rt = ctx.rt
    with gr.Row():
        character = gr.Dropdown(
            choices=ctx.character_choices(),
            value=rt.settings.chat.preset or CUSTOM,
            label=I18N("chat.character"),
            scale=3,
            elem_id="character-picker",
        )
        group_on = chat_group.checkbox()
        new_btn = gr.Button(I18N("chat.new"), scale=1, elem_id="new-chat")
    group = chat_group.build(ctx, group_on)
    chatbot = gr.Chatbot(
        label="Chat",
        height=520,
        editable="all",  # an edit makes a new version of the message (chat_tree): nothing is lost
        buttons=["copy", "copy_all"],
        sanitize_html=True,
        allow_tags=False,
        render_markdown=True,
        feedback_options=None,
        elem_id="chatbot",
        latex_delimiters=[],
        avatar_images=avatar_pair(rt, rt.settings.chat.preset),
    )
    memoize(chatbot)
    with gr.Row():
        message = gr.Textbox(
            label=I18N("chat.message"),
            placeholder=I18N("chat.placeholder"),
            lines=1,
            max_lines=8,
            scale=8,
            autofocus=True,
            submit_btn=False,
            elem_id="message",
        )
        sending = gr.Textbox(visible=False, elem_id="sending")
        send = gr.Button(I18N("chat.send"), variant="primary", scale=1, elem_id="send")
        stop = gr.Button(I18N("chat.stop"), variant="stop", scale=1, elem_id="stop")
    with gr.Row():
        regen = gr.Button(I18N("chat.regenerate"), size="sm", elem_id="regenerate")
        branch = gr.Button(I18N("chat.branch"), size="sm", elem_id="branch-here")
        cont = gr.Button(I18N("chat.continue"), size="sm", elem_id="continue")
        prev_alt = gr.Button(I18N("chat.prev"), size="sm", elem_id="prev-alt", min_width=40)
        next_alt = gr.Button(I18N("chat.next"), size="sm", elem_id="next-alt", min_width=40)
        delete_last = gr.Button(I18N("chat.delete_last"), size="sm", elem_id="delete-last")
        impersonate = gr.Button(I18N("chat.impersonate"), size="sm", elem_id="impersonate")
        earlier = gr.Button(I18N("chat.earlier"), size="sm", elem_id="show-earlier")
    status = gr.Markdown(elem_classes=["status-line"], elem_id="status-line")
    with gr.Accordion(I18N("chat.details"), open=False):
        preview_btn = gr.Button(I18N("chat.preview"), size="sm", elem_id="preview-prompt")
        details = gr.JSON(label=None, elem_id="message-details")
    extras = chat_extras.build(ctx, impersonate, preview_btn)
    with gr.Accordion(I18N("tools.section"), open=False, elem_id="chat-tools"):
        tool_mode = chat_tools.build(ctx)
    return ChatLayout(
        character=character,
        new_btn=new_btn,
        chatbot=chatbot,
        message=message,
        sending=sending,
        send=send,
        stop=stop,
        regen=regen,
        branch=branch,
        cont=cont,
        prev_alt=prev_alt,
        next_alt=next_alt,
        delete_last=delete_last,
        status=status,
        details=details,
        extras=extras,
        group=group,
        selected=gr.State([None, None]),
        tool_mode=tool_mode,
        earlier=earlier,
    )


class TurnStream:
    """Runs a turn for the chat tab and turns its events into (chatbot, session id, status) updates."""

    def __init__(self, ctx: UIContext) -> None:
        self.ctx = ctx
        self.streaming: set[str] = set()  # the pages with a turn's updates under way

    def begin(self, session: Session, request: gr.Request, **kw: Any) -> RunAhead[Any]:
        """Check the turn, then begin it at once, in the background; the first text and every non-text
        event wake us. A bad turn (no model, nothing to regenerate) raises EngineError here."""
        cancel = self.ctx.cancel_flag(request, fresh=True)
        seen_text = False

        def urgent(event: Any) -> bool:
            nonlocal seen_text
            if isinstance(event, Delta | Reasoning):
                if seen_text:
                    return False
                seen_text = True
            return True

        ahead: list[RunAhead[Any]] = []  # the approval prompt is put into the stream this becomes
        kw = {**chat_tools.turn_args(self.ctx, request, cancel, ahead), **kw}
        turn = self.ctx.rt.turn(session=session, cancel=cancel, **kw)
        ahead.append(RunAhead(iter(turn), cancel, urgent))
        return ahead[0]

    def stream(
        self,
        session: Session,
        lang_value: str | None,
        request: gr.Request,
        echo: Any = None,
        **kw: Any,
    ) -> Iterator[Any]:
        """Check and begin the turn (EngineError here, before anything is shown), and return its UI
        updates: `echo` first, while the prompt is evaluated, then at most one per interval."""
        for hook in self.ctx.before_turn:  # chat_thinking: a choice made before the chat existed
            hook(session, request)
        turn = self.begin(session, request, **kw)
        return self.updates(session, lang_value, turn, echo, page_key(request))

    def updates(
        self, session: Session, lang_value: str | None, turn: RunAhead[Any], echo: Any, page: str
    ) -> Iterator[Any]:
        ctx = self.ctx
        self.streaming.add(page)
        extra = tr("status.generating", lang_value)
        heads = chat_tree.speaker_heads(ctx.rt, session)

        live: dict[str, chat_tools.LiveCall] = {}  # this round's tool calls, until the session has them

        def view_of(session: Session) -> list[dict[str, Any]]:
            rows = to_chatbot(session.messages, lang_value, heads, shown_limit(ctx, session))
            return rows + chat_tools.live_rows(session, live, lang_value)

        last_ui, cost, interval = 0.0, 0.0, UI_INTERVAL_S
        save_failed = False
        try:
            if echo is not None:
                yield echo, session.id, gr.skip()
            pending = False  # text the page has not been sent yet
            while not turn.done:
                wait = max(0.0, last_ui + interval - time.perf_counter()) if pending else interval
                for event in turn.take(wait):
                    if isinstance(event, Queued):
                        extra = "⏳ " + tr("status.waiting", lang_value, n=event.position)
                        yield view_of(session), session.id, status_line(ctx, session, lang_value, extra)
                        extra = tr("status.generating", lang_value)
                    elif isinstance(event, Notice):
                        save_failed = True
                        warn(event.message)
                    elif isinstance(event, Delta | Reasoning):
                        pending = True
                    elif isinstance(event, Finished):  # the reply is whole: show it now, not after the save
                        last_ui = 0.0
                    elif chat_tools.track(live, event):  # a call, its approval prompt, its result
                        pending, last_ui = True, 0.0
                now = time.perf_counter()
                if pending and now - last_ui >= interval:
                    pending = False
                    yield view_of(session), session.id, status_line(ctx, session, lang_value, extra)
                    last_ui = time.perf_counter()
                    cost = 0.7 * cost + 0.3 * (last_ui - now)  # Gradio's work on that update
                    interval = min(UI_MAX_INTERVAL_S, max(UI_INTERVAL_S, UI_COST_RATIO * cost))
        except EngineError as exc:
            warn(exc.message)
        finally:  # also when the page goes away: the turn saves what it has
            self.streaming.discard(page)
            turn.close()
            if save_failed:  # keep the chat in memory until a later save succeeds
                unsaved_sessions(ctx)[session.id] = session
            else:
                unsaved_sessions(ctx).pop(session.id, None)
        label = chat_tree.version_label(session, None, lang_value)
        yield view_of(session), session.id, status_line(ctx, session, lang_value, label)


class ChatHandlers:
    """The chat tab's event handlers. Turn handlers yield (chatbot, session id, status)."""

    def __init__(self, ctx: UIContext) -> None:
        self.ctx, self.rt = ctx, ctx.rt
        self.turns = TurnStream(ctx)
        self.unsent: PageMap[str] = PageMap()  # a message Send took from the box that did not go out

    def on_unsent(self, box: str | None, request: gr.Request) -> Any:
        """After Send: a message that did not go out goes back into the box, before anything typed since."""
        text = self.unsent.pop(page_key(request), None)
        if text is None:
            return gr.skip()
        return f"{text}\n{box}" if box and box.strip() else text

    def on_send(
        self,
        text: str,
        session_id: str | None,
        char: str | None,
        lang_value: str | None,
        custom_prompt: str | None,
        persona: str | None,
        books: list[str] | None,
        prefix: str | None,
        show_prefix: bool | None,
        enabled: bool | None,
        members: list[str] | None,
        order: str | None,
        muted: list[str] | None,
        prompt: str | None,
        speaker: str | None,
        request: gr.Request,
    ):
        """The message's turn; a new chat is made first (a group chat when "Group chat" is on, from the
        group controls' values). A message that does not go out is kept for on_unsent."""
        if not text or not text.strip():
            yield gr.skip()
            return
        page = page_key(request)
        # The options as shown go with the message: their own save (on input) may not have run yet.
        options = chat_extras.options_of(persona, books, prefix, show_prefix)
        settings = [enabled, members, order, muted, prompt]
        updates = (
            None  # Enter while this page's reply streams
            if page in self.turns.streaming
            else self.begin_send(
                text, session_id, char, lang_value, custom_prompt, options, settings, speaker, request
            )
        )
        if updates is None:
            self.unsent[page] = text
            yield gr.skip()
            return
        yield from updates

    def begin_send(
        self,
        text: str,
        session_id: str | None,
        char: str | None,
        lang_value: str | None,
        custom_prompt: str | None,
        options: dict[str, Any],
        settings: list[Any],
        speaker: str | None,
        request: gr.Request,
    ) -> Iterator[Any] | None:
        """The turn's updates, or None when it cannot begin (the reason shown as a warning)."""
        session = load_session(self.ctx, session_id)
        fresh = session is None
        if session is None:
            session = self.new_chat(char, custom_prompt, options, settings, lang_value)
            if session is None:
                return None
        echo: Any = chat_of(self.ctx, session) + [{"role": "user", "content": escape_text(text)}]
        if fresh and session.characters:
            echo = gr.update(value=echo, avatar_images=(user_avatar(self.rt), None))
        who = chat_group.speaker_for(session, speaker)
        try:
            return self.turns.stream(
                session,
                lang_value,
                request,
                echo=echo,
                mode="send",
                user_text=text,
                speaker=who,
                options=options,
            )
        except EngineError as exc:
            warn(exc.message)
            return None

    def new_chat(
        self,
        char: str | None,
        custom_prompt: str | None,
        options: dict[str, Any],
        group: list[Any],
        lang_value: str | None,
    ) -> Session | None:
        """The chat the first message (or Speak now) makes: with the character, or the group's members."""
        enabled, members, order, muted, prompt = group
        try:
            if enabled:
                if not members:
                    warn(tr("grp.need_members", lang_value))
                    return None
                return self.rt.new_session(
                    characters=list(members),
                    group=chat_group.settings_of(order, muted, prompt),
                    options=options,
                )
            is_custom = char in (None, CUSTOM)
            return self.rt.new_session(
                character=None if is_custom else char,
                system_prompt=(custom_prompt or None) if is_custom else None,
                options=options,
            )
        except EngineError as exc:
            warn(exc.message)
            return None

    def on_mode(self, mode: str):
        """Regenerate (the reply clicked last, else the last reply) or Continue (the last reply)."""

        def handler(session_id: str | None, selected: Any, lang_value: str | None, request: gr.Request):
            session = load_session(self.ctx, session_id)
            index = None
            if session is not None and mode == "regenerate":
                index = chat_tree.selected_index(session, selected, role="assistant")
            yield from self.regenerate(session, index, mode, lang_value, request)

        return handler

    def on_retry(
        self, data: gr.RetryData, session_id: str | None, lang_value: str | None, request: gr.Request
    ):
        """The chatbot's own retry button: a new version of the reply it is on (else the last reply)."""
        session = load_session(self.ctx, session_id)
        index = data.index if isinstance(data.index, int) else data.index[0]
        rows = visible_rows(self.ctx, session) if session else []
        k = None
        if session is not None and index < len(rows) and rows[index][0].role == "assistant":
            k = next(i for i, m in enumerate(session.messages) if m is rows[index][0])
        yield from self.regenerate(session, k, "regenerate", lang_value, request)

    def regenerate(
        self,
        session: Session | None,
        index: int | None,
        mode: str,
        lang_value: str | None,
        request: gr.Request,
    ) -> Iterator[Any]:
        """A new version of reply `index` (None: the last message, which must be a reply), or Continue."""
        last_is_reply = (
            session is not None and bool(session.messages) and session.messages[-1].role == "assistant"
        )
        if session is None or (index is None and not last_is_reply):
            warn(tr(f"chat.nothing_to_{mode}", lang_value))
            yield gr.skip()
            return
        try:
            updates = self.turns.stream(session, lang_value, request, mode=mode, index=index)
        except EngineError as exc:
            warn(exc.message)
            yield gr.skip()
            return
        yield from updates

    def on_branch(
        self,
        session_id: str | None,
        selected: Any,
        speaker: str | None,
        lang_value: str | None,
        request: gr.Request,
    ):
        """Branch from here: a new version of the message clicked last, with the same text, so the chat goes
        on from it while what followed stays with the old version. A reply's new version ends the chat (the
        user writes next); a user message's gets a new reply, as an edit does."""
        session = load_session(self.ctx, session_id)
        k = chat_tree.selected_index(session, selected) if session is not None else None
        if session is None or k is None:
            warn(tr("chat.pick_message", lang_value))
            yield gr.skip()
            return
        yield from self._new_version(session, k, session.messages[k].content, speaker, lang_value, request)

    def on_stop(self, request: gr.Request) -> None:
        self.ctx.cancel_flag(request).set()

    def on_new(self, char: str | None, lang_value: str | None, group_on: bool | None = False):
        ctx = self.ctx
        if group_on:  # a group chat starts with the first message or Speak now
            view = gr.update(value=[], avatar_images=(user_avatar(self.rt), None))
            return view, None, status_line(ctx, None, lang_value)
        return with_avatars(ctx, greeting_view(ctx, char), char), None, status_line(ctx, None, lang_value)

    def on_group_toggle(self, group_on: bool | None, char: str | None, lang_value: str | None):
        """Turning "Group chat" on or off starts a new chat (the old one stays in History)."""
        return (*self.on_new(char, lang_value, group_on), gr.update(visible=bool(group_on)))

    def on_new_options(self, lang_value: str | None):
        return chat_extras.option_values(self.ctx, None, lang_value)

    def on_session_options(self, session_id: str | None, lang_value: str | None):
        session = load_session(self.ctx, session_id)
        return (
            *chat_extras.option_values(self.ctx, session, lang_value),
            *chat_group.values(self.ctx, session),
        )

    def on_character(
        self, char: str | None, session_id: str | None, lang_value: str | None, group_on: bool | None
    ):
        session = load_session(self.ctx, session_id)
        current = (session.character_name if session else None) or CUSTOM
        if session is not None and current == (char or CUSTOM) and not session.characters:
            return gr.skip()
        return self.on_new(char, lang_value, group_on)  # another character: a new chat with its greeting

    def on_load(self, session_id: str | None, lang_value: str | None):
        ctx = self.ctx
        session = load_session(ctx, session_id)
        choices = ctx.character_choices(lang_value)
        options = (*chat_extras.option_values(ctx, session, lang_value), *chat_group.values(ctx, session))
        if session is None:
            char = self.rt.settings.chat.preset or CUSTOM
            return (
                with_avatars(ctx, greeting_view(ctx, char), char),
                None,
                gr.update(choices=choices, value=char),
                status_line(ctx, None, lang_value),
                *options,
            )
        return (
            session_view(ctx, session),
            session.id,
            gr.update(choices=choices, value=session.character_name or CUSTOM),
            status_line(ctx, session, lang_value, chat_tree.version_label(session, None, lang_value)),
            *options,
        )

    def on_alt(self, step: int):
        """◀ ▶: the previous or next version of the message clicked last (default: the last message
        that has versions); the chat then shows that version's branch."""

        def handler(session_id: str | None, selected: Any, lang_value: str | None):
            session = load_session(self.ctx, session_id)
            k = chat_tree.target(session, selected) if session is not None else None
            if session is None or k is None:
                return gr.skip()
            m = session.messages[k]
            try:
                session = self.rt.select_version(session.id, k, (m.version + step) % len(m.alternatives))
            except EngineError as exc:
                warn(exc.message)
                return gr.skip()
            label = chat_tree.version_label(session, k, lang_value)
            return chat_of(self.ctx, session), status_line(self.ctx, session, lang_value, label)

        return handler

    def on_delete_last(self, session_id: str | None, lang_value: str | None):
        session = load_session(self.ctx, session_id)
        if session is None or not session.messages:
            return gr.skip()
        msgs = session.messages
        cut = len(msgs) - 1
        while cut > 0 and msgs[cut].role != "user":
            cut -= 1
        if msgs[cut].role != "user":
            return gr.skip()
        del msgs[cut:]
        self.rt.sessions.save(session, allow_shrink=True)
        return chat_of(self.ctx, session), status_line(self.ctx, session, lang_value)

    def on_edit(
        self,
        data: gr.EditData,
        session_id: str | None,
        speaker: str | None,
        lang_value: str | None,
        request: gr.Request,
    ):
        """An edit branches: the message gets a new version and what followed stays with the old one.
        A user message's new version gets a new reply; an assistant message's is kept as written."""
        session = load_session(self.ctx, session_id)
        index = data.index if isinstance(data.index, int) else data.index[0]
        rows = visible_rows(self.ctx, session) if session else []
        if session is None or index >= len(rows) or rows[index][1]:  # a thought is not edited
            yield gr.skip()
            return
        k = next(i for i, m in enumerate(session.messages) if m is rows[index][0])
        text = chat_tree.plain_text(str(data.value))  # the edit box shows what the chatbot shows
        if not text.strip() or text == session.messages[k].content:
            yield chat_of(self.ctx, session), gr.skip(), gr.skip()
            return
        yield from self._new_version(session, k, text, speaker, lang_value, request)

    def _new_version(
        self,
        session: Session,
        k: int,
        text: str,
        speaker: str | None,
        lang_value: str | None,
        request: gr.Request,
    ):
        """Message `k` gets a new version with `text`, and what followed stays with the old one. A reply's
        is kept as written (the user writes next); a user message's gets a new reply."""
        if session.messages[k].role != "user":
            try:
                session = self.rt.edit(session.id, k, text)
            except EngineError as exc:
                warn(exc.message)
                session = load_session(self.ctx, session.id) or session
            label = chat_tree.version_label(session, k, lang_value)
            yield chat_of(self.ctx, session), session.id, status_line(self.ctx, session, lang_value, label)
            return
        who = chat_group.speaker_for(session, speaker)
        try:
            updates = self.turns.stream(
                session, lang_value, request, mode="edit", index=k, user_text=text, speaker=who
            )
        except EngineError as exc:
            warn(exc.message)
            yield chat_of(self.ctx, session), gr.skip(), gr.skip()
            return
        yield from updates

    def on_edit_select(self, data: gr.EditData, session_id: str | None) -> list[Any]:
        """The edited message becomes the one ◀ ▶ move through (its index stays: an edit changes only
        what follows it)."""
        session = load_session(self.ctx, session_id)
        index = data.index if isinstance(data.index, int) else data.index[0]
        rows = visible_rows(self.ctx, session) if session else []
        if session is None or index >= len(rows):
            return [None, None]
        return [session.id, next(i for i, m in enumerate(session.messages) if m is rows[index][0])]

    def on_speak(
        self,
        session_id: str | None,
        speaker: str | None,
        char: str | None,
        lang_value: str | None,
        custom_prompt: str | None,
        persona: str | None,
        books: list[str] | None,
        prefix: str | None,
        show_prefix: bool | None,
        enabled: bool | None,
        members: list[str] | None,
        order: str | None,
        muted: list[str] | None,
        prompt: str | None,
        request: gr.Request,
    ):
        """Speak now: the picked member answers at once, after the last message (a new group chat first,
        when none is open)."""
        ctx = self.ctx
        if not speaker:
            warn(tr("grp.need_speaker", lang_value))
            yield gr.skip()
            return
        session = load_session(ctx, session_id)
        options = chat_extras.options_of(persona, books, prefix, show_prefix)
        if session is None or not session.characters:
            settings = [True, members, order, muted, prompt]
            session = self.new_chat(char, custom_prompt, options, settings, lang_value) if enabled else None
            if session is None:
                if not enabled:
                    warn(tr("grp.need_members", lang_value))
                yield gr.skip()
                return
        echo = gr.update(value=chat_of(ctx, session), avatar_images=(user_avatar(self.rt), None))
        try:
            updates = self.turns.stream(
                session, lang_value, request, echo=echo, mode="send", speaker=speaker, options=options
            )
        except EngineError as exc:
            warn(exc.message)
            yield gr.skip()
            return
        yield from updates

    def on_speak_as(self, i: int):
        """The group's i-th "Speak now" button: that member answers now (as on_speak does)."""

        def handler(
            session_id: str | None,
            char: str | None,
            lang_value: str | None,
            custom_prompt: str | None,
            persona: str | None,
            books: list[str] | None,
            prefix: str | None,
            show_prefix: bool | None,
            enabled: bool | None,
            members: list[str] | None,
            order: str | None,
            muted: list[str] | None,
            prompt: str | None,
            request: gr.Request,
        ):
            session = load_session(self.ctx, session_id)
            if session is not None and session.characters:
                members = [c.name for c in chat_group.members_of(session)]
            names = list(members or [])
            speaker = names[i] if i < len(names) else None
            args = (
                custom_prompt,
                persona,
                books,
                prefix,
                show_prefix,
                enabled,
                members,
                order,
                muted,
                prompt,
            )
            yield from self.on_speak(session_id, speaker, char, lang_value, *args, request)

        return handler

    def on_earlier(self, session_id: str | None, lang_value: str | None):
        """Show WINDOW more of a long chat's earlier rows (remembered for the chat until a restart)."""
        session = load_session(self.ctx, session_id)
        if session is None:
            return gr.skip(), gr.skip()
        self.ctx.shown[session.id] = shown_limit(self.ctx, session) + WINDOW
        return chat_of(self.ctx, session), status_line(self.ctx, session, lang_value)

    def on_select(self, data: gr.SelectData, session_id: str | None, lang_value: str | None):
        """The clicked message's details; it becomes the message ◀ ▶, Regenerate (a reply) and Branch from
        here act on, and the status line says which of its versions is shown."""
        session = load_session(self.ctx, session_id)
        if session is None:
            return None, [None, None], gr.skip()
        rows = visible_rows(self.ctx, session)
        index = data.index if isinstance(data.index, int) else data.index[0]
        if index >= len(rows):
            return None, [None, None], gr.skip()
        m = rows[index][0]
        k = next(i for i, x in enumerate(session.messages) if x is m)
        details = {
            "message": k + 1,  # its number in the chat (the chatbot may show only the last ones)
            "role": m.role,
            "name": m.name,
            "time": m.time,
            "metrics": m.metrics,
            "stopped": m.stopped,
            "interrupted": m.interrupted,
            "versions": len(m.alternatives) or 1,
            "version": m.version + 1,
        }
        # Regenerate and Branch from here act on this message now: the status line says which it is
        label = chat_tree.version_label(session, k, lang_value) or tr("chat.selected", lang_value, n=k + 1)
        return details, [session.id, k], status_line(self.ctx, session, lang_value, label)


def build(ctx: UIContext) -> ChatView:
    """The chat tab, wired; returns what the other tabs use of it."""
    ui, h = layout(ctx), ChatHandlers(ctx)
    thinking = chat_thinking.build(ctx)  # the Thinking row, under the chat options
    sid, lang = ctx.session_id, ctx.lang
    chatbot, character, status, extras, group = ui.chatbot, ui.character, ui.status, ui.extras, ui.group
    turn_outs = [chatbot, sid, status]
    new_in = [character, lang, group.enabled]
    chat_in = [character, lang, ctx.custom_prompt, *extras.inputs, *group.inputs]  # custom: Characters tab
    send_in = [ui.sending, sid, *chat_in, group.speaker]

    def turn(trigger: Any, handler: Any, inputs: list[Any], **kw: Any) -> Any:
        """A turn's event: its updates are postprocessed in its own thread (prepared), not by Gradio in
        three more threads for each update."""
        return trigger(
            prepared(handler, turn_outs), inputs, turn_outs, concurrency_limit=None, postprocess=False, **kw
        )

    turns: list[Any] = [
        # Send moves the message out of the box in the page, and the turn streams into the chat alone: each
        # update costs Gradio about half as much as with the box among its outputs (a skipped output is a
        # new component). A message that did not go out goes back into the box: the turn runs for every
        # Send ("multiple"), so that a Send while this page's reply streams comes back rather than vanishes.
        turn(
            trigger(None, ui.message, [ui.message, ui.sending], js=TAKE_MESSAGE_JS, queue=False).then,
            h.on_send,
            send_in,
            trigger_mode="multiple",
        )
        for trigger in (ui.send.click, ui.message.submit)
    ]
    for sent in turns:
        sent.then(h.on_unsent, ui.message, ui.message, queue=False, show_progress="hidden")
    turns += [
        turn(ui.regen.click, h.on_mode("regenerate"), [sid, ui.selected, lang]),
        turn(ui.branch.click, h.on_branch, [sid, ui.selected, group.speaker, lang]),
        turn(ui.cont.click, h.on_mode("continue"), [sid, ui.selected, lang]),
        turn(chatbot.edit, h.on_edit, [sid, group.speaker, lang]),
        chatbot.edit(h.on_edit_select, [sid], [ui.selected], queue=False),  # ◀ ▶ then move through it
        turn(chatbot.retry, h.on_retry, [sid, lang]),
        turn(group.speak.click, h.on_speak, [sid, group.speaker, *chat_in]),
        *(turn(btn.click, h.on_speak_as(i), [sid, *chat_in]) for i, btn in enumerate(group.speak_as)),
    ]
    for new_turn in (ui.send.click, ui.message.submit, group.speak.click, *(b.click for b in group.speak_as)):
        # a new turn: Regenerate acts on the last reply again until a message is clicked
        new_turn(lambda: [None, None], None, ui.selected, queue=False, show_progress="hidden")
    # Stop only sets the turn's cancel flag: the turn ends itself within one token, saves, and its handler
    # sends the saved reply as its last update. Gradio's own `cancels=` raced that end: its /cancel route
    # completes a still-running event with an empty output, and the page showed Error on the chat, the
    # message box and the status line (the chat blanked), although the saved chat was right.
    ui.stop.click(h.on_stop, None, None, queue=False)
    chat_extras.wire(ctx, extras, character, ui.message, ui.details, load_session)
    chat_tools.wire(ctx, ui.tool_mode, chatbot, lang)
    ui.earlier.click(h.on_earlier, [sid, lang], [chatbot, status])
    chat_group.wire(ctx, group, load_session)
    new_ev = ui.new_btn.click(h.on_new, new_in, turn_outs)
    new_ev.then(h.on_new_options, [lang], extras.inputs)
    toggle_ev = group.enabled.input(
        h.on_group_toggle, [group.enabled, character, lang], [*turn_outs, group.panel]
    )
    others = [
        new_ev,
        toggle_ev,
        chatbot.clear(h.on_new, new_in, turn_outs),  # the old chat stays in History
        character.input(h.on_character, [character, sid, lang, group.enabled], turn_outs),
        ui.prev_alt.click(h.on_alt(-1), [sid, ui.selected, lang], [chatbot, status]),
        ui.next_alt.click(h.on_alt(1), [sid, ui.selected, lang], [chatbot, status]),
        ui.delete_last.click(h.on_delete_last, [sid, lang], [chatbot, status]),
    ]
    chatbot.select(h.on_select, [sid, lang], [ui.details, ui.selected, status])
    thinking_step = chat_thinking.wire(ctx, thinking, character, load_session, others, new_ev)
    shown = [*extras.inputs, *group.outputs]
    return ChatView(
        session_id=sid,
        chatbot=chatbot,
        character=character,
        status=status,
        changed=[*turns, *others],
        options=Step(h.on_session_options, [sid, lang], shown),
        on_load=Step(h.on_load, [sid, lang], [chatbot, sid, character, status, *shown]),
        thinking=thinking_step,
    )
