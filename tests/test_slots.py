"""Continuous batching and KV slots, against the real server and model: concurrent requests with their own
grammars never see each other's tokens, a cancel touches only its own sequence, a batched reply agrees with
the same reply alone up to a near-tie, a slot shows the chat it holds, alternating chats each evaluate only
their new tokens, and a crash with four sequences in flight ends all four with an error and keeps their
partial replies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.backends.slot_cache import common_prefix
from tests.helpers import GREEDY, ServerProcess, parse_sse

pytestmark = pytest.mark.slow

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("slots")
    env = {"LLMCHAT_FAULT_FILE": str(base / "fault"), "LLM_MODEL__PARALLEL": "4"}
    server = ServerProcess(base / "data", model=model_path, env=env, log_path=base / "server.log").start()
    try:
        yield server
    finally:
        server.stop()


def expected(word: str) -> str:
    return " ".join([word] * 5)


def in_parallel(calls: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results


def chat(server: ServerProcess, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(server.url + "/api/chat", json=body, timeout=300)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_health_shows_the_slots(server: ServerProcess) -> None:
    slots = httpx.get(server.url + "/api/health").json()["worker"]["slots"]
    assert [s["id"] for s in slots] == [0, 1, 2, 3]
    assert all(set(s) >= {"busy", "cached_tokens"} for s in slots)


def slot_of(server: ServerProcess, sid: str) -> dict[str, Any] | None:
    slots = httpx.get(server.url + "/api/health", timeout=30).json()["worker"]["slots"]
    return next((s for s in slots if s["chat"] == sid), None)


def test_a_slot_shows_the_chat_it_holds_while_and_after_it_streams(server: ServerProcess) -> None:
    """worker.slots[].chat is the session id of the chat whose tokens the slot holds: busy while its reply
    streams, and still named once the turn is done, as the slot keeps that chat's KV cache for its return."""
    sid = chat(
        server,
        {
            "messages": [{"role": "user", "content": "Hi"}],
            "session_id": "new",
            "params": {**GREEDY, "max_tokens": 4},
        },
    )["session_id"]
    held = slot_of(server, sid)
    assert held is not None and not held["busy"] and held["cached_tokens"] > 0, held
    body = {
        "messages": [{"role": "user", "content": "Write a long story about the sea."}],
        "session_id": sid,
        "params": {**GREEDY, "max_tokens": 200},
    }
    seen: dict[str, Any] | None = None
    with httpx.stream("POST", server.url + "/api/chat/stream", json=body, timeout=300) as resp:
        for line in resp.iter_lines():
            if seen is None and '"delta"' in line:
                seen = slot_of(server, sid)
    assert seen is not None and seen["busy"], seen
    after = slot_of(server, sid)
    assert after is not None and not after["busy"] and after["cached_tokens"] > held["cached_tokens"], after
    stateless = chat(
        server, {"messages": [{"role": "user", "content": "Hi"}], "params": {**GREEDY, "max_tokens": 4}}
    )
    # another chat decodes: this idle one would slow it, so it went to the prompt cache (see the test below)
    assert stateless["reply"] and slot_of(server, sid) is None


def test_eight_grammars_at_once_each_get_their_own_words_and_a_cancel_spares_the_rest(
    server: ServerProcess,
) -> None:
    def ask(word: str, hang_up: bool) -> str:
        body = {
            "messages": [{"role": "user", "content": "Say a word many times."}],
            "params": {**GREEDY, "grammar": f'root ::= "{expected(word)}"', "max_tokens": 48},
        }
        text = ""
        with httpx.stream("POST", server.url + "/api/chat/stream", json=body, timeout=300) as resp:
            for line in resp.iter_lines():
                if line.startswith("data:") and '"delta"' in line:
                    text += parse_sse(line + "\n\n")[0][1]["delta"]
                    if hang_up:
                        return text
        return text

    replies = in_parallel([lambda w=w, i=i: ask(w, hang_up=i == 3) for i, w in enumerate(WORDS)])
    for i, (word, reply) in enumerate(zip(WORDS, replies, strict=True)):
        assert reply, word
        if i == 3:  # hung up after its first piece
            assert expected(word).startswith(reply), (word, reply)
        else:
            assert reply == expected(word), (word, reply)


def agreed(a: str, b: str) -> int:
    """How many leading characters two replies share."""
    return common_prefix(list(a), list(b))  # type: ignore[arg-type]  # any sequences compare the same way


