"""The chat tab's Thinking row: thinking auto/on/off and the thinking budget of the open chat.

They are the chat's own sampling values, stored where the Sampling tab stores them (Session.params, only
what differs from config + character), so both tabs show and change the same values. A change is saved at
once, and a reply being written finishes first (its save would undo it otherwise), so it applies from the
next turn. With no chat open the choice is kept for this page and goes into the chat its first message (or
Speak now) makes, before that first reply.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine import EngineError, InvalidInput, SamplingParams, Session

from .. import i18n
from ..i18n import I18N, tr
from ..markup import warn
from .context import CUSTOM, Step, UIContext
from .pages import PageMap

NAMES = ("thinking", "thinking_budget")
MODES = ("auto", "on", "off")
_BOUNDS = SamplingParams.model_fields["thinking_budget"].metadata
BUDGET_MAX = next(m.le for m in _BOUNDS if getattr(m, "le", None) is not None)

EN = {
    "th.mode": "Thinking",
    "th.auto": "Auto",
    "th.on": "On",
    "th.off": "Off",
    "th.budget": "Thinking budget (tokens)",
    "th.no_limit": "no limit",
    "th.bad_budget": (
        "The thinking budget is a whole number of tokens from 0 to {max}, or empty for no limit. "
        "Nothing was changed."
    ),
    "th.bad_mode": "Thinking is Auto, On or Off. Nothing was changed.",
}
JA = {
    "th.mode": "思考",
    "th.auto": "自動",
    "th.on": "オン",
    "th.off": "オフ",
    "th.budget": "思考の上限（トークン数）",
    "th.no_limit": "上限なし",
    "th.bad_budget": (
        "思考の上限は 0〜{max} のトークン数（整数）で、空欄なら上限なしです。何も変更していません。"
    ),
    "th.bad_mode": "思考は自動・オン・オフのいずれかです。何も変更していません。",
}
i18n.add(EN, JA)


@dataclass
class ThinkingControls:
    mode: gr.Radio
    budget: gr.Number

    @property
    def outputs(self) -> list[Any]:
        return [self.mode, self.budget]


def build(ctx: UIContext) -> ThinkingControls:
    """The row, placed where the chat tab calls this; it starts with a new chat's values."""
    start = SamplingParams.parse({**ctx.rt.settings.generation.model_dump(), **_char_sampling(ctx, None)})
    with gr.Row(equal_height=True, elem_id="chat-thinking-row"):
        mode = gr.Radio(
            [(I18N(f"th.{m}"), m) for m in MODES],
            value=start.thinking,
            label=I18N("th.mode"),
            scale=2,
            min_width=220,
            elem_id="chat-thinking",
        )
        budget = gr.Number(
            value=start.thinking_budget,
            precision=0,  # no minimum/maximum: the handler names the range in its warning
            label=I18N("th.budget"),
            placeholder=I18N("th.no_limit"),
            scale=1,
            min_width=160,
            elem_id="chat-thinking-budget",
        )
    return ThinkingControls(mode, budget)


def _char_sampling(ctx: UIContext, char_name: str | None) -> dict[str, Any]:
    """The sampling of a character by preset name (the configured one for None); {} for none or Custom."""
    name = ctx.rt.settings.chat.preset if char_name is None else char_name
    try:
        char = ctx.rt.character(None if name in (None, "", CUSTOM) else name)
    except EngineError:
        return {}
    return dict(char.sampling) if char else {}


