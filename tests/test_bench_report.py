"""The benchmark's verdicts on the concurrency rows: which ratio fails `--check`, and when noise says so."""

from __future__ import annotations

from typing import Any

from bench import report


def _burst(tok_s: float, ttft_ms: float = 1000.0) -> dict[str, Any]:
    return {"throughput_tok_s": tok_s, "ttft_ms": [ttft_ms], "errors": []}


def _summary(ours: list[float], native: list[float], unified: list[float]) -> dict[str, Any]:
    level = {
        "ours": [_burst(t) for t in ours],
        "llama-server": [_burst(t) for t in native],
        "llama-server --kv-unified": [_burst(t) for t in unified],
    }
    return {"concurrency": report._concurrency({"8": level})}


def _statuses(summary: dict[str, Any]) -> dict[str, str]:
    """Each concurrency check's status, by name, as `python -m bench --check` judges it."""
    full = {**summary, "rows": {}, "multi_turn": [], "memory": {"servers": {}}, "long_chat": {}}
    return {c.name: c.status for c in report.checks(full) if "clients" in c.name}


def test_server_names_match_the_runner() -> None:
    # the report keys its pairs by the servers' names; a renamed server would silently drop its rows
    from bench import servers

    assert servers.UNIFIED in report.PEERS
    assert "llama-server" in report.PEERS


def test_far_below_llama_server_np_fails_check() -> None:
    s = _summary([70, 71, 72], [100, 100, 100], [100, 100, 100])
    st = _statuses(s)
    assert st["total tok/s at 8 clients vs llama-server"] == "FAIL"
    # the other layout is reported, never a CI failure
    assert st["total tok/s at 8 clients vs llama-server --kv-unified"] == "below target"


def test_rounds_that_straddle_the_target_are_within_noise() -> None:
    s = _summary([70, 100, 110, 120], [100, 100, 100, 100], [100, 100, 100, 100])
    row = s["concurrency"][0]
    lo, hi = row["tok_s_x_native_iqr"]
    assert lo < 1.0 < hi
    s = _summary([70, 75, 100, 110], [100, 100, 100, 100], [100, 100, 100, 100])
    assert _statuses(s)["total tok/s at 8 clients vs llama-server"] == "within noise"


def test_meeting_the_target_is_ok() -> None:
    s = _summary([101, 102, 103], [100, 100, 100], [100, 100, 100])
    assert set(_statuses(s).values()) == {"ok"}
