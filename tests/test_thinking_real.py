"""Thinking on the real decode path: copies of the default GGUF with thinking chat templates (written into
tmp folders with the gguf package's gguf_new_metadata), run through the engine and its worker process."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.backends.base import Delta, Finished, Message, Reasoning
from engine.backends.llama_cpp import LlamaCppBackend
from engine.chat import Engine
from engine.config import load_settings
from engine.params import SamplingParams
from engine.runtime import Runtime, build_backend
from tests.helpers import GREEDY

pytestmark = pytest.mark.slow

TURNS = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
R1_TEMPLATE = TURNS + "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
QWEN3_TEMPLATE = TURNS + (
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)
ASK: list[Message] = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def with_template(model_path: Path, folder: Path, name: str, template: str) -> Path:
    out = folder / name
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(model_path), str(out)]
        + ["--chat-template", template, "--force"],
        check=True,
        capture_output=True,
    )
    return out


def make_engine(path: Path, data: Path) -> Engine:
    model = {"path": str(path), "n_ctx": 1024, "n_threads": 1, "parallel": 1}
    settings, _ = load_settings(environ={}, overrides={"model": model, "data_dir": str(data)})
    return Engine(build_backend(settings))


@pytest.fixture(scope="module")
def r1(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    folder = tmp_path_factory.mktemp("r1")
    eng = make_engine(with_template(model_path, folder, "r1.gguf", R1_TEMPLATE), folder / "data")
    yield eng
    eng.close()


def run(engine: Engine, messages: list[Message], **kw: Any) -> tuple[str, str, Finished]:
    events = list(engine.stream(messages, SamplingParams(**{**GREEDY, "max_tokens": 80, **kw})))
    done = events[-1]
    assert isinstance(done, Finished)
    thought = "".join(e.text for e in events if isinstance(e, Reasoning))
    answer = "".join(e.text for e in events if isinstance(e, Delta))
    return thought, answer, done


def test_format_is_detected(r1: Engine) -> None:
    info = r1.require_backend().model_info()
    assert info["reasoning_format"] == "think" and info["thinking_switch"] is False


def test_budget_closes_the_thought_and_the_answer_follows(r1: Engine) -> None:
    thought, answer, done = run(r1, ASK, thinking_budget=12)
    m = done.metrics
    assert m.reasoning_tokens == 12
    assert thought.rstrip().endswith("Thinking budget reached; answering now.")
    assert "<think>" not in thought + answer and "</think>" not in thought + answer
    assert answer.strip(), "the answer continues after the injected closing tag"
    assert m.reasoning_unclosed is False
    assert m.reasoning_ms is not None and m.answer_ttft_ms is not None and m.ttft_ms is not None
    assert m.answer_ttft_ms >= m.ttft_ms
    assert m.completion_tokens and m.prompt_tokens and m.context_used
    assert m.context_used > m.prompt_tokens + m.completion_tokens  # the injected note and tag fill cells too


def test_no_budget_leaves_an_unclosed_thought_flagged(r1: Engine) -> None:
    thought, answer, done = run(r1, ASK, max_tokens=10)
    assert thought and done.metrics.reasoning_tokens == 10
    assert done.metrics.reasoning_unclosed is True


def test_off_gives_no_reasoning(r1: Engine) -> None:
    thought, answer, done = run(r1, ASK, thinking="off")
    assert thought == "" and answer.strip()
    assert done.metrics.reasoning_tokens == 0


def test_off_reaches_a_template_with_enable_thinking(model_path: Path, tmp_path: Path) -> None:
    eng = make_engine(with_template(model_path, tmp_path, "qwen3.gguf", QWEN3_TEMPLATE), tmp_path / "data")
    try:
        assert eng.require_backend().model_info()["thinking_switch"] is True
        thought, answer, done = run(eng, ASK, thinking="off")
        assert thought == "" and answer.strip() and done.metrics.reasoning_tokens == 0
        thought, _, done = run(eng, ASK, thinking="on", max_tokens=6)
        assert thought and done.metrics.reasoning_tokens == 6
    finally:
        eng.close()


def test_a_model_that_opens_the_tag_itself(model_path: Path, tmp_path: Path) -> None:
    eng = make_engine(model_path, tmp_path / "data")
    grammar = 'root ::= "<think>" [a-z]{3,12} " " [a-z]{3,12} "</think>" [A-Z] [a-z]{3,12} "."'
    try:
        thought, answer, done = run(eng, ASK, grammar=grammar)
        assert thought and " " in thought and "<" not in thought
        assert answer[0].isupper() and answer.endswith(".") and "<" not in answer
        assert done.metrics.reasoning_tokens and not done.metrics.reasoning_unclosed
    finally:
        eng.close()


# --- "start reply with" on a thinking model: the prefix goes after the closed thought -------------------

QWEN3_OWN_OPEN = TURNS + (  # Qwen3's own shape: thinking on leaves the <think> tag to the model
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)
PREFIXED: list[Message] = [*ASK, {"role": "assistant", "content": "Ahoy,"}]
# makes the model close its thought by itself, then write a short answer
CLOSES = 'root ::= [a-z]{3,8} " " [a-z]{3,8} "</think>" " " [a-z]{2,8} " " [a-z]{2,8} "."'


@pytest.fixture(scope="module")
def r1_file(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_template(model_path, tmp_path_factory.mktemp("r1p"), "r1p.gguf", R1_TEMPLATE)


def in_process(path: Path) -> LlamaCppBackend:
    """The backend in this process, so a test can read the tokens its KV cache holds (what the model saw)."""
    settings, _ = load_settings(
        environ={}, overrides={"model": {"path": str(path), "n_ctx": 1024, "n_threads": 1, "parallel": 1}}
    )
    return LlamaCppBackend(settings.model, path)


def seen(llm: LlamaCppBackend) -> str:
    """The text of every token the model has evaluated in its one slot: the prompt, its own tokens, and
    what the decode loop forced."""
    kv = llm._scheduler.slots[0].kv
    return llm.llm.detokenize(kv, special=True).decode("utf-8", "replace")


def split_run(llm: LlamaCppBackend, messages: list[Message], **kw: Any) -> tuple[str, str]:
    params = SamplingParams(**{**GREEDY, "max_tokens": 40, **kw})
    events = list(llm.stream(messages, params, threading.Event()))
    assert isinstance(events[-1], Finished)
    thought = "".join(e.text for e in events if isinstance(e, Reasoning))
    return thought, "".join(e.text for e in events if isinstance(e, Delta))


def after_the_thought(text: str, prefix: str) -> None:
    """`prefix` is what the model saw right after its closed thought, and nowhere before it."""
    head, close, tail = text.rpartition("</think>")
    assert close, text[-300:]
    assert "<think>\n" in head and prefix not in head, head[-200:]
    assert tail.startswith("\n\n" + prefix) and len(tail) > len("\n\n" + prefix), tail[:80]


def test_a_reply_prefix_follows_the_thought_on_an_r1_template(r1_file: Path) -> None:
    """Before: the prefix went straight after the generation prompt's <think>, inside the thought (and the
    splitter then saw no thought at all). Now the decode loop forces it after the closing tag: the one
    the budget injects, or the one the model writes itself."""
    llm = in_process(r1_file)
    try:
        thought, answer = split_run(llm, PREFIXED, thinking_budget=12)
        after_the_thought(seen(llm), "Ahoy,")
        assert thought.strip() and "Ahoy" not in thought and answer.strip()
        assert not answer.startswith("Ahoy,")  # the caller shows the prefix; the model continues it
        thought, answer = split_run(llm, PREFIXED, grammar=CLOSES)
        after_the_thought(seen(llm), "Ahoy,")
        assert " " in thought and "<" not in thought + answer
        assert answer.endswith(".") and "Ahoy" not in answer
        _, answer = split_run(llm, PREFIXED, thinking="off")  # no thought: the prompt closes it
        text = seen(llm)
        assert "<think>\n</think>\n\nAhoy," in text and answer.strip()
    finally:
        llm.close()


def test_a_qwen3_template_with_a_prefix_thinks_first(model_path: Path, tmp_path: Path) -> None:
    llm = in_process(with_template(model_path, tmp_path, "q3.gguf", QWEN3_OWN_OPEN))
    try:
        thought, answer = split_run(llm, PREFIXED, thinking_budget=8)
        text = seen(llm)
        assert "<|im_start|>assistant\n<think>\n" in text  # opened for the model, so the prefix follows it
        after_the_thought(text, "Ahoy,")
        assert thought.strip() and answer.strip()
        split_run(llm, PREFIXED, thinking="off")  # the template closes an empty thought; the prefix follows
        assert "<|im_start|>assistant\n<think>\n\n</think>\n\nAhoy," in seen(llm)
    finally:
        llm.close()


@pytest.fixture(scope="module")
def r1_runtime(r1_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    settings, _ = load_settings(
        environ={},
        overrides={
            "model": {"path": str(r1_file), "n_ctx": 1024, "n_threads": 1, "parallel": 1},
            "data_dir": str(tmp_path_factory.mktemp("r1data")),
        },
    )
    rt = Runtime(settings)
    yield rt
    rt.close()


def test_the_reply_starts_with_the_prefix_and_the_thought_stays_apart(r1_runtime: Runtime) -> None:
    params = {**GREEDY, "max_tokens": 40, "thinking_budget": 12}
    turn = r1_runtime.turn(ASK, session="new", params=params, options={"reply_prefix": "Ahoy,"})
    text = turn.text()
    assert text.startswith("Ahoy,") and text[len("Ahoy,") :].strip()
    assert turn.reasoning.strip() and "Ahoy" not in turn.reasoning
    # the thought and its forced close stay out of the answer; a tag the model writes later in the answer
    # (greedy SmolLM2 does with flash attention: "...waters.\n<think>") is the model's own text
    assert "</think>" not in text and "Thinking budget reached" not in text
    assert turn.reasoning[:20] not in text
    assert turn.session_id is not None
    saved = r1_runtime.sessions.get(turn.session_id).messages[-1]
    assert saved.content == text and saved.reasoning == turn.reasoning
