"""English and Japanese UI strings. Labels use I18N(key) (translated in the browser); server-side
messages use tr(key, lang)."""

from __future__ import annotations

from typing import Any, cast

import gradio as gr

EN: dict[str, str] = {
    "app.title": "Local LLM Chat",
    "tab.chat": "Chat",
    "chat.character": "Character",
    "chat.custom": "Custom (no character)",
    "chat.message": "Message",
    "chat.placeholder": "Type a message and press Enter",
    "chat.send": "Send",
    "chat.stop": "Stop",
    "chat.regenerate": "Regenerate",
    "chat.branch": "Branch from here",
    "chat.pick_message": "Click a message in the chat first, then Branch from here.",
    "chat.selected": "Message {n} selected",
    "chat.continue": "Continue",
    "chat.delete_last": "Delete last exchange",
    "chat.new": "New chat",
    "chat.prev": "◀",
    "chat.next": "▶",
    "chat.details": "Message details",
    "chat.version_of": "Message {n}: version ◂ {v}/{m} ▸ (click a message, then ◀ ▶)",
    "status.no_model": "No model loaded",
    "status.waiting": "Waiting for the model: {n} ahead",
    "status.generating": "Generating…",
    "chat.thinking": "Thinking…",
    "chat.thought": "Thought",
    "status.dropped": "{n} older messages were left out to fit the context window",
    "status.ctx": "context {used}/{total}",
    "status.session": "Session",
    "status.new_session": "New chat (saved on the first message)",
    "status.stopped": "stopped",
    "chat.nothing_to_regenerate": "There is no reply to regenerate yet.",
    "chat.nothing_to_continue": "There is no reply to continue yet.",
    "chat.impersonate": "Impersonate",
    "chat.options": "Persona, lorebooks and reply start",
    "chat.persona": "Persona ({{user}})",
    "chat.persona_default": "Default persona",
    "chat.lorebooks": "Lorebooks attached to this chat",
    "chat.reply_prefix": "Start reply with",
    "chat.reply_prefix_info": "Every reply begins with this text; the model continues it.",
    "chat.show_prefix": "Show the prefix in the message",
    "chat.preview": "Preview the prompt",
    "chat.options_saved": "This chat now uses these settings.",
    "chat.earlier": "Show earlier",
    "chat.hidden": "{n} earlier rows hidden (Show earlier)",
    "tools.section": "Tools",
    "tools.mode": "Tools for the next replies",
    "tools.mode_info": "The MCP tools of config/mcp.json that are on in the Tools tab. "
    "Each call asks you first.",
    "tools.mode_auto": "The model decides",
    "tools.mode_off": "No tools",
    "tools.mode_force": "Always call {name}",
    "tools.arguments": "Arguments",
    "tools.result": "Result",
    "tools.done": "done",
    "tools.failed": "failed",
    "tools.ask_title": "{name}: allow this call?",
    "tools.ask_text": "The model wants to run this tool. Allow runs it once, Allow always also runs its "
    "later calls unasked until you close this page, Deny tells the model it may not.",
    "tools.allow": "Allow",
    "tools.always": "Allow always",
    "tools.deny": "Deny",
    "tab.tools": "Tools",
    "tools.servers": "Servers",
    "tools.list": "Tools the model may call",
    "tools.list_info": "Turn a tool off and the model is not offered it. Remembered.",
    "tools.reload": "Reload config",
    "tools.none": "No MCP servers: put them in {path} (the mcpServers format of Claude Desktop, LM Studio "
    "and Jan), then press Reload config.",
    "tools.approval": "Approval (tools.approval): {mode}",
    "tools.reloaded": "Read {path} again.",
}