def test_a_reply_in_a_batch_of_four_agrees_with_the_same_reply_alone_up_to_a_near_tie(
    server: ServerProcess,
) -> None:
    """Greedy decoding of four prompts alone, then together in a batch of four, three times. llama.cpp does
    not promise the same logits for a sequence decoded alone and beside others (the batched step rounds
    differently, and how depends on which sequences share the step), so a greedy reply can flip where two
    tokens nearly tie, and from there on it differs. Identical replies alone and batched are not a property
    this engine can promise.

    Measured (SmolLM2-135M Q4_1, the 2-core x86 test machine, 32 tokens, 28 batched rounds in two runs):
    "Name three colours." (142 chars alone) was identical in 15 rounds and otherwise agreed for its first 57
    (9 rounds), 67 (3) or 85 (1) characters; "Count to ten." agreed for all 124 (17), 89 (10) or 115 (1);
    "What is the capital of France?" agreed for only 13 characters ("L'Étoile, la ") in 25 and 42 or 53 in
    the rest; the haiku (50 chars) was identical every time, yet in test runs it once went on past the end
    of the reply alone and once diverged at character 19. The divergence points are the same few from run
    to run (near-ties), but which one a round hits is not.

    A CI run then saw the France reply part before its 13th character, once, after the module's other tests
    had filled the slots differently. So the test asserts: every batched reply agrees with its own prompt's
    reply alone at least as far as with any other prompt's (never another prompt's reply; the grammar test
    above checks crosstalk token by token); half of all batched replies agree with theirs for at least 13
    characters; and over the three rounds some are identical to their reply alone, whole."""

    def body(text: str) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": text}], "params": {**GREEDY, "max_tokens": 32}}

    prompts = [
        "Name three colours.",
        "Write a haiku about rain.",
        "Count to ten.",
        "What is the capital of France?",
    ]
    alone = {p: chat(server, body(p))["reply"] for p in prompts}
    identical, agreements = 0, []
    for _ in range(3):
        batched = in_parallel([lambda p=p: chat(server, body(p))["reply"] for p in prompts])
        for p, reply in zip(prompts, batched, strict=True):
            own = agreed(alone[p], reply)
            assert all(own >= agreed(alone[q], reply) for q in prompts), (p, reply, alone)
            agreements.append(own)
            identical += reply == alone[p]
    assert sorted(agreements)[len(agreements) // 2] >= 13, agreements
    assert identical >= 1, "no batched reply was identical to its reply alone"


def test_alternating_two_chats_evaluates_only_the_new_tokens(server: ServerProcess) -> None:
    long_system = "You are a patient tutor. " * 40
    sids: dict[str, str] = {}
    evaluated: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
    for turn in range(3):
        for chat_name in ("a", "b"):
            body = {
                "messages": [
                    {"role": "system", "content": long_system + chat_name},
                    {"role": "user", "content": f"Question {turn} from chat {chat_name}."},
                ],
                "session_id": sids.get(chat_name, "new"),
                "params": {**GREEDY, "max_tokens": 8},
            }
            if chat_name in sids:
                body["messages"] = body["messages"][1:]
            out = chat(server, body)
            sids[chat_name] = out["session_id"]
            m = out["metrics"]
            evaluated[chat_name].append((m["prompt_eval_tokens"], m["prompt_tokens"]))
    assert evaluated["a"][0][0] > 200, evaluated  # cold
    assert evaluated["b"][0][0] < 40, evaluated  # shares a's system prompt cells, and a keeps its own cache
    for name, turns in evaluated.items():
        for ev, prompt in turns[1:]:
            assert prompt > turns[0][1] and ev < 40, (name, turns)


def test_a_crash_with_four_sequences_in_flight_ends_all_four_and_keeps_their_replies(
    server: ServerProcess,
) -> None:
    fault = Path(server.env["LLMCHAT_FAULT_FILE"])
    sids = [
        chat(
            server,
            {
                "messages": [{"role": "user", "content": f"Hi {i}"}],
                "session_id": "new",
                "params": {**GREEDY, "max_tokens": 4},
            },
        )["session_id"]
        for i in range(4)
    ]
    fault.write_text("SIGSEGV@token:6")

    def long_turn(sid: str) -> list[tuple[str, Any]]:
        body = {
            "messages": [{"role": "user", "content": "Write a long story about the sea."}],
            "session_id": sid,
            "params": {**GREEDY, "max_tokens": 200},
        }
        resp = httpx.post(server.url + "/api/chat/stream", json=body, timeout=300)
        return parse_sse(resp.text)

    results = in_parallel([lambda s=s: long_turn(s) for s in sids])
    for events in results:
        assert events[-1][0] == "error" and "SIGSEGV" in events[-1][1]["error"]["message"], events[-3:]
    for sid, events in zip(sids, results, strict=True):
        saved = httpx.get(f"{server.url}/api/sessions/{sid}").json()["messages"]
        got = "".join(d.get("delta", "") for name, d in events if name == "message")
        if got:
            assert saved[-1]["interrupted"] and saved[-1]["content"] == got
        assert saved[1]["role"] == "assistant" and not saved[1].get("interrupted")
    assert chat(server, {"messages": [{"role": "user", "content": "Still there?"}], "session_id": sids[0]})[
        "reply"
    ]


def test_an_idle_chat_goes_to_the_prompt_cache_while_another_decodes_and_comes_back_from_it(
    server: ServerProcess,
) -> None:
    """Every decode step attends over all the cells in use, idle chats' included: four idle chats of 300
    tokens took a quarter off a fifth chat's decode speed. So idle chats whose cells would cost more than 3%
    of the speed (about 117 cells on this model) go to disk while another chat decodes, and return from
    there."""
    first = {
        name: chat(
            server,
            {
                "messages": [
                    {"role": "system", "content": f"{name} " * 200},
                    {"role": "user", "content": "Hello."},
                ],
                "session_id": "new",
                "params": {**GREEDY, "max_tokens": 4},
            },
        )
        for name in ("Ember", "Frost")
    }
    ember, frost = first["Ember"]["session_id"], first["Frost"]["session_id"]
    assert first["Frost"]["metrics"]["prompt_eval_tokens"] > 150  # no prefix shared with Ember
    assert slot_of(server, frost) is not None and slot_of(server, ember) is None  # Ember is on disk
    again = chat(
        server,
        {"messages": [{"role": "user", "content": "Again."}], "session_id": ember, "params": GREEDY},
    )
    assert again["metrics"]["prompt_eval_tokens"] < 40, again["metrics"]  # restored, not evaluated
    assert slot_of(server, ember) is not None