def _budget(value: Any) -> Any:
    """The Number's value as a budget: empty is no limit; 12.0 is 12; anything else is left for
    SamplingParams.parse to refuse."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _started(session: Session) -> bool:
    """Whether the chat has had a turn (a greeting is not one)."""
    return any(m.role == "user" or (m.role == "assistant" and not m.greeting) for m in session.messages)


def _page(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


class ThinkingHandlers:
    """The row's handlers; `pending` holds, by page, a choice made while no chat was open."""

    def __init__(self, ctx: UIContext, load_session: Any) -> None:
        self.ctx, self.rt, self.load = ctx, ctx.rt, load_session
        self.defaults = ctx.rt.settings.generation
        self.pending: PageMap[dict[str, Any]] = PageMap()  # the oldest go beyond PAGES_MAX
        self._lock = threading.Lock()

    # --- the values ------------------------------------------------------------------------------------

    def sampling_of(self, session: Session) -> dict[str, Any]:
        char = session.character_snapshot()
        return dict(char.sampling) if char else {}

    def current(self, session: Session | None, char_name: str | None) -> dict[str, Any]:
        """The thinking values in effect: config, then the character, then the chat (as the Sampling tab)."""
        base = {**self.defaults.model_dump()}
        if session is not None:
            base.update({**self.sampling_of(session), **session.params})
        else:
            base.update(_char_sampling(self.ctx, char_name or CUSTOM))
        try:
            values = SamplingParams.parse(base)
        except InvalidInput:
            values = self.defaults
        return {n: getattr(values, n) for n in NAMES}

    def shown(self, session: Session | None, char_name: str | None, page: str | None) -> tuple[Any, Any]:
        values = self.current(session, char_name)
        if session is None and page is not None:
            with self._lock:
                values.update(self.pending.get(page) or {})
        return values["thinking"], values["thinking_budget"]

    def store(self, session: Session, wanted: dict[str, Any]) -> None:
        """Save `wanted` in the chat as the Sampling tab's Apply would; its other values stay as they are."""
        char = self.sampling_of(session)
        base = {**self.defaults.model_dump(), **char, **session.params}
        effective = SamplingParams.parse(base).model_dump()
        overrides = self.defaults.session_overrides(char, {**effective, **wanted})
        params = {k: v for k, v in session.params.items() if k not in NAMES}
        params.update({k: overrides[k] for k in NAMES if k in overrides})
        if params != session.params:
            session.params = params
            self.rt.sessions.save(session)

    # --- events ---------------------------------------------------------------------------------------

    def refresh(self, session_id: str | None, char_name: str | None, request: gr.Request):
        """The open chat's values; with none open, this page's choice, else a new chat's."""
        session = self.load(self.ctx, session_id)
        page = _page(request)
        if session is not None and page is not None:
            with self._lock:
                self.pending.pop(page, None)  # a chat is open: the choice for a chat to come is void
        return self.shown(session, char_name, page)

    def reset(self, session_id: str | None, char_name: str | None, request: gr.Request):
        """New chat: its values are the config's and the character's again."""
        page = _page(request)
        if page is not None:
            with self._lock:
                self.pending.pop(page, None)
        return self.refresh(session_id, char_name, request)

    def on_input(
        self,
        mode: str | None,
        budget: Any,
        session_id: str | None,
        char_name: str | None,
        lang_value: str | None,
        request: gr.Request,
    ):
        """Save the choice in the open chat (or keep it for the chat to come); a bad value changes nothing:
        a warning names the range and the row shows the values in effect again."""
        session = self.load(self.ctx, session_id)
        page = _page(request)
        wanted = {"thinking": mode or "auto", "thinking_budget": _budget(budget)}
        problem = self.problem(wanted, lang_value)
        if problem:
            warn(problem)
            return self.shown(session, char_name, page)
        if session is None:
            if page is not None:
                self.remember(page, wanted)
            return gr.skip(), gr.skip()
        try:
            with self.rt.sessions.turn_lock(session.id):  # after a reply being written has saved its chat
                session = self.load(self.ctx, session.id) or session
                self.store(session, wanted)
        except EngineError as exc:
            warn(exc.message)
            return self.shown(self.load(self.ctx, session_id), char_name, page)
        return gr.skip(), gr.skip()

    def problem(self, wanted: dict[str, Any], lang_value: str | None) -> str | None:
        try:
            SamplingParams.parse(wanted)
        except InvalidInput as exc:
            if (exc.field or "").endswith("thinking"):
                return tr("th.bad_mode", lang_value)
            return tr("th.bad_budget", lang_value, max=BUDGET_MAX)
        return None

    def remember(self, page: str, wanted: dict[str, Any]) -> None:
        with self._lock:
            self.pending[page] = dict(wanted)

    def carry(self, session: Session, request: gr.Request | None) -> None:
        """Before a chat-tab turn: a choice this page made while no chat was open goes into the chat its
        first message has just made, so that first reply already follows it."""
        page = _page(request)
        if page is None:
            return
        with self._lock:
            wanted = self.pending.pop(page, None)
        if wanted is None or _started(session):
            return
        try:
            self.store(session, wanted)
        except EngineError as exc:
            warn(exc.message)


def wire(
    ctx: UIContext,
    th: ThinkingControls,
    character: gr.Dropdown,
    load_session: Any,
    switches: list[Any],
    new_chat: Any,
) -> Step:
    """Connect the row: its own input, and a refresh whenever another chat is shown: the session id
    changes (History's Open, an upload, the first message), or one of `switches` ran (the chat tab's events
    that may show another chat; `new_chat` also forgets a choice made for the chat to come). The turns are
    not among them: they keep the chat's values, and a change made during a reply is saved after it.
    Returns the refresh, for the chat tab's select (the Sampling tab may have changed the values)."""
    h = ThinkingHandlers(ctx, load_session)
    ctx.before_turn.append(h.carry)
    sid, lang = ctx.session_id, ctx.lang
    ins = [th.mode, th.budget, sid, character, lang]
    th.mode.input(h.on_input, ins, th.outputs, show_progress="hidden")
    th.budget.submit(h.on_input, ins, th.outputs, show_progress="hidden")
    th.budget.blur(h.on_input, ins, th.outputs, show_progress="hidden")
    refresh = Step(h.refresh, [sid, character], th.outputs)
    sid.change(*refresh, show_progress="hidden")
    for event in switches:
        fn = h.reset if event is new_chat else h.refresh
        event.then(fn, refresh.inputs, th.outputs, show_progress="hidden")
    return refresh
