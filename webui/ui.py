"""The Gradio Blocks UI. Each tab lives in webui/tabs/; this file only lays them out."""

from __future__ import annotations

import gradio as gr

from engine import Runtime

from .i18n import I18N, language_radio, wire_language
from .tabs import characters, chat, chat_files, gpu, history, lore, sampling, tools
from .tabs.context import UIContext


def build_ui(rt: Runtime) -> gr.Blocks:
    """The tabs, built in order: each gets the pieces of the earlier ones it uses, by name."""
    secret = rt.secret("ui_secret")  # the browser's stored state survives a server restart
    with gr.Blocks(title="Local LLM Chat", analytics_enabled=False) as demo:
        ctx = UIContext(
            rt=rt,
            session_id=gr.BrowserState(None, storage_key="llmchat.session", secret=secret),
            lang=gr.BrowserState(None, storage_key="llmchat.lang", secret=secret),
            custom_prompt=gr.BrowserState(None, storage_key="llmchat.custom_prompt", secret=secret),
        )
        with gr.Row(equal_height=True):
            gr.Markdown(I18N("app.title"), elem_id="app-title")
            lang_radio = language_radio()
        with gr.Tabs() as tabs:
            with gr.Tab(I18N("tab.chat"), id="chat") as chat_tab:
                chat_view = chat.build(ctx)
                files = chat_files.build(ctx, chat_view)
            chat_tab.select(*chat_view.thinking, show_progress="hidden")  # Sampling may have changed it
            with gr.Tab(I18N("tab.characters"), id="characters") as characters_tab:
                characters.build(ctx, characters_tab, chat_view)
            with gr.Tab(I18N("tab.lore"), id="lore") as lore_tab:
                lore.build(ctx, lore_tab)
            with gr.Tab(I18N("tab.tools"), id="tools") as tools_tab:
                tools.build(ctx, tools_tab)
            with gr.Tab(I18N("tab.sampling"), id="sampling") as sampling_tab:
                sampling.build(ctx, sampling_tab, chat_view)
            with gr.Tab(I18N("tab.history"), id="history") as history_tab:
                history.build(ctx, history_tab, chat_view, files, tabs)
            with gr.Tab(I18N("tab.gpu"), id="gpu") as gpu_tab:
                gpu.build(ctx, gpu_tab, chat_view, tabs)
        labelled = [
            (chat_tab, "tab.chat"),
            (characters_tab, "tab.characters"),
            (lore_tab, "tab.lore"),
            (tools_tab, "tab.tools"),
            (sampling_tab, "tab.sampling"),
            (history_tab, "tab.history"),
            (gpu_tab, "tab.gpu"),
        ]
        wire_language(demo, lang_radio, ctx.lang, labelled, [chat_view.on_load, files.refresh])
    return demo
