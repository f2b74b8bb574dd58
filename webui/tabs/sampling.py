"""Sampling tab: every SamplingParams field with its bounds and help, presets, and where each value came from.

Values are stored in the open chat (Session.params, only what differs from config + character); with no chat
open, Apply starts one with the chat tab's character.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from engine import EngineError, Runtime, SamplingParams, Session

from .. import i18n
from ..i18n import I18N, tr
from ..markup import notify, plain_md, warn
from .chat import chat_of, load_session, status_line
from .context import CUSTOM, ChatView, UIContext

PARAM_NAMES = tuple(SamplingParams.model_fields)
GROUPS = {
    "randomness": ("temperature", "top_p", "top_k", "min_p", "typical_p"),
    "repetition": ("repeat_penalty", "presence_penalty", "frequency_penalty"),
    "mirostat": ("mirostat_mode", "mirostat_tau", "mirostat_eta"),
    "output": ("max_tokens", "stop", "seed", "grammar"),
    "thinking": ("thinking", "thinking_budget"),
}
NUMBER_FIELDS = ("max_tokens", "seed", "thinking_budget")

LABELS = {
    "temperature": ("Temperature", "温度 (temperature)"),
    "top_p": ("Top-p", "Top-p"),
    "top_k": ("Top-k", "Top-k"),
    "min_p": ("Min-p", "Min-p"),
    "typical_p": ("Typical-p", "Typical-p"),
    "repeat_penalty": ("Repeat penalty", "繰り返しペナルティ"),
    "presence_penalty": ("Presence penalty", "存在ペナルティ"),
    "frequency_penalty": ("Frequency penalty", "頻度ペナルティ"),
    "mirostat_mode": ("Mirostat mode", "Mirostat モード"),
    "mirostat_tau": ("Mirostat tau", "Mirostat tau"),
    "mirostat_eta": ("Mirostat eta", "Mirostat eta"),
    "max_tokens": ("Max tokens", "最大トークン数"),
    "stop": ("Stop strings", "停止文字列"),
    "seed": ("Seed", "シード"),
    "grammar": ("GBNF grammar", "GBNF 文法"),
    "thinking": ("Thinking", "思考"),
    "thinking_budget": ("Thinking budget (tokens)", "思考の上限（トークン数）"),
}
JA_HELP = {
    "temperature": "ランダムさ。0 で常に最も確からしいトークンを選びます。",
    "top_p": "累積確率がこの値に収まるトークンだけを残します（nucleus サンプリング）。",
    "top_k": "確率の高い上位 k 個のトークンだけを残します。0 で無効。",
    "min_p": "最上位トークンの確率に対してこの割合未満のトークンを除きます。",
    "typical_p": "局所的典型サンプリング。1 で無効。",
    "repeat_penalty": "最近出たトークンにペナルティを与えます。1 で無効。",
    "presence_penalty": "一度でも出たトークンにペナルティを与えます。",
    "frequency_penalty": "出現回数に応じてトークンにペナルティを与えます。",
    "mirostat_mode": "Mirostat：0 オフ、1 v1、2 v2。",
    "mirostat_tau": "Mirostat の目標エントロピー。",
    "mirostat_eta": "Mirostat の学習率。",
    "max_tokens": "返答の最大長（トークン数）。",
    "stop": "返答を終わらせる文字列。1 行に 1 つ。",
    "seed": "乱数シード。-1 で毎回新しいシード。",
    "grammar": "返答を制約する GBNF 文法。空なら制約なし。",
    "thinking": "思考するモデル：auto（モデルの既定）、on、off。",
    "thinking_budget": "答える前の思考の最大トークン数。空なら上限なし。",
}


def bounds(name: str) -> tuple[Any, Any]:
    """The (ge, le) bounds declared on a SamplingParams field; None where it has none."""
    lo = hi = None
    for item in SamplingParams.model_fields[name].metadata:
        lo = getattr(item, "ge", lo)
        hi = getattr(item, "le", hi)
    return lo, hi


def _help(name: str, ja: bool) -> str:
    lo, hi = bounds(name)
    desc = JA_HELP[name] if ja else (SamplingParams.model_fields[name].description or "")
    if name == "stop":
        return desc if ja else desc + " One per line, at most 16."
    if lo is None or hi is None:
        return desc
    return f"{desc} 範囲：{lo}〜{hi}" if ja else f"{desc} Range: {lo} to {hi}."


EN = {
    "tab.sampling": "Sampling",
    "sp.group.randomness": "Randomness",
    "sp.group.repetition": "Repetition",
    "sp.group.mirostat": "Mirostat",
    "sp.group.output": "Output",
    "sp.group.thinking": "Thinking",
    "sp.preset": "Sampling preset",
    "sp.load": "Load preset",
    "sp.reset": "Reset to defaults",
    "sp.preset_name": "Save current values as",
    "sp.preset_name_ph": "My preset",
    "sp.save_preset": "Save preset",
    "sp.delete_preset": "Delete preset",
    "sp.apply": "Apply to chat",
    "sp.revert": "Revert",
    "sp.grammar_example": "Grammar examples",
    "sp.sources": "Where each value comes from",
    "sp.col.param": "Parameter",
    "sp.col.value": "Value",
    "sp.col.source": "Source",
    "sp.src.default": "built-in default",
    "sp.src.config": "config file",
    "sp.src.character": "character",
    "sp.src.session": "this chat",
    "sp.target.session": "Values of the open chat **{title}**. *Apply* saves them in it.",
    "sp.target.new": "No chat is open: *Apply* starts a new chat with these values, as “{char}”.",
    "sp.applied": "Sampling saved in chat “{title}”.",
    "sp.started": "Started a new chat with these sampling values.",
    "sp.loaded": "Preset “{name}” is in the form: press Apply to use it.",
    "sp.reset_done": "Defaults (config + character) are in the form: press Apply to use them.",
    "sp.saved_preset": "Saved sampling preset “{name}”.",
    "sp.deleted_preset": "Deleted sampling preset “{name}”.",
    "sp.builtin": "“{name}” is built in and cannot be deleted.",
    "sp.invalid": "{label}: {message}",
    "sp.none": "(none)",
}
JA = {
    "tab.sampling": "サンプリング",
    "sp.group.randomness": "ランダムさ",
    "sp.group.repetition": "繰り返し",
    "sp.group.mirostat": "Mirostat",
    "sp.group.output": "出力",
    "sp.group.thinking": "思考",
    "sp.preset": "サンプリングプリセット",
    "sp.load": "プリセットを読み込む",
    "sp.reset": "既定値に戻す",
    "sp.preset_name": "現在の値を保存する名前",
    "sp.preset_name_ph": "マイプリセット",
    "sp.save_preset": "プリセットを保存",
    "sp.delete_preset": "プリセットを削除",
    "sp.apply": "チャットに適用",
    "sp.revert": "元に戻す",
    "sp.grammar_example": "文法の例",
    "sp.sources": "各値の出所",
    "sp.col.param": "パラメーター",
    "sp.col.value": "値",
    "sp.col.source": "出所",
    "sp.src.default": "組み込みの既定値",
    "sp.src.config": "設定ファイル",
    "sp.src.character": "キャラクター",
    "sp.src.session": "このチャット",
    "sp.target.session": "開いているチャット **{title}** の値です。*適用* でこのチャットに保存します。",
    "sp.target.new": (
        "チャットが開かれていません：*適用* でこの値の新しいチャットを「{char}」として始めます。"
    ),
    "sp.applied": "サンプリング設定をチャット「{title}」に保存しました。",
    "sp.started": "この値で新しいチャットを始めました。",
    "sp.loaded": "プリセット「{name}」をフォームに読み込みました。適用を押すと使われます。",
    "sp.reset_done": "既定値（設定ファイル＋キャラクター）をフォームに入れました。適用を押すと使われます。",
    "sp.saved_preset": "サンプリングプリセット「{name}」を保存しました。",
    "sp.deleted_preset": "サンプリングプリセット「{name}」を削除しました。",
    "sp.builtin": "「{name}」は組み込みのため削除できません。",
    "sp.invalid": "{label}：{message}",
    "sp.none": "（なし）",
}
for _n, (_en, _ja) in LABELS.items():
    EN[f"sp.{_n}"], JA[f"sp.{_n}"] = _en, _ja
    EN[f"sp.info.{_n}"], JA[f"sp.info.{_n}"] = _help(_n, False), _help(_n, True)
i18n.add(EN, JA)


def make_control(name: str, default: Any) -> gr.components.Component:
    kw: dict[str, Any] = {
        "label": I18N(f"sp.{name}"),
        "info": I18N(f"sp.info.{name}"),
        "elem_id": f"sp-{name}",
    }
    if name in NUMBER_FIELDS:
        return gr.Number(value=default, precision=0, **kw)  # no min/max: SamplingParams.parse names the field
    if name == "mirostat_mode":
        return gr.Radio([0, 1, 2], value=default, **kw)
    if name == "thinking":
        return gr.Radio(["auto", "on", "off"], value=default, **kw)
    if name == "stop":
        return gr.Textbox(value="\n".join(default), lines=2, max_lines=8, **kw)
    if name == "grammar":
        return gr.Textbox(value=default, lines=6, max_lines=20, **kw)
    lo, hi = bounds(name)
    is_int = SamplingParams.model_fields[name].annotation is int
    return gr.Slider(lo, hi, value=default, step=1 if is_int else 0.01, **kw)


def to_ui(params: SamplingParams) -> list[Any]:
    data = params.model_dump()
    return ["\n".join(data[n]) if n == "stop" else data[n] for n in PARAM_NAMES]


def from_ui(values: list[Any]) -> dict[str, Any]:
    """Form values -> a params dict (not yet validated)."""
    out = dict(zip(PARAM_NAMES, values, strict=True))
    out["stop"] = [s for s in str(out["stop"] or "").splitlines() if s]
    out["grammar"] = out["grammar"] or ""
    for n in NUMBER_FIELDS:
        v = out[n]
        if isinstance(v, float) and v.is_integer():
            out[n] = int(v)
        elif v == "":
            out[n] = None
    return out


def invalid_message(exc: EngineError, lang: str | None) -> str:
    field = (exc.field or "").split(".")[-1]
    if field in LABELS:
        return tr("sp.invalid", lang, label=tr(f"sp.{field}", lang), message=exc.message)
    return exc.message


class SamplingLayout:
    """The Sampling tab's components: a control per parameter, presets, and the sources table."""

    def __init__(self, rt: Runtime, start: dict[str, Any]) -> None:
        store = rt.sampling_presets
        self.target = gr.Markdown(elem_id="sp-target")
        with gr.Row(equal_height=True):
            self.preset = gr.Dropdown(
                store.names(), value="Balanced", label=I18N("sp.preset"), scale=3, elem_id="sp-preset"
            )
            with gr.Column(scale=1, min_width=180):
                self.load_btn = gr.Button(I18N("sp.load"), size="sm", elem_id="sp-load")
                self.reset_btn = gr.Button(I18N("sp.reset"), size="sm", elem_id="sp-reset")
        self.controls = controls = self.build_controls(start, store.grammars)
        self.fields = [controls[n] for n in PARAM_NAMES]
        with gr.Row():
            self.apply_btn = gr.Button(I18N("sp.apply"), variant="primary", elem_id="sp-apply")
            self.revert_btn = gr.Button(I18N("sp.revert"), elem_id="sp-revert")
        with gr.Row(equal_height=True):
            self.preset_name = gr.Textbox(
                label=I18N("sp.preset_name"),
                placeholder=I18N("sp.preset_name_ph"),
                scale=3,
                elem_id="sp-preset-name",
            )
            with gr.Column(scale=1, min_width=180):
                self.save_preset = gr.Button(I18N("sp.save_preset"), size="sm", elem_id="sp-save-preset")
                self.delete_preset = gr.Button(
                    I18N("sp.delete_preset"), size="sm", variant="stop", elem_id="sp-delete-preset"
                )
        with gr.Accordion(I18N("sp.sources"), open=True):
            self.sources = gr.Dataframe(interactive=False, elem_id="sp-sources", wrap=True, max_height=420)

    def build_controls(self, start: dict[str, Any], grammars: dict[str, str]) -> dict[str, Any]:
        controls: dict[str, Any] = {}
        with gr.Row():
            for group in ("randomness", "repetition"):
                with gr.Column(), gr.Accordion(I18N("sp.group." + group)):
                    for name in GROUPS[group]:
                        controls[name] = make_control(name, start[name])
        with gr.Row():
            with gr.Column(), gr.Accordion(I18N("sp.group.mirostat")):
                for name in GROUPS["mirostat"]:
                    controls[name] = make_control(name, start[name])
            with gr.Column(), gr.Accordion(I18N("sp.group.output")):
                for name in ("max_tokens", "seed", "stop"):
                    controls[name] = make_control(name, start[name])
            with gr.Column(), gr.Accordion(I18N("sp.group.thinking")):
                for name in GROUPS["thinking"]:
                    controls[name] = make_control(name, start[name])
        with gr.Group():
            self.examples = gr.Dropdown(
                [("—", "")] + [(k, k) for k in grammars],
                value="",
                label=I18N("sp.grammar_example"),
                elem_id="sp-grammar-ex",
            )
            controls["grammar"] = make_control("grammar", start["grammar"])
        return controls


