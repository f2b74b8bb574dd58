"""The chat tab's group chat controls: start one with several characters, its settings, and "Speak now".

"Group chat" shows the panel. The members chosen there (and the settings) are used when the first message
(or "Speak now") creates the chat; an open group chat keeps its members, and a change to its settings
is saved with it at once. Each member (up to SPEAK_BUTTONS) has a "Speak now" button of their own; the
Speaker dropdown and its button reach any member, and name who answers in manual order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine import Character, EngineError, GroupSettings, Session

from .. import i18n
from ..i18n import I18N, tr
from ..markup import warn
from .context import UIContext

SPEAK_BUTTONS = 8  # one "Speak now" button per member, for groups up to this size

EN = {
    "grp.enable": "Group chat",
    "grp.members": "Characters in the group",
    "grp.order": "Who speaks next",
    "grp.order.natural": "Natural (named first, then talkativeness)",
    "grp.order.list": "In turn (list order)",
    "grp.order.manual": "Manual (Speak now only)",
    "grp.muted": "Muted (speak only when picked)",
    "grp.prompt": "Character cards in the prompt",
    "grp.prompt.join": "All cards (faster: one cached prompt)",
    "grp.prompt.swap": "Only the speaker's card",
    "grp.speaker": "Speaker",
    "grp.speak": "Speak now",
    "grp.speak_each": "Speak now:",
    "grp.need_members": "Pick the characters of the group chat first.",
    "grp.need_speaker": "Pick who speaks.",
}
JA = {
    "grp.enable": "グループチャット",
    "grp.members": "グループのキャラクター",
    "grp.order": "次に話す人",
    "grp.order.natural": "自然（名前を呼ばれた人、次に話好き度）",
    "grp.order.list": "順番（リストの順）",
    "grp.order.manual": "手動（「今すぐ話す」のみ）",
    "grp.muted": "ミュート（選ばれたときだけ話す）",
    "grp.prompt": "プロンプトに入れるキャラクターカード",
    "grp.prompt.join": "全員のカード（速い：キャッシュを共有）",
    "grp.prompt.swap": "話す人のカードだけ",
    "grp.speaker": "話す人",
    "grp.speak": "今すぐ話す",
    "grp.speak_each": "今すぐ話す：",
    "grp.need_members": "まずグループチャットのキャラクターを選んでください。",
    "grp.need_speaker": "話す人を選んでください。",
}
i18n.add(EN, JA)


@dataclass
class GroupControls:
    enabled: gr.Checkbox
    panel: gr.Column
    members: gr.Dropdown
    order: gr.Radio
    muted: gr.Dropdown
    prompt: gr.Radio
    speaker: gr.Dropdown
    speak: gr.Button
    speak_as: list[gr.Button]  # "Speak now" for the i-th member; hidden past the group's size

    @property
    def outputs(self) -> list[Any]:
        """What `values` updates, in its order."""
        fixed = [self.enabled, self.panel, self.members, self.order, self.muted, self.prompt, self.speaker]
        return [*fixed, *self.speak_as]

    @property
    def inputs(self) -> list[Any]:
        """What a new group chat is made from, in `settings_of`'s order (after `enabled`)."""
        return [self.enabled, self.members, self.order, self.muted, self.prompt]


def preset_choices(ctx: UIContext) -> list[tuple[str, str]]:
    return [(c.display_name, c.name) for c in ctx.rt.presets.list()]


def members_of(session: Session) -> list[Character]:
    return [Character.model_validate(c) for c in session.characters]


def checkbox() -> gr.Checkbox:
    """ "Group chat", placed in the chat tab's character row; `build` adds the panel it shows."""
    return gr.Checkbox(value=False, label=I18N("grp.enable"), scale=1, min_width=120, elem_id="group-chat")


def build(ctx: UIContext, enabled: gr.Checkbox) -> GroupControls:
    return GroupControls(enabled, *_panel(ctx))


