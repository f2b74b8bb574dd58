"""What the tabs share, by name: the runtime and browser state every tab gets (`UIContext`), and the pieces
one tab builds for the others (`ChatView`, `ChatFiles`). webui/ui.py builds the tabs in order and hands each
the pieces it uses."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import gradio as gr

from engine import Cancel, Runtime, Session

from .chat_tools import ToolChoices
from .pages import PageMap, page_key

CUSTOM = "__custom__"


class Step(NamedTuple):
    """A handler with its inputs and outputs, for another tab to chain: `event.then(*step)`."""

    fn: Callable[..., Any]
    inputs: list[Any]
    outputs: list[Any]


@dataclass
class UIContext:
    rt: Runtime
    session_id: gr.BrowserState
    lang: gr.BrowserState
    # the prompt of "Custom (no character)" chats: edited in the Characters tab, read by the chat tab
    custom_prompt: gr.BrowserState
    # chats whose last turn could not be saved (disk full, read-only): they stay open in memory
    unsaved: dict[str, Session] = field(default_factory=dict)
    shown: dict[str, int] = field(default_factory=dict)  # rows a long chat shows, by chat ("Show earlier")
    tool_choices: ToolChoices = field(default_factory=ToolChoices)  # per browser tab (chat_tools)
    # called with (session, request) as a chat-tab turn begins (chat_thinking: a choice made before the chat
    # existed goes into it)
    before_turn: list[Callable[[Session, Any], None]] = field(default_factory=list)
    _cancels: PageMap[threading.Event] = field(default_factory=PageMap)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cancel_flag(self, request: gr.Request | None, *, fresh: bool = False) -> threading.Event:
        key = page_key(request)
        with self._lock:
            if fresh or key not in self._cancels:
                self._cancels[key] = Cancel()
            return self._cancels[key]

    def character_choices(self, lang: str | None = None) -> list[tuple[str, str]]:
        from .. import i18n

        choices = [(i18n.tr("chat.custom", lang), CUSTOM)]
        choices += [(c.display_name, c.name) for c in self.rt.presets.list()]
        return choices


@dataclass
class ChatView:
    """What the chat tab shows other tabs: its components, and the steps that refresh it."""

    session_id: gr.BrowserState
    chatbot: gr.Chatbot
    character: gr.Dropdown
    status: gr.Markdown
    changed: list[Any]  # events after which the open chat may differ
    options: Step  # the chat options of the open session (History's Open runs it)
    on_load: Step  # the page load: the open chat, its character, status and options
    thinking: Step  # the Thinking row's values for the open chat (chat_thinking)

    @property
    def shows(self) -> list[Any]:
        """What opening another chat updates, in `chat_files.chat_view`'s order."""
        return [self.session_id, self.chatbot, self.status, self.character]


@dataclass
class ChatFiles:
    """The chat tab's file buttons: `refresh` brings the downloads up to date with the open chat."""

    refresh: Step
