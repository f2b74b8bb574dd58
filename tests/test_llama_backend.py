"""The embedded backend's own decode loop: stop strings that arrive in pieces, the KV cache tail that a
new prompt diverges from, grammar, and that reusing the cache changes nothing in the reply."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.backends.base import Delta, Finished, Message
from engine.backends.batching import safe_end as _safe_end
from engine.backends.llama_cpp import LlamaCppBackend
from engine.config import load_settings
from engine.params import SamplingParams, parse_params
from tests.helpers import GREEDY

STORY: list[Message] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a long story about a lighthouse keeper."},
]


def test_safe_end_holds_back_only_a_possible_stop_prefix() -> None:
    stops = ["<|im_end|>", "\n\n"]
    assert _safe_end("Hello there", stops, 0) == len("Hello there")
    assert _safe_end("Hello <|im", stops, 0) == len("Hello ")
    assert _safe_end("Hello\n", stops, 0) == len("Hello")
    assert _safe_end("a < b", stops, 0) == len("a < b")  # "<" then " b" cannot become "<|im_end|>"
    assert _safe_end("ab<", stops, 3) == 3  # never holds back what was already sent


def backend(model_path: Path) -> LlamaCppBackend:
    settings, _ = load_settings(
        environ={},
        overrides={"model": {"path": str(model_path), "n_ctx": 1024, "n_threads": 1, "parallel": 1}},
    )
    return LlamaCppBackend(settings.model, model_path)


@pytest.fixture(scope="module")
def llm(model_path: Path) -> Iterator[LlamaCppBackend]:
    b = backend(model_path)
    try:
        yield b
    finally:
        b.close()


def run(b: LlamaCppBackend, messages: list[Message], **params: object) -> tuple[list[str], Finished]:
    p: SamplingParams = parse_params({**GREEDY, "max_tokens": 48, **params})
    deltas: list[str] = []
    done = None
    for event in b.stream(messages, p, threading.Event()):
        if isinstance(event, Delta):
            deltas.append(event.text)
        elif isinstance(event, Finished):
            done = event
    assert done is not None
    return deltas, done


@pytest.mark.slow
def test_a_stop_string_never_leaks_into_a_delta(llm: LlamaCppBackend) -> None:
    text = "".join(run(llm, STORY)[0])
    words = text.split()
    assert len(words) > 6
    stop = " ".join(words[3:5])  # two words from the middle: several tokens, so it arrives in pieces
    deltas, done = run(llm, STORY, stop=[stop])
    assert done.finish_reason == "stop"
    assert "".join(deltas) == text[: text.index(stop)]
    assert not any(stop in d for d in deltas)


@pytest.mark.slow
def test_a_divergent_tail_is_dropped_and_the_reply_matches_a_cold_cache(
    llm: LlamaCppBackend, model_path: Path
) -> None:
    first = [*STORY[:1], {"role": "user", "content": "Name three colours."}]
    second = [*STORY[:1], {"role": "user", "content": "Name three animals."}]
    run(llm, first)
    warm, done = run(llm, second)
    assert done.metrics.prompt_eval_tokens is not None and done.metrics.prompt_tokens is not None
    assert 0 < done.metrics.prompt_eval_tokens < done.metrics.prompt_tokens  # the shared prefix was reused
    cold = backend(model_path)
    try:
        assert warm and "".join(run(cold, second)[0]) == "".join(warm)
    finally:
        cold.close()


@pytest.mark.slow
def test_the_same_prompt_twice_reevaluates_one_token(llm: LlamaCppBackend) -> None:
    a, _ = run(llm, STORY)
    b, done = run(llm, STORY)
    assert "".join(a) == "".join(b)
    assert done.metrics.prompt_eval_tokens == 1


@pytest.mark.slow
def test_grammar_constrains_the_reply(llm: LlamaCppBackend) -> None:
    deltas, done = run(llm, STORY, grammar='root ::= ("yes" | "no") "."')
    assert "".join(deltas) in ("yes.", "no.")
    assert done.finish_reason == "stop"


def test_a_long_prompt_counted_to_fit_is_not_tokenized_again_to_send(
    llm: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    history: list[Message] = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"Message {i} about lighthouses. " * 8}
        for i in range(40)
    ]
    calls: list[int] = []
    tokenize = llm.llm.tokenize

    def counted(text: bytes, *args: object, **kwargs: object) -> list[int]:
        calls.append(len(text))
        return list(tokenize(text, *args, **kwargs))

    monkeypatch.setattr(llm.llm, "tokenize", counted)
    n = llm.count_tokens(history)
    tokens, _ = llm.render(history)
    assert len(tokens) == n and len(calls) == 1  # the long prompt's tokens came from the memo
    tokens.clear()  # a caller's list is its own: the memo keeps its copy
    assert len(llm.render(history)[0]) == n
    assert len(llm.render(history[:-1])[0]) < n and len(calls) == 2  # another prompt is tokenized


@pytest.mark.slow
def test_the_greedy_shortcut_picks_what_the_sampler_chain_picks(
    llm: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At temperature 0 with neutral penalties the decode loop takes the highest logit itself; through
    llama.cpp's sampler chain the reply is the same, token for token (both from a warm prompt cache)."""
    import engine.backends.llama_cpp as llama_module

    plain = {**GREEDY, "repeat_penalty": 1.0, "max_tokens": 96}
    assert llama_module.is_plain_greedy(parse_params(plain))
    assert not llama_module.is_plain_greedy(parse_params({**plain, "repeat_penalty": 1.1}))
    assert not llama_module.is_plain_greedy(parse_params({**plain, "temperature": 0.1}))
    run(llm, STORY, **plain)  # the prompt is cached from here on
    shortcut, done = run(llm, STORY, **plain)
    monkeypatch.setattr(llama_module, "is_plain_greedy", lambda params: False)
    chain, chain_done = run(llm, STORY, **plain)
    assert done.metrics.completion_tokens == chain_done.metrics.completion_tokens == 96
    assert "".join(shortcut) == "".join(chain)
