"""Context fitting with a fake token counter: what is kept, what is dropped, and the count reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.backends.base import Message
from engine.chat import fit_messages
from tests.scripted import ScriptedBackend, scripted_runtime

OVERHEAD = 3  # per-message template tokens in the fake counter


def count(messages: list[Message]) -> int:
    """Fake tokenizer: one token per word plus a few per message."""
    return sum(len(m["content"].split()) + OVERHEAD for m in messages)


def msg(role: str, words: int, tag: str = "") -> Message:
    return {"role": role, "content": " ".join([tag or role] * words)}


def conversation(turns: int, words: int = 10) -> list[Message]:
    out = [msg("system", 5, "sys")]
    for i in range(turns):
        out += [msg("user", words, f"u{i}"), msg("assistant", words, f"a{i}")]
    return [*out, msg("user", words, "last")]


def test_no_op_when_it_fits() -> None:
    messages = conversation(3)
    kept, dropped = fit_messages(messages, count, count(messages))
    assert kept == messages and dropped == 0


def test_unknown_count_keeps_everything() -> None:
    messages = conversation(3)
    assert fit_messages(messages, lambda _: None, 1) == (messages, 0)


def test_drops_oldest_keeps_system_and_last_user() -> None:
    messages = conversation(5)  # system + 10 turns + last user, 13 tokens each turn
    budget = count(messages) - 20  # two turns must go
    kept, dropped = fit_messages(messages, count, budget)
    assert dropped == 2
    assert kept[0] == messages[0]
    assert kept[-1] == messages[-1]
    assert kept == [messages[0], *messages[3:]]  # u0 and a0 went, u1 starts the kept history
    assert count(kept) <= budget


def test_kept_history_starts_on_a_user_turn() -> None:
    messages = conversation(5)
    budget = count(messages) - 5  # dropping u0 alone would fit, but then the history starts with a0
    kept, dropped = fit_messages(messages, count, budget)
    assert dropped == 2
    assert kept[1]["role"] == "user"
    assert kept[1]["content"].startswith("u1")


def test_only_system_and_last_when_nothing_else_fits() -> None:
    messages = conversation(4)
    minimal = [messages[0], messages[-1]]
    kept, dropped = fit_messages(messages, count, count(minimal))
    assert kept == minimal and dropped == len(messages) - 2
    # even when that is still too big, the system prompt and the last user turn stay
    kept, dropped = fit_messages(messages, count, 1)
    assert kept == minimal and dropped == len(messages) - 2


def test_nothing_to_drop_reports_zero() -> None:
    messages = [msg("system", 50), msg("user", 50)]
    assert fit_messages(messages, count, 10) == (messages, 0)
    assert fit_messages([msg("user", 50)], count, 10) == ([msg("user", 50)], 0)
    assert fit_messages([], count, 10) == ([], 0)


def test_trailing_messages_after_last_user_are_kept() -> None:
    # a post-history system note, or a partial reply being continued, comes after the last user turn
    note = msg("system", 4, "note")
    partial = msg("assistant", 4, "partial")
    for tail in ([note], [partial], [partial, note]):
        messages = [*conversation(4), *tail]
        kept, dropped = fit_messages(messages, count, count([messages[0], messages[-1 - len(tail)], *tail]))
        assert kept == [messages[0], messages[-1 - len(tail)], *tail]
        assert dropped == len(messages) - 2 - len(tail)
        # even when nothing fits, the last user turn is never traded for what follows it
        assert fit_messages(messages, count, 1) == (kept, dropped)


def test_several_leading_system_messages_are_kept() -> None:
    messages = [msg("system", 3, "s1"), msg("system", 3, "s2"), *conversation(3)[1:]]
    kept, _ = fit_messages(messages, count, 1)
    assert kept == [messages[0], messages[1], messages[-1]]


# --- property ------------------------------------------------------------------------------------

roles = st.sampled_from(["user", "assistant", "system"])
message = st.builds(lambda r, n: msg(r, n), roles, st.integers(0, 40))


@st.composite
def histories(draw: st.DrawFn) -> list[Message]:
    system = draw(st.lists(st.builds(lambda n: msg("system", n), st.integers(0, 30)), max_size=2))
    body = draw(st.lists(message, max_size=14))
    last = draw(st.builds(lambda n: msg("user", n, "last"), st.integers(0, 40)))
    trailing = draw(
        st.lists(
            st.builds(
                lambda r, n: msg(r, n, "tail"), st.sampled_from(["assistant", "system"]), st.integers(0, 5)
            ),
            max_size=2,
        )
    )
    return [*system, *body, last, *trailing]


@given(histories(), st.integers(0, 400))
def test_result_fits_or_is_minimal(messages: list[Message], budget: int) -> None:
    kept, dropped = fit_messages(messages, count, budget)
    head = 0
    while head < len(messages) - 1 and messages[head]["role"] == "system":
        head += 1
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    tail = messages[last_user:]
    middle = messages[head:last_user]

    assert dropped == len(messages) - len(kept)
    assert kept[:head] == messages[:head]  # leading system messages kept
    assert kept[len(kept) - len(tail) :] == tail  # the last user turn and what follows it kept
    kept_middle = kept[head : len(kept) - len(tail)]
    assert kept_middle == middle[dropped:]  # only the oldest turns go, in one contiguous run
    if dropped:
        assert count(kept) <= budget or not kept_middle  # fits, or nothing more could go
        if kept_middle:
            assert kept_middle[0]["role"] == "user"  # the history starts on a user turn
        # minimal: no smaller drop that starts on a user turn would have fitted
        assert count(messages) > budget
        for d in range(1, dropped):
            if middle[d]["role"] == "user":
                assert count(messages[:head] + middle[d:] + tail) > budget
    else:
        assert kept == messages
        assert count(messages) <= budget or not middle


def test_a_growing_chat_keeps_its_cut_so_the_cache_prefix_holds() -> None:
    """Turn after turn the kept history starts at the same message until the headroom is used up, and
    every prompt fits."""
    budget, starts, anchors = 200, [], []
    history = [msg("system", 5, "sys")]
    for i in range(40):
        history += [msg("user", 10, f"u{i}")]
        kept, dropped = fit_messages(history, count, budget, anchors=anchors, headroom=budget // 4)
        assert count(kept) <= budget
        assert kept[0] == history[0] and kept[-1] == history[-1]
        anchors = [kept[1]] if dropped else []
        if dropped:
            assert kept[1]["role"] == "user"
            starts.append(kept[1]["content"])
        history += [msg("assistant", 10, f"a{i}")]
    assert len(starts) > 20
    assert len(set(starts)) <= len(starts) // 3  # a new cut at most every third turn


def test_two_chats_taking_turns_each_keep_their_cut(tmp_path: Path) -> None:
    """The engine remembers a cut per chat: a short chat's turn between two turns of a long one does not
    move the long one's start, and so its cached prompt prefix (the browser bench alternates them)."""
    backend = ScriptedBackend(n_ctx=400)
    rt = scripted_runtime(tmp_path / "data", backend)
    params = {"max_tokens": 100}
    history: list[dict[str, Any]] = []
    starts = []
    for i in range(40):
        history.append({"role": "user", "content": f"question number {i} " + "word " * 8})
        rt.turn(history, params=params).text()
        sent = backend.prompts[-1]
        starts.append(next(m["content"] for m in sent if m["role"] != "system"))
        rt.turn([{"role": "user", "content": "hi"}], params=params).text()  # the other chat
        history.append({"role": "assistant", "content": "an answer of several words " * 2})
    cut = [s for s in starts if not s.startswith("question number 0 ")]
    assert len(cut) > 20 and len(set(cut)) <= len(cut) // 3  # a new cut at most every third turn


