"""RunAhead (webui/streaming.py): the chat tab's turn runs in a thread of its own; the handler takes what
piled up. Closing it (a page that went away mid-turn, on Gradio's event loop) cancels the turn and waits
for its save, but never longer than CLOSE_WAIT_S."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from webui import streaming
from webui.streaming import RunAhead


def test_items_arrive_in_order_and_an_error_after_them() -> None:
    def events() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("boom")

    ahead = RunAhead(events(), threading.Event())
    got: list[int] = []
    with pytest.raises(ValueError, match="boom"):
        while True:
            got += ahead.take(5)
    assert got == [1, 2] and ahead.done


def test_close_cancels_the_turn_and_waits_for_its_save() -> None:
    cancel, saved = threading.Event(), threading.Event()

    def events() -> Iterator[str]:
        try:
            yield "token"
            while not cancel.wait(0.01):  # a turn ends within one token of its cancel
                pass
            yield "cancelled"
        finally:
            saved.set()

    ahead = RunAhead(events(), cancel)
    assert ahead.take(5) == ["token"]
    ahead.close()
    assert cancel.is_set() and saved.is_set()


def test_close_gives_up_waiting_for_a_turn_that_does_not_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool call that runs on: close() returns (the event loop goes on) and the turn saves later."""
    monkeypatch.setattr(streaming, "CLOSE_WAIT_S", 0.05)
    release, saved = threading.Event(), threading.Event()

    def events() -> Iterator[str]:
        try:
            yield "calling a tool"
            release.wait(30)  # the tool, deaf to the cancel
        finally:
            saved.set()

    ahead = RunAhead(events(), threading.Event())
    assert ahead.take(5) == ["calling a tool"]
    ahead.close()
    assert not saved.is_set(), "close() waited for the tool to end"
    release.set()
    assert saved.wait(5), "the turn did not save once it ended"
