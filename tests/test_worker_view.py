"""The GPU & models tab's lines about the model process: state, restarts, last exit, slots (with the chat
each one holds), safe mode."""

from __future__ import annotations

from webui.tabs.gpu import worker_lines


def test_worker_lines_say_state_restarts_slots_and_safe_mode() -> None:
    worker = {
        "pid": 41,
        "state": "ready",
        "restarts": 2,
        "last_exit": {"reason": "SIGSEGV"},
        "slots": [
            {"id": 0, "busy": True, "cached_tokens": 120, "chat": "s-20250101-120000-abcdef"},
            {"id": 1, "busy": False, "cached_tokens": 0, "chat": None},
            {"id": 2, "busy": False, "cached_tokens": 30, "chat": None},
        ],
        "safe_mode": {"reason": "this CPU has Intel AMX"},
    }
    text = "\n".join(worker_lines(worker, "en"))
    assert "ready" in text and "pid 41" in text and "2 restarts" in text and "SIGSEGV" in text
    assert "1/3 busy" in text and "#0 ● 120 s-20250101-120000-abcdef" in text
    assert "#1 ○ 0," in text and "#2 ○ 30 (a chat without a session)" in text
    assert "Safe mode: this CPU has Intel AMX" in text
    assert "セーフモード" in "\n".join(worker_lines(worker, "ja"))
    assert worker_lines(None, "en") == []


def test_a_failed_worker_shows_why() -> None:
    worker = {"pid": None, "state": "failed", "restarts": 4, "last_exit": None, "reason": "crashed 5 times"}
    lines = worker_lines(worker, "en")
    assert "failed" in lines[0] and "last exit: –" in lines[0] and lines[-1] == "crashed 5 times"
