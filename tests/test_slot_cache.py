"""The prompt cache on disk, against the real server and model: after a restart, a long chat's next turn
evaluates only its new tokens, and a chat that comes back soon loads its state from memory; a truncated
cache file, or one with flipped bits in its KV data, is ignored, deleted, and the turn still works; another
model file of the same name and size has states of its own."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from engine.backends.slot_cache import SlotCache, model_key
from tests.helpers import GREEDY, ServerProcess

pytestmark = pytest.mark.slow

SYSTEM = "You are a careful librarian who answers in one sentence. " * 30


def turn(server: ServerProcess, sid: str, text: str) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}], "session_id": sid}
    if sid == "new":
        body["messages"].insert(0, {"role": "system", "content": SYSTEM})
    resp = httpx.post(
        server.url + "/api/chat", json={**body, "params": {**GREEDY, "max_tokens": 8}}, timeout=300
    )
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def states(data: Path) -> list[Path]:
    return sorted((data / "slot_cache").glob("*/*.seq"))


def test_a_long_chat_after_a_restart_evaluates_only_the_new_turn(model_path: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data, model=model_path) as server:
        first = turn(server, "new", "Recommend a book.")
        sid = first["session_id"]
        assert first["metrics"]["prompt_eval_tokens"] > 300
    assert states(data), "the worker saved its slots when it stopped"
    with ServerProcess(data, model=model_path, log_path=tmp_path / "second.log") as server:
        again = turn(server, sid, "And another one?")
    m = again["metrics"]
    assert m["prompt_tokens"] > 300 and m["prompt_eval_tokens"] < 60, m


def test_a_truncated_cache_file_is_ignored_and_deleted(model_path: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data, model=model_path) as server:
        sid = turn(server, "new", "Recommend a book.")["session_id"]
    (state,) = states(data)
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with ServerProcess(data, model=model_path, log_path=tmp_path / "second.log") as server:
        again = turn(server, sid, "And another one?")
        assert again["metrics"]["prompt_eval_tokens"] > 300  # evaluated again, not loaded from a broken file
        assert not state.exists()
        assert "unusable" in server.log_text()


def test_flipped_bits_in_a_cache_file_are_caught_by_its_checksum(model_path: Path, tmp_path: Path) -> None:
    """llama.cpp loads a state file whose KV data was altered as if it were sound (it checks only sizes and
    tokens): the checksum in the sidecar catches it, and the file is deleted instead of giving the chat a
    corrupt cache."""
    data = tmp_path / "data"
    with ServerProcess(data, model=model_path) as server:
        sid = turn(server, "new", "Recommend a book.")["session_id"]
    (state,) = states(data)
    sidecar = orjson.loads(state.with_suffix(".json").read_bytes())
    raw = bytearray(state.read_bytes())
    assert sidecar["sha256"] == hashlib.sha256(raw).hexdigest() and len(sidecar["tokens"]) > 300
    middle = len(raw) // 2  # well inside the KV data: the header and the tokens take the first few KB
    raw[middle : middle + 64] = bytes(b ^ 0xFF for b in raw[middle : middle + 64])
    state.write_bytes(bytes(raw))
    with ServerProcess(data, model=model_path, log_path=tmp_path / "second.log") as server:
        again = turn(server, sid, "And another one?")
        assert again["reply"].strip()
        assert again["metrics"]["prompt_eval_tokens"] > 300  # evaluated again, not loaded from altered bits
        assert not state.exists() and not state.with_suffix(".json").exists()
        assert "unusable" in server.log_text()


def test_another_file_of_the_same_name_and_size_gets_its_own_cache_folder(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "model.gguf", tmp_path / "b" / "model.gguf"
    for path, fill in ((a, b"x"), (b, b"y")):
        path.parent.mkdir()
        path.write_bytes(fill * 1000)
    os.utime(a, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    os.utime(b, ns=(1_700_000_000_000_000_001, 1_700_000_000_000_000_001))
    assert model_key(a, "f16", "f16") != model_key(b, "f16", "f16")
    assert model_key(a, "f16", "f16") != model_key(a, "q8_0", "f16")
    assert model_key(a, "f16", "f16") == model_key(a, "f16", "f16")


def test_another_chat_in_the_only_slot_does_not_cost_the_first_its_cache(
    model_path: Path, tmp_path: Path
) -> None:
    """One slot (model.parallel 1), two chats taking turns: the chat a turn displaces goes to disk first,
    and its next turn loads it instead of evaluating the whole chat again."""
    with ServerProcess(tmp_path / "data", model=model_path) as server:
        long = turn(server, "new", "Recommend a book.")["session_id"]
        other = httpx.post(
            server.url + "/api/chat",
            json={"messages": [{"role": "user", "content": "Hi"}], "params": {**GREEDY, "max_tokens": 8}},
            timeout=300,
        )
        assert other.status_code == 200 and other.json()["metrics"]["prompt_eval_tokens"] < 60
        m = turn(server, long, "And another one?")["metrics"]
    assert m["prompt_tokens"] > 300 and m["prompt_eval_tokens"] < 60, m


def test_a_chat_that_comes_back_soon_loads_its_state_from_memory(model_path: Path, tmp_path: Path) -> None:
    """The state a displaced chat left is kept in memory after it is written (up to RAM_BYTES): its return
    loads it from there, not from the file, which is gone here."""
    data = tmp_path / "data"
    with ServerProcess(data, model=model_path) as server:
        long = turn(server, "new", "Recommend a book.")["session_id"]
        assert stateless(server, [{"role": "user", "content": "Hi"}])["metrics"]["prompt_eval_tokens"] < 60
        deadline = time.monotonic() + 30
        while not states(data) and time.monotonic() < deadline:  # written once the decoding stops
            time.sleep(0.1)
        for state in states(data):
            state.unlink()
        m = turn(server, long, "And another one?")["metrics"]
        assert "unusable" not in server.log_text()
    assert m["prompt_tokens"] > 300 and m["prompt_eval_tokens"] < 60, m


def test_an_evicted_chat_is_written_only_once_the_next_reply_is_decoded(
    model_path: Path, tmp_path: Path
) -> None:
    """Hashing and writing a state take CPU, which a 2-core machine's decode has none of to spare: the state
    of a chat evicted for a new one is written after the new one's reply, not while it is decoded.

    The check compares the state file's mtime with the earliest moment the reply can have ended (the request
    was sent at `sent`, and the worker took `total_ms` from receiving it to its last token), not with the
    deltas the client reads: those can still sit in the socket when the decoding has ended and the file is
    written, a race the client loses whenever it is descheduled."""
    data = tmp_path / "data"
    body = {
        "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
        "params": {**GREEDY, "max_tokens": 200},
    }
    with ServerProcess(data, model=model_path) as server:
        turn(server, "new", "Recommend a book.")  # over 300 tokens: evicted when the next chat starts
        done: dict[str, Any] = {}
        sent = time.time()
        with httpx.stream("POST", server.url + "/api/chat/stream", json=body, timeout=300) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    event = orjson.loads(line[6:])
                    done = event if event.get("done") else done
        deadline = time.monotonic() + 30
        while not states(data) and time.monotonic() < deadline:
            time.sleep(0.05)
        written = {p.name: p.stat().st_mtime for p in states(data)}
    assert written, "the evicted chat's state was written once the reply ended"
    assert done["metrics"]["completion_tokens"] >= 150, done  # a reply long enough for a timer to have fired
    ended = sent + done["metrics"]["total_ms"] / 1000
    early = {name: round(ended - at, 3) for name, at in written.items() if at < ended - 0.005}
    assert not early, f"written this many seconds before the reply's last token: {early}"


def test_states_kept_in_memory_stay_within_their_budget(tmp_path: Path) -> None:
    cache = SlotCache(None, None, tmp_path, max_bytes=2**30, ram_bytes=10)
    cache._keep("a", memoryview(b"a" * 6))
    cache._keep("b", memoryview(b"b" * 4))
    cache._keep("a", memoryview(b"a" * 6))  # used again: now the most recent
    cache._keep("c", memoryview(b"c" * 4))
    assert list(cache._recent) == ["a", "c"]  # b, the least recently used, went first
    cache._drop("a")
    assert list(cache._recent) == ["c"]


def stateless(server: ServerProcess, messages: list[dict[str, str]]) -> dict[str, Any]:
    body = {"messages": messages, "params": {**GREEDY, "max_tokens": 8}}
    resp = httpx.post(server.url + "/api/chat", json=body, timeout=300)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_a_saved_state_that_goes_past_the_prompt_is_used_up_to_where_they_part(
    model_path: Path, tmp_path: Path
) -> None:
    """A saved state holds the reply's sampled tokens, and the next prompt holds that reply as text again:
    the two can part (a reply cut by max_tokens, an edited reply, tokens that re-tokenize otherwise). Before,
    only a state that was a whole prefix of the prompt was used, so such a chat was evaluated in full after
    a restart; now the shared part is loaded and only the rest evaluated."""
    data = tmp_path / "data"
    ask = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Recommend a book."}]
    with ServerProcess(data, model=model_path) as server:
        first = stateless(server, ask)
        assert first["metrics"]["prompt_eval_tokens"] > 300
    assert states(data)
    other = [*ask, {"role": "assistant", "content": "Something else entirely."}]
    other.append({"role": "user", "content": "Why?"})
    with ServerProcess(data, model=model_path, log_path=tmp_path / "second.log") as server:
        again = stateless(server, other)
    m = again["metrics"]
    assert m["prompt_tokens"] > 300 and m["prompt_eval_tokens"] < 40, m
