"""MCP tools in the chat tab.

- Which tools a reply may call, per browser tab: "auto" (the model decides among the enabled tools), "off",
  or one tool's name (each reply calls it: the way to make a small model use a tool).
- Each call shows in the chat as a collapsible block with its arguments, its result and its time.
- A call that needs the user's yes (`tools.approval: ask`) waits with the chat's last message asking it,
  with Allow / Allow always / Deny under it (the Chatbot's options); "Allow always" lets that tool run
  unasked for the rest of the browser session.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gradio as gr

from engine import Session, ToolCall, ToolResult

from ..i18n import I18N, tr
from ..markup import escape_text
from .pages import PageMap, page_key

if TYPE_CHECKING:
    from .context import UIContext

AUTO, OFF = "auto", "off"
ANSWERS = ("allow", "always", "deny")


@dataclass
class Asking:
    """Put into a turn's event stream when a call waits for the user: the page must show the prompt."""

    call: ToolCall


@dataclass
class LiveCall:
    """A call of the round in progress, before the session holds it: shown from the turn's events."""

    call: ToolCall
    result: ToolResult | None = None
    asking: bool = False


@dataclass
class ToolChoices:
    """Per browser tab (Gradio's session hash): the tool choice, the tools allowed always, the call
    waiting for an answer."""

    mode: PageMap[str] = field(default_factory=PageMap)
    always: PageMap[set[str]] = field(default_factory=PageMap)
    _waiting: dict[str, tuple[str, threading.Event, list[str]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ask(self, key: str, call: ToolCall, cancel: threading.Event) -> str:
        """Wait for the user's answer to `call` (Stop or a closed tab denies it)."""
        answered, answer = threading.Event(), ["deny"]
        with self._lock:
            self._waiting[key] = (call.id, answered, answer)
        try:
            while not answered.wait(0.2):
                if cancel.is_set():
                    return "deny"
            if answer[0] == "always":
                self.always.setdefault(key, set()).add(call.name)
            return answer[0]
        finally:
            with self._lock:
                if self._waiting.get(key, (None,))[0] == call.id:
                    del self._waiting[key]

    def answer(self, key: str, value: str) -> bool:
        with self._lock:
            waiting = self._waiting.get(key)
        if waiting is None or value not in ANSWERS:
            return False
        _, answered, answer = waiting
        answer[0] = value
        answered.set()
        return True


def turn_args(ctx: UIContext, request: gr.Request | None, cancel: threading.Event, ahead: list[Any]) -> dict:
    """The tool arguments of a chat-tab turn: every enabled tool (or the one chosen), each call asked about
    as `tools.approval` says. `ahead[0]`, once set, is the turn's RunAhead: the prompt is put into it."""
    key = page_key(request)
    choices = ctx.tool_choices
    mode = choices.mode.get(key, AUTO)
    if mode == OFF:
        return {}
    names = [t.name for t in ctx.rt.tools.list_tools(enabled_only=True)]
    if not names:
        return {}
    base = ctx.rt.settings.tools.approval
    approval: Any = None
    if base != "auto" and choices.always.get(key):
        approval = sorted(set(base if isinstance(base, list) else []) | choices.always[key])

    def approve(call: ToolCall) -> Any:
        if ahead:
            ahead[0].put(Asking(call))
        return choices.ask(key, call, cancel)

    forced = {"type": "function", "function": {"name": mode}} if mode in names else None
    return {"tools": "auto", "tool_choice": forced, "tool_approval": approval, "approve": approve}


# --- the chatbot's rows ------------------------------------------------------------------------------


def _fence(text: str, lang: str = "") -> str:
    """`text` as a code block whose fence no run of backticks inside it can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text}\n{ticks}"


def _arguments(call: dict[str, Any]) -> str:
    raw = call.get("function", {}).get("arguments", "")
    try:
        return json.dumps(json.loads(raw), ensure_ascii=False, indent=2)
    except (TypeError, ValueError):
        return str(raw)


def call_row(call: dict[str, Any], result: Any, lang: str | None, *, asking: bool = False) -> dict[str, Any]:
    """One call as a collapsible message: OpenAI's `call`, and its `result` (a session's tool message or
    a ToolResult event; None while it runs or waits)."""
    name = str(call.get("function", {}).get("name", "?"))
    parts = [f"**{tr('tools.arguments', lang)}**\n\n" + _fence(_arguments(call), "json")]
    meta: dict[str, Any] = {"title": f"🛠 {escape_text(name)}", "status": "pending"}
    row: dict[str, Any] = {"role": "assistant", "metadata": meta}
    if asking:
        meta["title"] = "🛠 " + tr("tools.ask_title", lang, name=escape_text(name))
        parts.append(tr("tools.ask_text", lang))
        row["options"] = [
            {"label": tr("tools.allow", lang), "value": "allow"},
            {"label": tr("tools.always", lang), "value": "always"},
            {"label": tr("tools.deny", lang), "value": "deny"},
        ]
    elif result is not None:
        content = getattr(result, "content", "")
        info = getattr(result, "metrics", None) or {}
        failed = bool(getattr(result, "is_error", False) or info.get("is_error"))
        ms = getattr(result, "ms", None) or info.get("ms")
        meta["status"] = "done"
        meta["title"] += " · " + tr("tools.failed" if failed else "tools.done", lang)
        if ms:
            meta["duration"] = round(float(ms) / 1000, 2)
        parts.append(f"**{tr('tools.result', lang)}**\n\n" + _fence(str(content)))
    row["content"] = "\n\n".join(parts)
    return row


def session_results(messages: list[Any]) -> dict[str, Any]:
    return {m.tool_call_id: m for m in messages if m.role == "tool" and m.tool_call_id}


def live_rows(session: Session, live: dict[str, LiveCall], lang: str | None) -> list[dict[str, Any]]:
    """Rows for the calls of the round in progress that the session does not hold yet."""
    held = {c.get("id") for m in session.messages for c in (m.tool_calls or [])}
    return [
        call_row(c.call.to_openai(), c.result, lang, asking=c.asking and c.result is None)
        for c in live.values()
        if c.call.id not in held
    ]


def track(live: dict[str, LiveCall], event: Any) -> bool:
    """Note a tool event of the turn; True if the page should be updated now."""
    if isinstance(event, ToolCall):
        live[event.id] = LiveCall(event)
    elif isinstance(event, Asking) and event.call.id in live:
        live[event.call.id].asking = True
    elif isinstance(event, ToolResult) and event.id in live:
        live[event.id].result = event
    else:
        return False
    return True


# --- the control -------------------------------------------------------------------------------------


def mode_choices(ctx: UIContext, lang: str | None) -> list[tuple[str, str]]:
    tools = ctx.rt.tools.list_tools(enabled_only=True)
    return [(tr("tools.mode_auto", lang), AUTO), (tr("tools.mode_off", lang), OFF)] + [
        (tr("tools.mode_force", lang, name=t.name), t.name) for t in tools
    ]


def build(ctx: UIContext) -> gr.Dropdown:
    return gr.Dropdown(
        choices=mode_choices(ctx, None),
        value=AUTO,
        label=I18N("tools.mode"),
        info=I18N("tools.mode_info"),
        elem_id="tool-mode",
    )


def wire(ctx: UIContext, mode: gr.Dropdown, chatbot: gr.Chatbot, lang: Any) -> None:
    choices = ctx.tool_choices

    def on_mode(value: str | None, request: gr.Request) -> None:
        choices.mode[page_key(request)] = value or AUTO

    def on_focus(value: str | None, lang_value: str | None) -> Any:
        options = mode_choices(ctx, lang_value)
        keep = value if value in [v for _, v in options] else AUTO
        return gr.update(choices=options, value=keep)

    def on_option(data: gr.SelectData, request: gr.Request) -> None:
        choices.answer(page_key(request), str(data.value))

    mode.input(on_mode, [mode], None, queue=False)
    mode.focus(on_focus, [mode, lang], [mode], queue=False)
    chatbot.option_select(on_option, None, None, queue=False)
