"""The streaming reasoning splitter: recorded replies of each format, cut into chunks at every boundary."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.reasoning import (
    FORMATS,
    ReasoningSplitter,
    detect_format,
    split_text,
    starts_in_thought,
    template_switch,
)

# (format, starts inside the thought, raw reply, reasoning, answer, unclosed)
TRANSCRIPTS = [
    (
        "think",
        False,
        "<think>\nThe user greets me.\n</think>\n\nHello! How can I help?",
        "The user greets me.\n",
        "Hello! How can I help?",
        False,
    ),
    (
        "think",
        True,
        "\nOkay, 2+2 is 4.\n</think>\n\nThe answer is **4**.",
        "Okay, 2+2 is 4.\n",
        "The answer is **4**.",
        False,
    ),
    ("think", False, "<think>\n\n</think>\n\nNo thought here.", "", "No thought here.", False),
    (
        "think",
        False,
        "Plain answer that mentions <think> tags.",
        "",
        "Plain answer that mentions <think> tags.",
        False,
    ),
    ("think", True, "Still thinking when the tokens ran o", "Still thinking when the tokens ran o", "", True),
    ("bracket", False, "[THINK]Compute 3*3 = 9.[/THINK]It is 9.", "Compute 3*3 = 9.", "It is 9.", False),
    (
        "seed",
        False,
        "<seed:think>Check the date.</seed:think>Today is Monday.",
        "Check the date.",
        "Today is Monday.",
        False,
    ),
    (
        "harmony",
        False,
        "<|channel|>analysis<|message|>User asks for a joke.<|end|><|start|>assistant<|channel|>final"
        "<|message|>Why did the chicken cross the road?",
        "User asks for a joke.",
        "Why did the chicken cross the road?",
        False,
    ),
    ("harmony", False, "<|channel|>analysis<|message|>Never finished", "Never finished", "", True),
    (  # a tool call after the thought stays in the answer, header and all, for the tool-call parser
        "harmony",
        False,
        "<|channel|>analysis<|message|>Need the time.<|end|><|start|>assistant<|channel|>commentary "
        'to=functions.get_time <|constrain|>json<|message|>{"tz": "UTC"}<|call|>',
        "Need the time.",
        '<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{"tz": "UTC"}<|call|>',
        False,
    ),
]


def _run(fmt: str, in_thought: bool, chunks: list[str]) -> tuple[str, str, bool]:
    s = ReasoningSplitter(FORMATS[fmt], in_thought=in_thought)
    parts = [p for c in chunks for p in s.feed(c)] + s.flush()
    reasoning = "".join(t for p, t in parts if p == "reasoning")
    answer = "".join(t for p, t in parts if p == "answer")
    return reasoning, answer, s.unclosed


@pytest.mark.parametrize("fmt,in_thought,raw,reasoning,answer,unclosed", TRANSCRIPTS)
def test_whole_and_every_single_cut(fmt, in_thought, raw, reasoning, answer, unclosed):
    assert _run(fmt, in_thought, [raw]) == (reasoning, answer, unclosed)
    for i in range(len(raw) + 1):
        assert _run(fmt, in_thought, [raw[:i], raw[i:]]) == (reasoning, answer, unclosed), i
    assert _run(fmt, in_thought, list(raw)) == (reasoning, answer, unclosed)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_chunking(data):
    fmt, in_thought, raw, reasoning, answer, unclosed = data.draw(st.sampled_from(TRANSCRIPTS))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert _run(fmt, in_thought, chunks) == (reasoning, answer, unclosed)


def test_detect_from_template_and_generation_prompt():
    assert detect_format("{{ '<|start|>assistant<|channel|>final' }}").name == "harmony"
    assert detect_format("[SYSTEM_PROMPT][THINK]").name == "bracket"
    assert detect_format("<seed:think>").name == "seed"
    assert detect_format("{% if add_generation_prompt %}<think>\n{% endif %}").name == "think"
    assert detect_format(None).name == "think"  # a model may still open <think> itself
    assert detect_format("<|channel|>", "seed").name == "seed"  # the config override wins
    assert detect_format("<think>", "none") is None
    assert starts_in_thought(FORMATS["think"], "<|Assistant|><think>\n")
    assert not starts_in_thought(FORMATS["think"], "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert template_switch("{%- if enable_thinking is defined and enable_thinking is false %}")
    assert not template_switch("{{ messages }}")


def test_split_text():
    assert split_text(FORMATS["think"], "<think>a</think>b") == ("a", "b")
    assert split_text(None, "<think>a</think>b") == ("", "<think>a</think>b")


def test_a_harmony_call_after_the_thought_reaches_the_tool_parser():
    from engine.tools.formats import FORMATS as CALL_FORMATS
    from engine.tools.parse import ToolCallParser

    raw = TRANSCRIPTS[-1][2]
    splitter, parser = ReasoningSplitter(FORMATS["harmony"]), ToolCallParser(CALL_FORMATS["harmony"])
    pieces = []
    for ch in raw:  # token by token, as the decode loop feeds them
        pieces += [x for part, text in splitter.feed(ch) if part == "answer" for x in parser.feed(text)]
    pieces += [x for part, text in splitter.flush() if part == "answer" for x in parser.feed(text)]
    pieces += parser.flush()
    calls = [p for p in pieces if not isinstance(p, str)]
    assert [(c.name, c.arguments) for c in calls] == [("get_time", {"tz": "UTC"})]
    assert "".join(p for p in pieces if isinstance(p, str)).strip() == ""


def test_an_answer_that_continues_a_prefix_keeps_its_leading_space():
    """A reply prefix ("Ahoy,") that the model continues: " matey" is not stripped to "matey", and a tag
    written after it is quoted text, not a new thought."""
    plain = ReasoningSplitter(FORMATS["think"])
    assert plain.feed(" matey") == [("answer", "matey")]  # a reply's own start is stripped
    s = ReasoningSplitter(FORMATS["think"])
    s.answered_with("Ahoy,")
    assert s.feed(" matey <think>x</think>") + s.flush() == [("answer", " matey <think>x</think>")]
    closed = ReasoningSplitter(FORMATS["think"], in_thought=True)
    assert closed.feed("hmm</think>\n\n") == [("reasoning", "hmm")]
    closed.answered_with("Ahoy,")  # the decode loop forced the prefix after the thought
    assert closed.feed(" matey") == [("answer", " matey")]