def test_without_an_anchor_a_new_cut_frees_the_headroom() -> None:
    messages = conversation(10)
    budget = count(messages) - 20
    kept, _ = fit_messages(messages, count, budget, headroom=60)
    assert count(kept) <= budget - 60
    tight, _ = fit_messages(messages, count, budget)
    assert count(tight) > budget - 60


def test_headroom_that_cannot_be_had_falls_back_to_the_fewest_drops() -> None:
    messages = [msg("system", 5, "sys"), msg("user", 10, "u0"), msg("assistant", 10, "a0"), msg("user", 80)]
    budget = count(messages) - 5
    assert fit_messages(messages, count, budget, headroom=budget) == (fit_messages(messages, count, budget))


# --- cost: linear in what is kept, each message counted once, cancel between steps -------------------------


class CountingTokenizer:
    """The fake tokenizer, recording how many messages it was asked to render in all."""

    def __init__(self) -> None:
        self.rendered = 0
        self.calls = 0

    def __call__(self, messages: list[Message]) -> int:
        self.rendered += len(messages)
        self.calls += 1
        return count(messages)


def test_fitting_a_huge_history_renders_only_about_what_is_kept() -> None:
    """Before: the whole history was rendered at every step of a binary search (9 s for 8,000 messages,
    minutes for 200,000). Now each message is counted once, only back to where the budget runs out."""
    from engine.chat import MessageCosts

    messages = conversation(100_000, words=3)  # 200,001 messages
    tok = CountingTokenizer()
    costs = MessageCosts(tok)
    kept, dropped = fit_messages(messages, tok, 1000, cost=costs)
    assert count(kept) <= 1000 and dropped == len(messages) - len(kept)
    assert len(kept) < 200
    assert tok.rendered < 20 * len(kept)  # never the whole history, nor one render per step of a search
    # a later turn counts only its new messages; the cache holds the rest
    tok.rendered = 0
    messages += [msg("assistant", 3, "a-new"), msg("user", 3, "u-new")]
    kept, _ = fit_messages(messages, tok, 1000, cost=costs)
    assert count(kept) <= 1000
    assert tok.rendered < 10 * len(kept)


def test_each_message_is_counted_once() -> None:
    from engine.chat import MessageCosts

    tok = CountingTokenizer()
    costs = MessageCosts(tok)
    m = msg("user", 5)
    assert costs(m) == costs(dict(m)) == count([m])  # the reference system message cancels out
    assert tok.calls == 2  # the reference once, the message once


def test_cancel_stops_fitting_between_steps() -> None:
    import threading

    import pytest

    from engine.chat import FitCancelled

    cancel = threading.Event()
    calls = 0

    def cancelling(messages: list[Message]) -> int:
        nonlocal calls
        calls += 1
        cancel.set()  # the client goes away during the first count
        return count(messages)

    with pytest.raises(FitCancelled):
        fit_messages(conversation(5000), cancelling, 100, cancel=cancel)
    assert calls <= 2