JA: dict[str, str] = {
    "app.title": "ローカル LLM チャット",
    "tab.chat": "チャット",
    "chat.character": "キャラクター",
    "chat.custom": "カスタム（キャラクターなし）",
    "chat.message": "メッセージ",
    "chat.placeholder": "メッセージを入力して Enter",
    "chat.send": "送信",
    "chat.stop": "停止",
    "chat.regenerate": "再生成",
    "chat.branch": "ここから分岐",
    "chat.pick_message": "先にチャットのメッセージをクリックしてから「ここから分岐」を押してください。",
    "chat.selected": "メッセージ {n} を選択中",
    "chat.continue": "続きを生成",
    "chat.delete_last": "最後のやり取りを削除",
    "chat.new": "新しいチャット",
    "chat.prev": "◀",
    "chat.next": "▶",
    "chat.details": "メッセージの詳細",
    "chat.version_of": "メッセージ {n}: バージョン ◂ {v}/{m} ▸（メッセージをクリックして ◀ ▶）",
    "status.no_model": "モデルが読み込まれていません",
    "status.waiting": "モデルの順番待ち：前に {n} 件",
    "status.generating": "生成中…",
    "chat.thinking": "思考中…",
    "chat.thought": "思考",
    "status.dropped": "コンテキストに収めるため、古いメッセージ {n} 件を省きました",
    "status.ctx": "コンテキスト {used}/{total}",
    "status.session": "セッション",
    "status.new_session": "新しいチャット（最初のメッセージで保存）",
    "status.stopped": "停止",
    "chat.nothing_to_regenerate": "再生成できる返信がまだありません。",
    "chat.nothing_to_continue": "続きを生成できる返信がまだありません。",
    "chat.impersonate": "代わりに書く",
    "chat.options": "ペルソナ・ロアブック・返信の書き出し",
    "chat.persona": "ペルソナ（{{user}}）",
    "chat.persona_default": "既定のペルソナ",
    "chat.lorebooks": "このチャットに付けるロアブック",
    "chat.reply_prefix": "返信の書き出し",
    "chat.reply_prefix_info": "返信は必ずこの文字列で始まり、モデルがその続きを書きます。",
    "chat.show_prefix": "書き出しをメッセージに表示する",
    "chat.preview": "プロンプトをプレビュー",
    "chat.options_saved": "このチャットはこの設定を使います。",
    "chat.earlier": "以前を表示",
    "chat.hidden": "以前の {n} 件を非表示（「以前を表示」で表示）",
    "tools.section": "ツール",
    "tools.mode": "次の返信で使うツール",
    "tools.mode_info": "config/mcp.json の MCP ツールのうち、ツールタブでオンのもの。"
    "呼び出しは毎回確認します。",
    "tools.mode_auto": "モデルが判断",
    "tools.mode_off": "ツールを使わない",
    "tools.mode_force": "必ず {name} を呼ぶ",
    "tools.arguments": "引数",
    "tools.result": "結果",
    "tools.done": "完了",
    "tools.failed": "失敗",
    "tools.ask_title": "{name}：この呼び出しを許可しますか？",
    "tools.ask_text": "モデルがこのツールを実行しようとしています。「許可」は今回だけ、"
    "「常に許可」はこのページを閉じるまで以後の呼び出しも確認なしで実行し、"
    "「拒否」はモデルに使えないことを伝えます。",
    "tools.allow": "許可",
    "tools.always": "常に許可",
    "tools.deny": "拒否",
    "tab.tools": "ツール",
    "tools.servers": "サーバー",
    "tools.list": "モデルが呼べるツール",
    "tools.list_info": "オフにしたツールはモデルに提示されません。設定は保存されます。",
    "tools.reload": "設定を再読み込み",
    "tools.none": "MCP サーバーがありません。{path} に"
    "（Claude Desktop・LM Studio・Jan と同じ mcpServers 形式で）"
    "書いてから「設定を再読み込み」を押してください。",
    "tools.approval": "承認（tools.approval）：{mode}",
    "tools.reloaded": "{path} を読み直しました。",
}

STRINGS = {"en": EN, "ja": JA}
I18N = gr.I18n(en=EN, ja=JA)  # holds these same dicts, so add() before mounting reaches the browser


def i18n_label(key: str) -> str:
    """I18N(key) typed `str`, for DownloadButton and UploadButton labels (Gradio translates them too)."""
    return cast(str, I18N(key))


def add(en: dict[str, str], ja: dict[str, str]) -> None:
    """Register a tab's strings. Every key must exist in both languages."""
    missing = set(en) ^ set(ja)
    if missing:
        raise ValueError(f"i18n keys missing in one language: {sorted(missing)}")
    EN.update(en)
    JA.update(ja)


def tr(key: str, lang: str | None = "en", **fmt: object) -> str:
    table = STRINGS.get((lang or "en")[:2], EN)
    text = table.get(key) or EN.get(key, key)
    return text.format(**fmt) if fmt else text


# --- language switch ------------------------------------------------------------------------------
# Gradio picks the label language from navigator.language once, and its footer Settings panel calls the
# frontend's `changeLocale` (exported by the core-*.js module). We import that same module (same URL,
# same instance) and call it; the choice is kept in localStorage and applied on every page load.

LANGUAGES = [("English", "en"), ("日本語", "ja")]
LOCALE_KEY = "llmchat.locale"

_APPLY_JS = """async (lang) => {
  try {
    const url = performance.getEntriesByType("resource").map((e) => e.name)
      .find((n) => /\\/assets\\/core-[^/]*\\.js$/.test(n));
    if (url) (await import(url)).changeLocale(lang);
  } catch (err) { console.warn("language switch failed", err); }
}"""

SWITCH_JS = f"""async (lang) => {{
  localStorage.setItem("{LOCALE_KEY}", lang);
  await ({_APPLY_JS})(lang);
  return lang;
}}"""

INIT_JS = f"""async () => {{
  const saved = localStorage.getItem("{LOCALE_KEY}");
  const lang = saved || ((navigator.language || "en").toLowerCase().startsWith("ja") ? "ja" : "en");
  if (saved) await ({_APPLY_JS})(saved);
  return lang;
}}"""


def language_radio() -> gr.Radio:
    return gr.Radio(
        LANGUAGES, value=None, show_label=False, container=False, elem_id="lang-switch", min_width=160
    )


def wire_language(
    demo: gr.Blocks,
    radio: gr.Radio,
    lang_state: gr.BrowserState,
    tabs: list[tuple[gr.Tab, str]],
    on_load: list[tuple[Any, ...]],
) -> None:
    """Switching relabels the page, stores the choice in `lang_state`, and re-sends the tab labels: Gradio
    translates the label of a tab that was never shown only when it is sent again. The page load applies
    the saved choice, then runs each of `on_load` (fn, inputs, outputs) in turn."""
    targets = [tab for tab, _ in tabs]

    def relabel() -> list[gr.Tab]:
        return [gr.Tab(label=I18N(key)) for _, key in tabs]

    radio.input(_pick, radio, lang_state, js=SWITCH_JS, show_progress="hidden", queue=False).then(
        relabel, None, targets, show_progress="hidden", queue=False
    )
    loaded = demo.load(_loaded, [radio], [radio, lang_state], js=INIT_JS, show_progress="hidden").then(
        relabel, None, targets, show_progress="hidden"
    )
    for step in on_load:
        loaded = loaded.then(*step)


def _pick(lang: str | None) -> str:
    return lang if lang in STRINGS else "en"


def _loaded(lang: str | None) -> tuple[str, str]:
    lang = _pick(lang)
    return lang, lang
