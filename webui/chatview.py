"""Make a gr.Chatbot re-use its processing of messages it has already shown.

Gradio post-processes the whole chat on every streamed update (each message becomes pydantic models).
In a long chat that is most of an update's cost, and it is repeated for messages that never change.
`memoize` keeps what plain text messages became, keyed by role and text, so an update costs about the
same whatever the chat's length. (An instance attribute, not a subclass: Gradio writes a .pyi stub
next to the module of every Component subclass when it is defined.)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import gradio as gr
from gradio.components.chatbot import ChatbotDataMessages

MEMO_SIZE = 4096  # messages, shared by every open tab


def memoize(chatbot: gr.Chatbot) -> gr.Chatbot:
    process = chatbot.postprocess
    memo: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()

    def postprocess(value: Any) -> ChatbotDataMessages:
        if not value or not all(_plain(m) for m in value):
            return process(value)
        out: list[Any] = []
        for m in value:
            key = (m["role"], m["content"])
            done = memo.get(key)
            if done is None:
                done = memo[key] = list(process([m]).root)
                if len(memo) > MEMO_SIZE:
                    memo.popitem(last=False)
            else:
                memo.move_to_end(key)
            out.extend(done)
        return ChatbotDataMessages(root=out)

    chatbot.postprocess = postprocess  # type: ignore[method-assign]
    return chatbot


def _plain(m: Any) -> bool:
    return type(m) is dict and m.keys() == {"role", "content"} and type(m["content"]) is str
