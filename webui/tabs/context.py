"""What the tabs share: the runtime, the open session's id, and per-browser cancel flags."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from engine import Runtime

CUSTOM = "__custom__"


@dataclass
class UIContext:
    rt: Runtime
    session_id: gr.BrowserState
    lang: gr.BrowserState
    components: dict[str, Any] = field(default_factory=dict)
    _cancels: dict[str, threading.Event] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cancel_flag(self, request: gr.Request | None, *, fresh: bool = False) -> threading.Event:
        key = getattr(request, "session_hash", None) or "default"
        with self._lock:
            if fresh or key not in self._cancels:
                self._cancels[key] = threading.Event()
            return self._cancels[key]

    def character_choices(self, lang: str | None = None) -> list[tuple[str, str]]:
        from .. import i18n

        choices = [(i18n.tr("chat.custom", lang), CUSTOM)]
        choices += [(c.display_name, c.name) for c in self.rt.presets.list()]
        return choices
