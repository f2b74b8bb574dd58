"""model.kv_unified: false, with the real model in this process: each slot gets a KV cache of its own of
n_ctx cells, so two chats that would not fit in one n_ctx decode side by side; a chat still evaluates only
its new tokens on its return; and a system prompt that another slot holds is evaluated, never copied
(llama.cpp copies only whole caches between streams, and aborts on a part)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from engine.backends.base import Delta, Finished, Message
from engine.backends.llama_cpp import LlamaCppBackend
from engine.config import load_settings
from engine.params import SamplingParams, parse_params
from tests.helpers import GREEDY

pytestmark = pytest.mark.slow

N_CTX = 512


@contextmanager
def split_backend(model_path: Path, parallel: int) -> Iterator[LlamaCppBackend]:
    """The real model in this process with `parallel` slots, each with a KV cache of N_CTX cells."""
    model = {
        "path": str(model_path),
        "n_ctx": N_CTX,
        "n_threads": 1,
        "parallel": parallel,
        "kv_unified": False,
    }
    settings, _ = load_settings(environ={}, overrides={"model": model})
    backend = LlamaCppBackend(settings.model, model_path)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture(scope="module")
def split(model_path: Path) -> Iterator[LlamaCppBackend]:
    with split_backend(model_path, 2) as backend:
        yield backend


def params(max_tokens: int) -> SamplingParams:
    return parse_params({**GREEDY, "max_tokens": max_tokens})


def reply(backend: LlamaCppBackend, messages: list[Message], max_tokens: int) -> tuple[str, Finished]:
    text, done = "", None
    for event in backend.stream(messages, params(max_tokens), threading.Event()):
        if isinstance(event, Delta):
            text += event.text
        elif isinstance(event, Finished):
            done = event
    assert done is not None and done.finish_reason in ("length", "stop"), done
    return text, done


def long_chat(topic: str) -> list[Message]:
    notes = " ".join(f"{topic} note {i}." for i in range(50))  # about 350 tokens
    return [{"role": "system", "content": notes}, {"role": "user", "content": f"Sum up the {topic} notes."}]


def test_each_slot_has_a_window_of_n_ctx(split: LlamaCppBackend) -> None:
    assert split.context_size() == N_CTX
    assert split._llama_cpp.llama_n_ctx(split.llm.ctx) >= 2 * N_CTX  # two caches of N_CTX cells
    chats = [long_chat("harbour"), long_chat("orchard")]
    results: list[tuple[str, Finished]] = []
    busy_at_once = 0

    def run(messages: list[Message]) -> None:
        results.append(reply(split, messages, 48))

    threads = [threading.Thread(target=run, args=(c,)) for c in chats]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        busy_at_once = max(busy_at_once, sum(s["busy"] for s in split.slots()))
        threads[0].join(0.005)
    for t in threads:
        t.join()
    # together they need more than N_CTX cells: one shared cache of N_CTX would have run them in turn
    assert all(done.metrics.prompt_tokens and done.metrics.prompt_tokens > 280 for _, done in results)
    assert busy_at_once == 2
    assert all(text.strip() for text, _ in results)


def test_a_chat_returns_to_its_own_cache(split: LlamaCppBackend) -> None:
    first = long_chat("lantern")
    other = long_chat("meadow")
    answer, _ = reply(split, first, 8)
    reply(split, other, 8)
    follow_up = [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "Shorter."}]
    _, done = reply(split, follow_up, 8)
    assert done.metrics.prompt_tokens and done.metrics.prompt_eval_tokens is not None
    assert done.metrics.prompt_eval_tokens < 40 < done.metrics.prompt_tokens


def test_a_prompt_start_held_by_another_slot_is_evaluated_not_copied(split: LlamaCppBackend) -> None:
    shared = long_chat("granary")
    reply(split, shared, 4)
    _, done = reply(split, [shared[0], {"role": "user", "content": "Name one granary note."}], 4)
    assert done.metrics.prompt_tokens and done.metrics.prompt_tokens > 280
    # the other slot held the same system prompt; a unified cache would have shared those cells, here at
    # most the template's opening that this slot's last chat began with is reused
    assert done.metrics.prompt_eval_tokens is not None
    assert done.metrics.prompt_eval_tokens >= done.metrics.prompt_tokens - 10


class DecodeRecorder:
    """The llama_cpp module, except that llama_decode records each batch's sequence ids first."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self.batches: list[list[int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lib, name)

    def llama_decode(self, ctx: Any, batch: Any) -> int:
        self.batches.append([batch.seq_id[i][0] for i in range(batch.n_tokens)])
        return int(self._lib.llama_decode(ctx, batch))


def recording(backend: LlamaCppBackend) -> DecodeRecorder:
    recorder = DecodeRecorder(backend._scheduler.lib)
    backend._scheduler.lib = recorder
    return recorder


def start_alone(
    backend: LlamaCppBackend, recorder: DecodeRecorder, chat: list[Message], slot: int
) -> threading.Thread:
    """Start a 48-token follow-up of `chat` in a thread; return the thread once it decodes alone in `slot`."""
    later = threading.Thread(target=reply, args=(backend, [*chat, *FOLLOW], 48))
    later.start()
    while not any(set(b) == {slot} for b in recorder.batches):
        later.join(0.005)
        assert later.is_alive(), [sorted(set(b)) for b in recorder.batches]
    return later


def answered(backend: LlamaCppBackend, topic: str, user: str) -> list[Message]:
    """A long system prompt, a user turn and the model's short answer: a chat its slot holds whole."""
    chat: list[Message] = [long_chat(topic)[0], {"role": "user", "content": user}]
    chat.append({"role": "assistant", "content": reply(backend, chat, 2)[0]})
    return chat


def test_a_batch_goes_in_slot_order_whatever_the_admission_order(model_path: Path) -> None:
    # llama.cpp cuts a batch over separate KV streams wherever a token's sequence id is not the previous
    # one's plus 1, so slots 1 then 0 would take two passes over the weights in every step
    with split_backend(model_path, 2) as backend:
        first, second = answered(backend, "kettle", "Hi."), answered(backend, "ferry", "Hello.")  # slots 0, 1
        recorder = recording(backend)
        later = start_alone(backend, recorder, second, 1)  # admitted first, into slot 1
        reply(backend, [*first, *FOLLOW], 8)  # admitted second, into slot 0
        later.join()
    both = [b for b in recorder.batches if set(b) == {0, 1}]
    assert both, recorder.batches
    assert all(b == sorted(b) for b in recorder.batches), both


def test_a_new_chat_takes_the_free_slot_next_to_the_busy_ones(model_path: Path) -> None:
    # slots 0 and 2 busy would be two runs of sequence ids, a pass over the weights each in every step
    with split_backend(model_path, 3) as backend:
        # slots 0, 1, 2; slot 0 least recently used
        chats = [answered(backend, topic, "Hi.") for topic in ("anvil", "bellows", "chisel")]
        assert [s["busy"] or bool(s["cached_tokens"]) for s in backend.slots()] == [True] * 3
        recorder = recording(backend)
        later = start_alone(backend, recorder, chats[2], 2)  # its own slot, 2
        reply(backend, [long_chat("drill")[0], {"role": "user", "content": "Hi."}], 8)
        later.join()
    both = [b for b in recorder.batches if len(set(b)) == 2]
    assert both, recorder.batches
    assert all(sorted(set(b)) == [1, 2] for b in both), both  # not slot 0, the least recently used


FOLLOW: list[Message] = [{"role": "user", "content": "Go on."}]
