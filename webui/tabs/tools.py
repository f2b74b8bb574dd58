"""The Tools tab: the MCP servers of config/mcp.json with their state, the tools the model may call (on or
off, remembered), and "Reload config". The engine's ToolHub (`rt.tools`) does the work."""

from __future__ import annotations

from typing import Any

import gradio as gr

from engine import EngineError

from ..i18n import I18N, tr
from ..markup import escape_text, warn
from .context import UIContext

STATE_ICONS = {"ready": "🟢", "starting": "⏳", "restarting": "⏳", "failed": "🔴", "error": "🔴"}


def servers_view(ctx: UIContext, lang: str | None) -> str:
    status = ctx.rt.tools.status()
    lines: list[str] = []
    if status.get("error"):
        lines.append(f"⚠ {escape_text(status['error'])}")
    for s in status["servers"]:
        icon = STATE_ICONS.get(s["state"], "⚪")
        line = f"{icon} **{escape_text(s['name'])}** · {s['state']} · {s['tools']} tools · `{s['transport']}`"
        lines.append(line)
        for problem in [s.get("error"), *s.get("warnings", [])]:
            if problem:
                lines.append(f"  - {escape_text(str(problem))}")
        if s["state"] in ("failed", "error") and s.get("stderr_tail"):
            lines.append("  - stderr: " + escape_text(str(s["stderr_tail"])[-400:]))
    if not status["servers"] and not status.get("error"):
        lines.append(tr("tools.none", lang, path=escape_text(status["config"])))
    approval = ctx.rt.settings.tools.approval
    mode = approval if isinstance(approval, str) else ", ".join(approval)
    lines.append("")
    lines.append(tr("tools.approval", lang, mode=escape_text(mode)))
    return "\n".join(lines)


def tool_choices(ctx: UIContext) -> tuple[list[tuple[str, str]], list[str]]:
    """(label, name) of every tool, and the names of those turned on."""
    tools = ctx.rt.tools.list_tools()
    labels = [
        (f"{t.name} · {t.server}" + (f" — {_first_line(t.description)}" if t.description else ""), t.name)
        for t in tools
    ]
    return labels, [t.name for t in tools if t.enabled]


def _first_line(text: str, limit: int = 100) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def refresh(ctx: UIContext, lang: str | None) -> tuple[str, Any]:
    choices, on = tool_choices(ctx)
    return servers_view(ctx, lang), gr.update(choices=choices, value=on)


def build(ctx: UIContext, tab: gr.Tab) -> None:
    servers = gr.Markdown(elem_id="tools-servers")
    choices, on = tool_choices(ctx)
    switches = gr.CheckboxGroup(
        choices=choices,
        value=on,
        label=I18N("tools.list"),
        info=I18N("tools.list_info"),
        elem_id="tools-list",
    )
    reload_btn = gr.Button(I18N("tools.reload"), size="sm", elem_id="tools-reload")
    lang = ctx.lang

    def on_switch(wanted: list[str] | None, lang_value: str | None) -> tuple[str, Any]:
        wanted_set = set(wanted or [])
        for t in ctx.rt.tools.list_tools():
            if t.enabled != (t.name in wanted_set):
                try:
                    ctx.rt.tools.set_enabled(t.name, t.name in wanted_set)
                except EngineError as exc:
                    warn(exc.message)
        return refresh(ctx, lang_value)

    def on_reload(lang_value: str | None) -> tuple[str, Any]:
        ctx.rt.tools.reload()
        ctx.rt.tools.wait_ready(10)  # a moment for the servers to come up and list their tools
        gr.Info(tr("tools.reloaded", lang_value, path=str(ctx.rt.tools.config_path)))
        return refresh(ctx, lang_value)

    tab.select(lambda lv: refresh(ctx, lv), [lang], [servers, switches], show_progress="hidden")
    switches.input(on_switch, [switches, lang], [servers, switches], show_progress="hidden")
    reload_btn.click(on_reload, [lang], [servers, switches])
