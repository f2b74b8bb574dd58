"""Thinking on the real decode path: copies of the default GGUF with thinking chat templates (written into
tmp folders with the gguf package's gguf_new_metadata), run through the engine and its worker process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.backends.base import Delta, Finished, Message, Reasoning
from engine.chat import Engine
from engine.config import load_settings
from engine.params import SamplingParams
from engine.runtime import build_backend
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


def make_engine(path: Path) -> Engine:
    settings, _ = load_settings(
        environ={}, overrides={"model": {"path": str(path), "n_ctx": 1024, "n_threads": 1, "parallel": 1}}
    )
    return Engine(build_backend(settings))


@pytest.fixture(scope="module")
def r1(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    eng = make_engine(with_template(model_path, tmp_path_factory.mktemp("r1"), "r1.gguf", R1_TEMPLATE))
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
    eng = make_engine(with_template(model_path, tmp_path, "qwen3.gguf", QWEN3_TEMPLATE))
    try:
        assert eng.require_backend().model_info()["thinking_switch"] is True
        thought, answer, done = run(eng, ASK, thinking="off")
        assert thought == "" and answer.strip() and done.metrics.reasoning_tokens == 0
        thought, _, done = run(eng, ASK, thinking="on", max_tokens=6)
        assert thought and done.metrics.reasoning_tokens == 6
    finally:
        eng.close()


def test_a_model_that_opens_the_tag_itself(model_path: Path) -> None:
    eng = make_engine(model_path)
    grammar = 'root ::= "<think>" [a-z]{3,12} " " [a-z]{3,12} "</think>" [A-Z] [a-z]{3,12} "."'
    try:
        thought, answer, done = run(eng, ASK, grammar=grammar)
        assert thought and " " in thought and "<" not in thought
        assert answer[0].isupper() and answer.endswith(".") and "<" not in answer
        assert done.metrics.reasoning_tokens and not done.metrics.reasoning_unclosed
    finally:
        eng.close()