def _panel(ctx: UIContext) -> tuple[Any, ...]:
    orders = [(I18N(f"grp.order.{o}"), o) for o in ("natural", "list", "manual")]
    prompts = [(I18N(f"grp.prompt.{p}"), p) for p in ("join", "swap")]
    with gr.Column(visible=False, elem_id="group-panel") as panel:
        members = gr.Dropdown(
            choices=preset_choices(ctx),
            value=[],
            multiselect=True,
            label=I18N("grp.members"),
            elem_id="group-members",
        )
        with gr.Row():
            order = gr.Radio(orders, value="natural", label=I18N("grp.order"), scale=2, elem_id="group-order")
            muted = gr.Dropdown(
                choices=[],
                value=[],
                multiselect=True,
                label=I18N("grp.muted"),
                scale=2,
                elem_id="group-muted",
            )
            prompt = gr.Radio(
                prompts, value="join", label=I18N("grp.prompt"), scale=2, elem_id="group-prompt"
            )
        with gr.Row(equal_height=True):
            speaker = gr.Dropdown(
                choices=[], value=None, label=I18N("grp.speaker"), scale=3, elem_id="group-speaker"
            )
            speak = gr.Button(I18N("grp.speak"), scale=1, elem_id="speak-now")
        with gr.Row(equal_height=True, elem_id="speak-as"):
            gr.Markdown(I18N("grp.speak_each"), elem_id="speak-as-label")
            speak_as = [
                gr.Button("", visible=False, size="sm", min_width=80, elem_id=f"speak-as-{i}")
                for i in range(SPEAK_BUTTONS)
            ]
    return panel, members, order, muted, prompt, speaker, speak, speak_as


def speak_buttons(pairs: list[tuple[str, str]]) -> list[Any]:
    """Updates for the "Speak now" buttons: one per (display name, name) member, in order; the rest hidden."""
    shown = [gr.update(value=title, visible=True) for title, _ in pairs[:SPEAK_BUTTONS]]
    return shown + [gr.update(visible=False)] * (SPEAK_BUTTONS - len(shown))


def settings_of(order: str | None, muted: list[str] | None, prompt: str | None) -> dict[str, Any]:
    return GroupSettings.model_validate(
        {"order": order or "natural", "muted": list(muted or []), "prompt": prompt or "join"}
    ).model_dump()


def speaker_for(session: Session | None, speaker: str | None) -> str | None:
    """The speaker a send or an edit names: the picked one in a group chat whose order is manual."""
    if session is None or not session.characters or not speaker:
        return None
    return speaker if (session.group or {}).get("order") == "manual" else None


def values(ctx: UIContext, session: Session | None) -> tuple[Any, ...]:
    """Updates for `outputs`: a group chat's members and settings; a one-character chat hides the panel;
    no chat (a new one) keeps what the user picked."""
    if session is None:
        return (gr.skip(), gr.skip(), gr.update(interactive=True), *[gr.skip()] * (4 + SPEAK_BUTTONS))
    if not session.characters:
        return (
            False,
            gr.update(visible=False),
            gr.update(interactive=True),
            *[gr.skip()] * (4 + SPEAK_BUTTONS),
        )
    chars = members_of(session)
    pairs = [(c.display_name, c.name) for c in chars]
    group = session.group or {}
    known = {name for _, name in preset_choices(ctx)}
    choices = preset_choices(ctx) + [p for p in pairs if p[1] not in known]
    return (
        True,
        gr.update(visible=True),
        gr.update(choices=choices, value=[c.name for c in chars], interactive=False),
        group.get("order", "natural"),
        gr.update(choices=pairs, value=list(group.get("muted", []))),
        group.get("prompt", "join"),
        gr.update(choices=pairs, value=chars[0].name),
        *speak_buttons(pairs),
    )


def wire(ctx: UIContext, g: GroupControls, load_session: Any) -> None:
    """The panel's own events (the chat tab wires the checkbox and Speak now)."""
    rt, sid, lang = ctx.rt, ctx.session_id, ctx.lang

    def on_members(names: list[str] | None, muted: list[str] | None, speaker: str | None):
        titles = dict((v, k) for k, v in preset_choices(ctx))
        pairs = [(titles.get(n, n), n) for n in names or []]
        keep = [m for m in muted or [] if m in (names or [])]
        who = speaker if speaker in (names or []) else (pairs[0][1] if pairs else None)
        return (
            gr.update(choices=pairs, value=keep),
            gr.update(choices=pairs, value=who),
            *speak_buttons(pairs),
        )

    g.members.change(
        on_members,
        [g.members, g.muted, g.speaker],
        [g.muted, g.speaker, *g.speak_as],
        show_progress="hidden",
        trigger_mode="always_last",  # each pick fires: the last one knows every member
    )

    def on_setting(session_id: str | None, lang_value: str | None, order: str, muted: list[str], prompt: str):
        session = load_session(ctx, session_id)
        if session is None or not session.characters:
            return  # used when the first message creates the chat
        try:
            session.group = settings_of(order, muted, prompt)
            rt.sessions.save(session)
        except (EngineError, ValueError) as exc:
            warn(getattr(exc, "message", None) or tr("grp.need_members", lang_value))

    for comp in (g.order, g.muted, g.prompt):
        comp.input(on_setting, [sid, lang, g.order, g.muted, g.prompt], None, show_progress="hidden")
