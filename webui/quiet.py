"""Keep what clients send out of the server's log.

Gradio prints the traceback of a failed event to stderr, and some of its messages hold the inputs whole
("Received inputs: [...]"): a 10 MB message posted to /gradio_api/queue/join was printed in full, and a
chat message could end up in a log that `logging.chat_content: false` promises to keep clean. Here the
traceback goes to our log with only the first line of its message, cut short.
"""

from __future__ import annotations

import logging
import sys
import traceback
import types
from typing import Any

log = logging.getLogger("webui.gradio")

MESSAGE_MAX = 120
GRADIO_MODULES = ("gradio.queueing", "gradio.routes", "gradio.route_utils")


def short_traceback() -> str:
    """The stack, and only the first line of the error's message, cut to MESSAGE_MAX characters."""
    kind, exc, tb = sys.exc_info()
    stack = "".join(traceback.format_tb(tb)).rstrip("\n")
    first = str(exc).split("\n", 1)[0] if exc is not None else ""
    if len(first) > MESSAGE_MAX:
        first = first[:MESSAGE_MAX] + "…"
    name = kind.__name__ if kind is not None else "Error"
    return f"Traceback (most recent call last):\n{stack}\n{name}: {first}"


class _Traceback(types.ModuleType):
    """`traceback`, with print_exc() logging a shortened traceback."""

    def __getattr__(self, name: str) -> Any:
        return getattr(traceback, name)

    @staticmethod
    def print_exc(*_: Any, **__: Any) -> None:
        log.error("a UI event failed:\n%s", short_traceback())


def quiet_gradio() -> None:
    shim = _Traceback("traceback")
    for name in GRADIO_MODULES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "traceback", None) is traceback:
            module.traceback = shim  # type: ignore[attr-defined]
