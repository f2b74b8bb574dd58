"""Tool-call parsing: recorded replies in each format, cut into chunks at every boundary (and at random ones
with hypothesis), give the same text and calls; format detection from real chat template snippets."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.tools.formats import FORMATS, detect_call_format, template_renders_tools
from engine.tools.parse import ToolCall, ToolCallParser, new_call_id, parse_text
from engine.tools.prompt import format_call, with_tools

# (format, raw reply, answer text, [(name, arguments) or (name, "error")])
Calls = list[tuple[str, Any]]
TRANSCRIPTS: list[tuple[str, str, str, Calls]] = [
    (
        "hermes",
        'Let me add those.\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>',
        "Let me add those.",
        [("add", {"a": 2, "b": 3})],
    ),
    (
        "hermes",
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 1}}\n</tool_call>\n<tool_call>\n'
        '{"name": "echo", "arguments": "{\\"text\\": \\"a </tool_call> in a string\\"}"}\n</tool_call>',
        "",
        [("add", {"a": 1, "b": 1}), ("echo", {"text": "a </tool_call> in a string"})],
    ),
    (
        "hermes",
        "No tools needed: 2 < 3 and <tool is not a tag.",
        "No tools needed: 2 < 3 and <tool is not a tag.",
        [],
    ),
    ("hermes", '<tool_call>{"name": "add", "arguments": {"a": 1', "", [("add", "error")]),
    ("hermes", '<tool_call>{"name": "add", "arguments": {"a": 1}}', "", [("add", {"a": 1})]),  # EOG, no close
    ("hermes", "<tool_call>{'name': 'add'}</tool_call> then text", "then text", [("", "error")]),
    (
        "llama3",
        '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}',
        "",
        [("get_weather", {"city": "Paris", "unit": "celsius"})],
    ),
    ("llama3", '<|python_tag|>{"name": "add", "parameters": {"a": 1}}', "", [("add", {"a": 1})]),
    (
        "llama3",
        '{"name": "add", "parameters": {"a": 1}}; {"name": "echo", "parameters": {"text": "{x}"}}',
        "",
        [("add", {"a": 1}), ("echo", {"text": "{x}"})],
    ),
    ("llama3", "The weather in Paris is mild.", "The weather in Paris is mild.", []),
    (
        "mistral",
        '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}}, {"name": "echo", "arguments": {"text": "]"}}]',
        "",
        [("add", {"a": 1}), ("echo", {"text": "]"})],
    ),
    (
        "mistral",
        'Checking.[TOOL_CALLS]add[ARGS]{"a": 1, "b": 2}'
        '[TOOL_CALLS]echo[CALL_ID]a1B2c3D4e[ARGS]{"text": "hi"}',
        "Checking.",
        [("add", {"a": 1, "b": 2}), ("echo", {"text": "hi"})],
    ),
    ("mistral", "[TOOL_CALLS]add{}", "", [("", "error")]),
    (
        "harmony",
        "<|channel|>analysis<|message|>Need to add.<|end|><|start|>assistant<|channel|>commentary "
        'to=functions.add <|constrain|>json<|message|>{"a": 4, "b": 5}<|call|>',
        "<|channel|>analysis<|message|>Need to add.<|end|>",
        [("add", {"a": 4, "b": 5})],
    ),
    (
        "harmony",
        '<|start|>assistant to=functions.echo<|channel|>commentary json<|message|>{"text": "x"}',
        "",
        [("echo", {"text": "x"})],
    ),
    (
        "harmony",
        ' to=functions.add <|constrain|>json<|message|>{"a": 1}',  # after a reasoning splitter took the start
        "",
        [("add", {"a": 1})],
    ),
    (
        "harmony",
        "<|channel|>analysis<|message|>Hm.<|end|><|start|>assistant<|channel|>final<|message|>Hello!",
        "<|channel|>analysis<|message|>Hm.<|end|><|start|>assistant<|channel|>final<|message|>Hello!",
        [],
    ),
    ("json", '  {"name": "add", "arguments": {"a": 1, "b": 2}}', "", [("add", {"a": 1, "b": 2})]),
    (
        "json",
        '```json\n{"name": "echo", "arguments": {"text": "hi"}}\n```\nDone.',
        "Done.",
        [("echo", {"text": "hi"})],
    ),
    (
        "json",
        '[{"name": "add", "arguments": {}}, {"function": {"name": "echo", "arguments": "{}"}}]',
        "",
        [("add", {}), ("echo", {})],
    ),
    ("json", '{"tool_calls": [{"name": "add", "parameters": {"a": 1}}]}', "", [("add", {"a": 1})]),
    ("json", '{"answer": 42} is the reply', '{"answer": 42} is the reply', []),
    ("json", "{ is a brace", "{ is a brace", []),
    ("json", "[1] First point", "[1] First point", []),
    ("json", "```python\nprint(1)\n```", "```python\nprint(1)\n```", []),
    ("json", 'Hello {"name": "add"}', 'Hello {"name": "add"}', []),  # a call must open the reply
    ("json", '{"name": "add", "arguments": {"a": ', "", [("add", "error")]),
    ("json", '{"name": "add", "arguments": [1, 2]}', "", [("add", "error")]),
]


def _run(fmt: str, chunks: list[str]) -> tuple[str, Calls]:
    p = ToolCallParser(FORMATS[fmt])
    pieces = [x for c in chunks for x in p.feed(c)] + p.flush()
    text = "".join(x for x in pieces if isinstance(x, str))
    calls = [(c.name, "error" if c.error else c.arguments) for c in pieces if isinstance(c, ToolCall)]
    for c in pieces:
        if isinstance(c, ToolCall):
            assert c.raw, c
            assert not c.error or c.arguments == {}
    return text, calls


@pytest.mark.parametrize("fmt,raw,text,calls", TRANSCRIPTS)
def test_whole_and_every_single_cut(fmt: str, raw: str, text: str, calls: Calls) -> None:
    assert _run(fmt, [raw]) == (text, calls)
    for i in range(len(raw) + 1):
        assert _run(fmt, [raw[:i], raw[i:]]) == (text, calls), i


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_chunking_gives_the_same_result(data: st.DataObject) -> None:
    fmt, raw, text, calls = data.draw(st.sampled_from(TRANSCRIPTS))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert _run(fmt, chunks) == (text, calls)


@settings(max_examples=300, deadline=None)
@given(fmt=st.sampled_from(sorted(FORMATS)), text=st.text(max_size=200), cut=st.integers(0, 200))
def test_any_text_never_raises_and_loses_nothing_but_call_syntax(fmt: str, text: str, cut: int) -> None:
    p = ToolCallParser(FORMATS[fmt])
    pieces = p.feed(text[:cut]) + p.feed(text[cut:]) + p.flush()
    out = "".join(x for x in pieces if isinstance(x, str))
    if not any(isinstance(x, ToolCall) for x in pieces):  # no call: the text comes back (whitespace aside)
        assert "".join(out.split()) == "".join(text.split())


@given(
    name=st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True),
    args=st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=20), st.booleans())),
)
def test_generated_calls_round_trip_in_every_format(name: str, args: dict[str, Any]) -> None:
    import json

    payload = json.dumps(args)
    replies = {
        "hermes": f'<tool_call>{{"name": "{name}", "arguments": {payload}}}</tool_call>',
        "llama3": f'{{"name": "{name}", "parameters": {payload}}}',
        "mistral": f"[TOOL_CALLS]{name}[ARGS]{payload}",
        "harmony": f"<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>{payload}<|call|>",
        "json": f'{{"name": "{name}", "arguments": {payload}}}',
    }
    for fmt, reply in replies.items():
        text, calls = parse_text(FORMATS[fmt], reply)
        assert text == "" and [(c.name, c.arguments, c.error) for c in calls] == [(name, args, None)], fmt


def test_call_ids_are_nine_letters_or_digits_and_openai_shaped() -> None:
    ids = {new_call_id() for _ in range(200)}
    assert len(ids) == 200 and all(len(i) == 9 and i.isalnum() for i in ids)
    call = ToolCall("add", {"a": 1})
    assert call.to_openai() == {
        "id": call.id,
        "type": "function",
        "function": {"name": "add", "arguments": '{"a": 1}'},
    }


QWEN = "{%- if tools %}<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools> <tool_call>"
LLAMA31 = "{%- if not tools is defined %}<|start_header_id|>{{- '\"parameters\": ' }}<|python_tag|><|eom_id|>"
MISTRAL_V7 = "{%- if tools is not none %}[AVAILABLE_TOOLS]{{ tools|tojson }}[/AVAILABLE_TOOLS][TOOL_CALLS]"
MISTRAL_V11 = MISTRAL_V7 + "{{ tool_call.function.name }}[ARGS]{{ arguments }}"
GPT_OSS = "{%- if tools -%}namespace functions<|start|>assistant<|channel|>commentary to=functions."
CHATML = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>"


@pytest.mark.parametrize(
    "template,name,renders",
    [
        (QWEN, "hermes", True),
        (LLAMA31, "llama3", True),
        (MISTRAL_V7, "mistral", True),
        (GPT_OSS, "harmony", True),
        (CHATML, "json", False),
        (None, "json", False),
    ],
)
def test_the_format_comes_from_the_template(template: str | None, name: str, renders: bool) -> None:
    assert detect_call_format(template).name == name
    assert template_renders_tools(template) is renders


def test_mistral_args_style_and_the_override() -> None:
    assert detect_call_format(MISTRAL_V11).args_style and not detect_call_format(MISTRAL_V7).args_style
    assert detect_call_format(CHATML, "hermes").name == "hermes"
    with pytest.raises(ValueError, match="unknown tool call format 'xml'"):
        detect_call_format(CHATML, "xml")


@given(
    fmt=st.sampled_from([*FORMATS.values(), detect_call_format(MISTRAL_V11)]),
    name=st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True),
    args=st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=20), st.none())),
)
def test_a_formatted_call_parses_back(fmt: Any, name: str, args: dict[str, Any]) -> None:
    text, calls = parse_text(fmt, format_call(name, args, fmt))
    assert text == "" and [(c.name, c.arguments, c.error) for c in calls] == [(name, args, None)]


def test_tools_reach_the_template_or_the_system_prompt() -> None:
    tools = [{"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {}}}]
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    assert with_tools(msgs, tools, FORMATS["hermes"], template_renders=True) == (msgs, {"tools": tools})
    shown, extra = with_tools(msgs, tools, FORMATS["json"], template_renders=False)
    assert extra == {} and shown[1:] == msgs[1:] and shown[0]["role"] == "system"
    assert shown[0]["content"].startswith("Be brief.\n\nYou can call these tools:\n- add(): Add.")
    alone, _ = with_tools(msgs[1:], tools, FORMATS["json"], template_renders=False)
    assert alone[0]["role"] == "system" and alone[1:] == msgs[1:]
    assert with_tools(msgs, [], FORMATS["json"], template_renders=False) == (msgs, {})