class SamplingHandlers:
    """The Sampling tab's event handlers."""

    def __init__(self, ctx: UIContext) -> None:
        self.ctx, self.rt, self.store = ctx, ctx.rt, ctx.rt.sampling_presets
        self.defaults = ctx.rt.settings.generation

    def context_of(
        self, session_id: str | None, char_name: str | None
    ) -> tuple[Session | None, dict[str, Any]]:
        """The open session (or None) and the character sampling that applies."""
        session = load_session(self.ctx, session_id)
        if session is not None:
            char = session.character_snapshot()
        else:
            try:
                char = self.rt.character(None if char_name in (None, CUSTOM) else char_name)
            except EngineError:
                char = None
        return session, dict(char.sampling) if char else {}

    def sources_table(
        self, char_sampling: dict[str, Any], session: Session | None, lang_value: str | None
    ) -> dict:
        rows = self.defaults.sources(char_sampling, session.params if session else None)
        data = [
            [tr(f"sp.{n}", lang_value), _show(v, lang_value), tr(f"sp.src.{s}", lang_value)]
            for n, v, s in rows
        ]
        headers = [tr(f"sp.col.{c}", lang_value) for c in ("param", "value", "source")]
        return {"headers": headers, "data": data}

    def target_text(self, session: Session | None, char_name: str | None, lang_value: str | None) -> str:
        if session is not None:
            return tr("sp.target.session", lang_value, title=plain_md(session.title or session.id))
        if char_name in (None, CUSTOM):
            label = tr("chat.custom", lang_value)
        else:
            label = dict((v, k) for k, v in self.ctx.character_choices()).get(char_name, char_name)
        return tr("sp.target.new", lang_value, char=plain_md(str(label)))

    def refresh(self, session_id: str | None, char_name: str | None, lang_value: str | None):
        """The controls' values, then the target line, the sources table and the preset choices."""
        defaults = self.defaults
        session, char_sampling = self.context_of(session_id, char_name)
        try:
            values = SamplingParams.parse(
                {**defaults.model_dump(), **char_sampling, **(session.params if session else {})}
            )
        except EngineError as exc:
            warn(exc.message)
            values = defaults
        for problem in self.store.pop_problems():
            warn(problem)
        return (
            *to_ui(values),
            self.target_text(session, char_name, lang_value),
            self.sources_table(char_sampling, session, lang_value),
            gr.update(choices=self.store.names()),
        )

    def apply(self, *args: Any):
        """(target, sources, session id, chatbot, status, preset)."""
        *values, session_id, char_name, custom_prompt, lang_value = args
        session, char_sampling = self.context_of(session_id, char_name)
        try:
            wanted = from_ui(values)
            SamplingParams.parse(wanted)
            overrides = self.defaults.session_overrides(char_sampling, wanted)
            if session is None:
                character = None if char_name in (None, CUSTOM) else char_name
                system = (custom_prompt or None) if character is None else None
                session = self.rt.new_session(character=character, system_prompt=system, params=overrides)
                note = tr("sp.started", lang_value)
            else:
                session.params = overrides
                self.rt.sessions.save(session)
                note = tr("sp.applied", lang_value, title=session.title or session.id)
        except EngineError as exc:
            warn(invalid_message(exc, lang_value))
            return gr.skip()
        notify(note)
        return (
            self.target_text(session, char_name, lang_value),
            self.sources_table(char_sampling, session, lang_value),
            session.id,
            chat_of(self.ctx, session),
            status_line(self.ctx, session, lang_value),
            gr.skip(),
        )

    def load_preset(
        self, name: str | None, session_id: str | None, char_name: str | None, lang_value: str | None
    ):
        _, char_sampling = self.context_of(session_id, char_name)
        try:
            values = SamplingParams.parse(
                {**self.defaults.model_dump(), **char_sampling, **self.store.get(name or "")}
            )
        except EngineError as exc:
            warn(exc.message)
            return gr.skip()
        notify(tr("sp.loaded", lang_value, name=name))
        return to_ui(values)

    def reset(self, session_id: str | None, char_name: str | None, lang_value: str | None):
        _, char_sampling = self.context_of(session_id, char_name)
        notify(tr("sp.reset_done", lang_value))
        return to_ui(SamplingParams.parse({**self.defaults.model_dump(), **char_sampling}))

    def save_as(self, *args: Any):
        *values, name, lang_value = args
        try:
            saved = self.store.save(name, SamplingParams.parse(from_ui(values)).model_dump())
        except EngineError as exc:
            warn(invalid_message(exc, lang_value))
            return gr.skip()
        notify(tr("sp.saved_preset", lang_value, name=saved))
        return gr.update(choices=self.store.names(), value=saved), ""

    def delete(self, name: str | None, lang_value: str | None):
        if name and self.store.is_builtin(name):
            warn(tr("sp.builtin", lang_value, name=name))
            return gr.skip()
        try:
            self.store.delete(name or "")
        except EngineError as exc:
            warn(exc.message)
            return gr.skip()
        notify(tr("sp.deleted_preset", lang_value, name=name))
        return gr.update(choices=self.store.names(), value="Balanced")

    def pick_example(self, key: str | None):
        return self.store.grammars.get(key or "", gr.skip())


