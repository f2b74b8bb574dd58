"""Make gr.Chatbot re-use its processing of messages it has already shown.

Gradio post-processes the whole chat on every streamed update (each message becomes pydantic models).
In a long chat that is most of an update's cost, and it is repeated for messages that never change.
`memoize` keeps what plain text messages became, keyed by role and text, so an update costs about the
same whatever the chat's length.

It is installed on the gr.Chatbot class, once: when a handler updates one of a chatbot's props (the chat
tab sends the avatar pair when the character changes), Gradio re-creates the component for that browser
from its constructor arguments, so an attribute on our instance would be lost from then on. (Not a
subclass either: Gradio writes a .pyi stub next to the module of every Component subclass it sees.)
Plain text messages become the same models whatever the chatbot's settings, so sharing is safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import gradio as gr
from gradio.components.chatbot import ChatbotDataMessages

MEMO_SIZE = 4096  # messages, shared by every open tab
_memo: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
_lock = threading.Lock()  # postprocess runs in worker threads, one per streaming browser
_original = gr.Chatbot.postprocess


def memoize(chatbot: gr.Chatbot) -> gr.Chatbot:
    """Install the memo on gr.Chatbot (idempotent); returns `chatbot` for chaining."""
    if getattr(gr.Chatbot.postprocess, "_memoized", False) is False:
        gr.Chatbot.postprocess = _postprocess  # type: ignore[method-assign]
    return chatbot


def _postprocess(self: gr.Chatbot, value: Any) -> ChatbotDataMessages:
    if not value or not all(_plain(m) for m in value):
        return _original(self, value)
    out: list[Any] = []
    for m in value:
        key = (m["role"], m["content"])
        with _lock:
            done = _memo.get(key)
            if done is not None:
                _memo.move_to_end(key)
        if done is None:
            done = list(_original(self, [m]).root)
            with _lock:
                _memo[key] = done
                if len(_memo) > MEMO_SIZE:
                    _memo.popitem(last=False)
        out.extend(done)
    return ChatbotDataMessages(root=out)


_postprocess._memoized = True  # type: ignore[attr-defined]


def _plain(m: Any) -> bool:
    return type(m) is dict and m.keys() == {"role", "content"} and type(m["content"]) is str
