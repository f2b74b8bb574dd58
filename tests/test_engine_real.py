"""The engine with the real default model, in this process: streaming, determinism, prefix reuse, stop,
the model lock and its queue, and context fitting. Greedy sampling with a fixed seed throughout."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from engine.backends.base import Delta, Finished, Message
from engine.chat import Engine, Queued, StreamEvent
from engine.config import load_settings
from engine.errors import InvalidInput
from engine.params import SamplingParams
from engine.runtime import build_backend
from tests.helpers import GREEDY

pytestmark = pytest.mark.slow

STORY = [
    {"role": "system", "content": "You are a helpful assistant who writes long, detailed answers."},
    {"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."},
]


def make_engine(model_path: Path, n_ctx: int, data: Path) -> Engine:
    model = {"path": str(model_path), "n_ctx": n_ctx, "n_threads": 1, "parallel": 1}
    settings, _ = load_settings(environ={}, overrides={"model": model, "data_dir": str(data)})
    return Engine(build_backend(settings))


@pytest.fixture(scope="module")
def engine(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    eng = make_engine(model_path, 2048, tmp_path_factory.mktemp("data"))
    try:
        yield eng
    finally:
        eng.close()


def params(**kw: Any) -> SamplingParams:
    return SamplingParams(**{**GREEDY, "max_tokens": 24, **kw})


def run(
    engine: Engine, messages: list[Message], p: SamplingParams
) -> tuple[str, list[StreamEvent], Finished]:
    events = list(engine.stream(messages, p))
    done = events[-1]
    assert isinstance(done, Finished), events
    assert sum(isinstance(e, Finished) for e in events) == 1
    return "".join(e.text for e in events if isinstance(e, Delta)), events, done


def test_stream_arrives_as_many_deltas(engine: Engine) -> None:
    text, events, done = run(engine, STORY, params(max_tokens=24))
    deltas = [e for e in events if isinstance(e, Delta)]
    assert len(deltas) >= 5, deltas
    assert all(d.text for d in deltas)
    assert text.strip()
    m = done.metrics
    assert done.finish_reason == "length"
    assert m.completion_tokens == 24
    assert m.prompt_tokens and m.prompt_tokens > 20
    assert m.context_used == m.prompt_tokens + m.completion_tokens
    assert m.ttft_ms is not None and m.ttft_ms > 0
    assert m.tokens_per_s is not None and m.tokens_per_s > 0
    assert m.context_size == 2048 and m.dropped_messages == 0


def test_plain_and_streamed_replies_are_equal(engine: Engine) -> None:
    p = params(max_tokens=32)
    # Greedy replies match only from the same prompt-cache state: llama.cpp's numerics differ slightly
    # between a prompt evaluated in one batch and its last token replayed from the cache. Warm it first.
    run(engine, STORY, params(max_tokens=1))
    streamed, _, done_stream = run(engine, STORY, p)
    plain, done_plain = engine.complete(STORY, p)
    assert plain == streamed
    assert done_plain.finish_reason == done_stream.finish_reason
    assert done_plain.metrics.completion_tokens == done_stream.metrics.completion_tokens


def test_same_seed_same_reply_when_sampling(engine: Engine) -> None:
    p = params(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=1234, max_tokens=24)
    run(engine, STORY, p)  # same cache state for the runs compared (see test_plain_and_streamed...)
    first, _, _ = run(engine, STORY, p)
    second, _, _ = run(engine, STORY, p)
    reseeded, _, _ = run(engine, STORY, p.merged({"seed": 99}))
    assert first == second
    assert reseeded != first  # the seed is what made them equal


def test_follow_up_turn_reuses_the_prefix(engine: Engine) -> None:
    system = {"role": "system", "content": "You are Quill, a terse archivist. " * 8}  # unique: not cached yet
    turn1 = [system, {"role": "user", "content": "Name three colours."}]
    reply, _, done1 = run(engine, turn1, params(max_tokens=16))
    m1 = done1.metrics
    assert m1.prompt_tokens and m1.prompt_eval_tokens
    assert m1.prompt_eval_tokens >= m1.prompt_tokens - 10  # cold: at most the template's opening is cached
    turn2 = [
        *turn1,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And three fruits?"},
    ]
    _, _, done2 = run(engine, turn2, params(max_tokens=8))
    m2 = done2.metrics
    assert m2.prompt_tokens and m1.prompt_tokens and m2.prompt_eval_tokens
    assert m2.prompt_tokens > m1.prompt_tokens + 5
    # only the new tokens (the reply as re-rendered plus the new user turn) are evaluated
    assert m2.prompt_eval_tokens <= m2.prompt_tokens - m1.prompt_tokens + 1
    assert m2.prompt_eval_tokens < m2.prompt_tokens // 3


def time_to_first_answer(engine: Engine, messages: list[Message]) -> float:
    """Seconds from the call to the first event that is not a place in the queue."""
    started = time.perf_counter()
    for event in engine.stream(messages, params(max_tokens=1)):
        if not isinstance(event, Queued):
            return time.perf_counter() - started
    raise AssertionError("no event")


def test_closed_generator_frees_the_model(engine: Engine) -> None:
    gen = engine.stream(STORY, params(max_tokens=400))
    deltas = 0
    for event in gen:
        deltas += isinstance(event, Delta)
        if deltas == 2:
            break
    cast(Generator[StreamEvent, None, None], gen).close()  # the client went away mid-reply
    assert len(engine.queue) == 0
    assert time_to_first_answer(engine, STORY) < 1.0


def test_cancel_event_frees_the_model(engine: Engine) -> None:
    cancel = threading.Event()
    two_deltas = threading.Event()
    seen: list[StreamEvent] = []

    def long_reply() -> None:
        for event in engine.stream(STORY, params(max_tokens=400), cancel):
            seen.append(event)
            if sum(isinstance(e, Delta) for e in seen) == 2:
                two_deltas.set()

    worker = threading.Thread(target=long_reply)
    worker.start()
    try:
        assert two_deltas.wait(60)
        cancel.set()  # Stop pressed
        assert time_to_first_answer(engine, STORY) < 1.0
    finally:
        cancel.set()
        worker.join(60)
    assert not worker.is_alive()
    done = seen[-1]
    assert isinstance(done, Finished) and done.finish_reason == "cancelled"
    assert done.metrics.completion_tokens is not None and done.metrics.completion_tokens < 400


def test_max_tokens_is_honoured(engine: Engine) -> None:
    _, _, done = run(engine, STORY, params(max_tokens=5))
    assert done.finish_reason == "length"
    assert done.metrics.completion_tokens == 5


def test_stop_strings_are_honoured(engine: Engine) -> None:
    full, _, _ = run(engine, STORY, params(max_tokens=40))
    words = full.split()
    assert len(words) >= 6, full
    stop = words[4]
    expected = full[: full.index(stop)]
    for given_stop in (stop, [stop, "\u2603never\u2603"]):
        text, _, done = run(engine, STORY, params(max_tokens=40, stop=given_stop))
        assert text == expected
        assert stop not in text
        assert done.finish_reason == "stop"


def test_two_requests_at_once_queue_and_both_complete(engine: Engine) -> None:
    results: dict[str, list[StreamEvent]] = {}
    a_started = threading.Event()

    def request(name: str, messages: list[Message]) -> None:
        events: list[StreamEvent] = []
        for event in engine.stream(messages, params(max_tokens=16)):
            events.append(event)
            if isinstance(event, Delta):
                a_started.set()
        results[name] = events

    a = threading.Thread(target=request, args=("a", STORY))
    a.start()
    assert a_started.wait(60)
    b = threading.Thread(target=request, args=("b", [{"role": "user", "content": "Say hi."}]))
    b.start()
    a.join(120)
    b.join(120)
    for name in ("a", "b"):
        events = results[name]
        done = events[-1]
        assert isinstance(done, Finished) and done.finish_reason in ("stop", "length"), (name, events)
        assert done.metrics.completion_tokens
    b_events = results["b"]
    assert isinstance(b_events[0], Queued) and b_events[0].position == 1
    done_b = b_events[-1]
    assert isinstance(done_b, Finished)
    assert done_b.metrics.queue_ms is not None and done_b.metrics.queue_ms > 0
    assert len(engine.queue) == 0


def test_cancelled_while_queued_never_runs(engine: Engine) -> None:
    hold = threading.Event()
    release = threading.Event()

    def busy() -> None:
        for event in engine.stream(STORY, params(max_tokens=400)):
            if isinstance(event, Delta):
                hold.set()
                release.wait(30)
                break

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        assert hold.wait(60)
        cancel = threading.Event()
        gen = engine.stream(STORY, params(), cancel)
        assert isinstance(next(gen), Queued)
        cancel.set()
        rest = list(gen)
        assert len(rest) >= 1 and isinstance(rest[-1], Finished) and rest[-1].finish_reason == "cancelled"
        assert not any(isinstance(e, Delta) for e in rest)
    finally:
        release.set()
        worker.join(60)


def test_invalid_messages_are_rejected(engine: Engine) -> None:
    for bad in ([], [{"role": "robot", "content": "hi"}], [{"role": "user", "content": 5}], "hi"):
        with pytest.raises(InvalidInput):
            list(engine.stream(bad, params()))  # type: ignore[arg-type]
    assert len(engine.queue) == 0


def test_context_fitting_drops_old_turns_and_still_answers(model_path: Path, tmp_path: Path) -> None:
    n_ctx, max_tokens = 256, 8
    small = make_engine(model_path, n_ctx, tmp_path)
    try:
        history: list[Message] = [{"role": "system", "content": "You are a helpful assistant."}]
        for i in range(8):
            history += [
                {
                    "role": "user",
                    "content": f"Tell me fact number {i} about the sea. " + "Waves roll in. " * 4,
                },
                {
                    "role": "assistant",
                    "content": f"Fact {i}: the sea is deep and wide. " + "Salt water. " * 4,
                },
            ]
        history.append({"role": "user", "content": "Now say hello."})
        assert small.backend is not None
        assert (small.backend.count_tokens(history) or 0) > n_ctx
        text, _, done = run(small, history, params(max_tokens=max_tokens))
        m = done.metrics
        assert m.dropped_messages > 0 and m.dropped_messages % 2 == 0  # whole turns, history starts on a user
        assert m.prompt_tokens is not None and m.prompt_tokens <= n_ctx - max_tokens
        assert m.prompt_tokens > n_ctx // 2  # only as much was dropped as needed
        assert done.finish_reason in ("stop", "length") and m.completion_tokens
        assert text.strip()
    finally:
        small.close()


def test_a_chat_past_the_context_keeps_reusing_the_cache(model_path: Path, tmp_path: Path) -> None:
    """Once old turns are dropped, the next turns keep the same start, so only their new tokens are
    evaluated, instead of the whole window on every turn."""
    n_ctx, max_tokens = 384, 8  # not a multiple of 256: llama.cpp pads it, the usable window is 384
    small = make_engine(model_path, n_ctx, tmp_path)
    try:
        history: list[Message] = [{"role": "system", "content": "You are a helpful assistant."}]
        evaluated, dropped = [], []
        for i in range(20):
            history.append({"role": "user", "content": f"Fact {i} about the sea, in a few words please."})
            text, _, done = run(small, history, params(max_tokens=max_tokens))
            history.append({"role": "assistant", "content": text})
            evaluated.append(done.metrics.prompt_eval_tokens)
            dropped.append(done.metrics.dropped_messages)
            assert done.metrics.prompt_tokens is not None and done.metrics.prompt_tokens <= n_ctx - max_tokens
        cut = [i for i, d in enumerate(dropped) if d]
        assert len(cut) >= 4, dropped  # the chat did outgrow the window
        reused = [i for i in cut[1:] if dropped[i] == dropped[i - 1]]  # the same start as the turn before
        assert reused, dropped
        for i in reused:
            assert evaluated[i] is not None and evaluated[i] < 60, (i, evaluated, dropped)
    finally:
        small.close()


def test_prompt_that_cannot_fit_is_a_clear_error(model_path: Path, tmp_path: Path) -> None:
    small = make_engine(model_path, 256, tmp_path)
    try:
        huge = [{"role": "user", "content": "word " * 600}]
        with pytest.raises(InvalidInput, match="context window"):
            list(small.stream(huge, params()))
        assert len(small.queue) == 0
    finally:
        small.close()
