"""The Gradio Blocks UI. Each tab lives in webui/tabs/; this file only lays them out."""

from __future__ import annotations

import gradio as gr

from engine.runtime import Runtime

from .i18n import I18N
from .tabs import chat
from .tabs.context import UIContext


def build_ui(rt: Runtime) -> gr.Blocks:
    with gr.Blocks(title="Local LLM Chat", analytics_enabled=False) as demo:
        ctx = UIContext(
            rt=rt,
            session_id=gr.BrowserState(None, storage_key="llmchat.session"),
            lang=gr.BrowserState(None, storage_key="llmchat.lang"),
        )
        with gr.Tabs():
            with gr.Tab(I18N("tab.chat"), id="chat"):
                chat.build(ctx)
        fn, inputs, outputs = ctx.components["on_load"]
        demo.load(fn, inputs, outputs)
    return demo
