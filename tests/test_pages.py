"""Per-page state in the UI keeps only the pages used most recently."""

from __future__ import annotations

from types import SimpleNamespace

from webui.tabs.chat_tools import ToolChoices
from webui.tabs.pages import PageMap, page_key


def test_a_page_map_forgets_the_least_recently_set_pages() -> None:
    pages: PageMap[int] = PageMap(limit=3)
    for n in range(5):
        pages[f"p{n}"] = n
    pages["p2"] = 22  # set again: now the newest
    pages["p5"] = 5
    assert list(pages) == ["p4", "p2", "p5"]
    assert pages.setdefault("p6", 6) == 6 and "p4" not in pages


def test_tool_choices_stay_bounded_however_many_tabs_choose() -> None:
    choices = ToolChoices()
    for n in range(1500):
        choices.mode[f"tab{n}"] = "off"
        choices.always.setdefault(f"tab{n}", set()).add("get_time")
    assert len(choices.mode) == len(choices.always) == 1000
    assert choices.mode["tab1499"] == "off" and "tab0" not in choices.always


def test_page_key() -> None:
    assert page_key(SimpleNamespace(session_hash="abc")) == "abc"
    assert page_key(None) == page_key(SimpleNamespace(session_hash=None)) == "default"