def build(ctx: UIContext, tab: gr.Tab, chat: ChatView) -> None:
    """The Sampling tab. It reads `chat`'s character, and Apply updates its chatbot and status."""
    ui = SamplingLayout(ctx.rt, ctx.rt.settings.generation.model_dump())
    h = SamplingHandlers(ctx)
    sid, lang, fields, chat_char = ctx.session_id, ctx.lang, ui.fields, chat.character
    ctx_inputs = [sid, chat_char, lang]
    refresh_outs = [*fields, ui.target, ui.sources, ui.preset]
    tab.select(h.refresh, ctx_inputs, refresh_outs, show_progress="hidden")
    ui.revert_btn.click(h.refresh, ctx_inputs, refresh_outs)
    ui.apply_btn.click(
        h.apply,
        [*fields, sid, chat_char, ctx.custom_prompt, lang],
        [ui.target, ui.sources, sid, chat.chatbot, chat.status, ui.preset],
    )
    ui.load_btn.click(h.load_preset, [ui.preset, *ctx_inputs], fields)
    ui.reset_btn.click(h.reset, ctx_inputs, fields)
    ui.save_preset.click(h.save_as, [*fields, ui.preset_name, lang], [ui.preset, ui.preset_name])
    ui.delete_preset.click(h.delete, [ui.preset, lang], [ui.preset])
    ui.examples.input(h.pick_example, ui.examples, ui.controls["grammar"])


def _show(value: Any, lang: str | None) -> str:
    if value in ("", []):
        return tr("sp.none", lang)
    if isinstance(value, list):
        return ", ".join(repr(v) for v in value)
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "…"
