"""The Gradio Blocks UI. Each tab lives in webui/tabs/; this file only lays them out."""

from __future__ import annotations

import gradio as gr

from engine.runtime import Runtime

from .i18n import I18N, language_switch
from .tabs import characters, chat, gpu, history, sampling
from .tabs.context import UIContext


def build_ui(rt: Runtime) -> gr.Blocks:
    with gr.Blocks(title="Local LLM Chat", analytics_enabled=False) as demo:
        ctx = UIContext(
            rt=rt,
            session_id=gr.BrowserState(None, storage_key="llmchat.session"),
            lang=gr.BrowserState(None, storage_key="llmchat.lang"),
        )
        # the prompt of "Custom (no character)" chats: edited in the Characters tab, read by the chat tab
        ctx.components["custom_prompt"] = gr.BrowserState(None, storage_key="llmchat.custom_prompt")
        with gr.Row(equal_height=True):
            gr.Markdown(I18N("app.title"), elem_id="app-title")
            lang_radio, lang_load = language_switch(ctx.lang)
        with gr.Tabs() as tabs:
            ctx.components["tabs"] = tabs
            with gr.Tab(I18N("tab.chat"), id="chat"):
                chat.build(ctx)
            with gr.Tab(I18N("tab.characters"), id="characters") as tab:
                characters.build(ctx, tab)
            with gr.Tab(I18N("tab.sampling"), id="sampling") as tab:
                sampling.build(ctx, tab)
            with gr.Tab(I18N("tab.history"), id="history") as tab:
                history.build(ctx, tab)
            with gr.Tab(I18N("tab.gpu"), id="gpu") as tab:
                gpu.build(ctx, tab)
        fn, inputs, outputs, js = lang_load
        demo.load(fn, inputs, outputs, js=js).then(*ctx.components["on_load"])
        for loader in ctx.components.get("loaders", []):
            demo.load(*loader)
    return demo
