"""State kept per page (a browser tab, named by Gradio's session hash): the key, and a map that keeps only
the pages used most recently, so tabs that were opened once and closed do not pile up for ever."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, TypeVar

PAGES_MAX = 1000

V = TypeVar("V")


def page_key(request: Any) -> str:
    """The page a request comes from; "default" for calls without one (tests, the API)."""
    return getattr(request, "session_hash", None) or "default"


class PageMap(OrderedDict[str, V]):
    """A dict of per-page values that forgets the least recently set pages beyond `limit`."""

    def __init__(self, limit: int = PAGES_MAX) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: str, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)

    def setdefault(self, key: str, default: V) -> V:  # type: ignore[override]
        if key not in self:
            self[key] = default
        return self[key]
