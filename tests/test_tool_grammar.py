"""Tool-call grammars on the real default model (SmolLM2 135M): with the grammar forced from the first token
the model's output parses, in every call format, into a call whose arguments validate against the tool's
schema; a lazy grammar leaves the text alone until its trigger and constrains what follows."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engine.backends.base import Delta, Finished, Message
from engine.backends.llama_cpp import LlamaCppBackend
from engine.backends.tool_grammar import Grammar, tool_grammar
from engine.config import load_settings
from engine.errors import InvalidInput
from engine.params import parse_params
from engine.tools.formats import FORMATS, detect_call_format
from engine.tools.parse import parse_text
from engine.tools.prompt import tools_prompt
from tests.helpers import GREEDY

pytestmark = pytest.mark.slow

# The schemas exactly as the MCP servers in tests/ list them (pydantic-made, with titles and defaults).
ADD = {
    "type": "object",
    "properties": {"a": {"title": "A", "type": "integer"}, "b": {"title": "B", "type": "integer"}},
    "required": ["a", "b"],
    "title": "addArguments",
}
ECHO = {
    "type": "object",
    "properties": {"text": {"title": "Text", "type": "string", "maxLength": 60}},
    "required": ["text"],
    "title": "echoArguments",
}
TIME = {
    "type": "object",
    "properties": {
        "timezone": {"type": "string", "enum": ["UTC", "Europe/Paris", "Asia/Tokyo"]},
        "format": {"type": "string", "enum": ["iso", "human"]},
        "verbose": {"type": "boolean"},
    },
    "required": ["timezone"],
}
TOOLS = [
    {"type": "function", "function": {"name": n, "description": d, "parameters": p}}
    for n, d, p in (
        ("add", "Add two integers.", ADD),
        ("echo", "Say the text back.", ECHO),
        ("get_current_time", "The time now in a timezone.", TIME),
    )
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


@pytest.fixture(scope="module")
def llm(model_path: Path) -> Iterator[LlamaCppBackend]:
    settings, _ = load_settings(
        environ={},
        overrides={"model": {"path": str(model_path), "n_ctx": 2048, "n_threads": 1, "parallel": 1}},
    )
    b = LlamaCppBackend(settings.model, model_path)
    try:
        yield b
    finally:
        b.close()


def generate(
    b: LlamaCppBackend, messages: list[Message], grammar: Grammar | None, max_tokens: int = 96
) -> str:
    params = parse_params({**GREEDY, "max_tokens": max_tokens})
    out, done = [], None
    for event in b.stream(messages, params, threading.Event(), grammar=grammar):
        if isinstance(event, Delta):
            out.append(event.text)
        elif isinstance(event, Finished):
            done = event
    assert done is not None
    return "".join(out)


def ask(question: str, fmt_name: str) -> list[Message]:
    system = "You are a helpful assistant.\n\n" + tools_prompt(TOOLS, FORMATS[fmt_name])
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def test_the_default_model_gets_the_json_format(llm: LlamaCppBackend) -> None:
    assert llm.tool_format.name == "json"  # SmolLM2's ChatML template shows no tool format
    info = llm.model_info()
    assert info["tool_call_format"] == "json" and info["template_renders_tools"] is False


@pytest.mark.parametrize("fmt_name", ["hermes", "llama3", "mistral", "harmony", "json"])
@pytest.mark.parametrize("choice", ["auto", "required", {"type": "function", "function": {"name": "echo"}}])
def test_llama_cpp_accepts_every_grammar(llm: LlamaCppBackend, fmt_name: str, choice: Any) -> None:
    for fmt in (FORMATS[fmt_name], detect_call_format("[TOOL_CALLS] [ARGS]")):
        g = tool_grammar(TOOLS, fmt, choice=choice, parallel=True)
        assert g is not None and g.lazy == (choice == "auto")
        llm._llama_cpp.llama_sampler_free(llm._grammar_sampler(g.gbnf, g.triggers))


@pytest.mark.parametrize(
    "fmt_name,choice,question",
    [
        ("json", "add", "What is 2 plus 3?"),
        ("json", "required", "What time is it in Tokyo?"),
        ("hermes", "echo", "Say hello back to me."),
        ("llama3", "add", "Add 40 and 2."),
        ("mistral", "get_current_time", "What time is it in Paris?"),
        ("harmony", "add", "What is 7 plus 8?"),
    ],
)
def test_a_forced_call_parses_and_validates_against_the_schema(
    llm: LlamaCppBackend, fmt_name: str, choice: str, question: str
) -> None:
    fmt = FORMATS[fmt_name]
    g = tool_grammar(TOOLS, fmt, choice=choice)
    assert g is not None and not g.lazy
    raw = generate(llm, ask(question, fmt_name), g)
    text, calls = parse_text(fmt, raw)
    assert text == "" and len(calls) == 1, raw
    call = calls[0]
    assert call.error is None, (call.error, raw)
    if choice != "required":
        assert call.name == choice
    jsonschema.validate(call.arguments, SCHEMAS[call.name])


def test_a_lazy_grammar_waits_for_its_trigger(llm: LlamaCppBackend) -> None:
    messages: list[Message] = [{"role": "user", "content": "Tell me about the sea."}]
    free = generate(llm, messages, None, max_tokens=24)
    word = next(w for w in re.findall(r"[A-Za-z]{4,}", free))  # a word the model writes anyway
    before = free[: free.index(word)]
    g = tool_grammar(TOOLS, FORMATS["json"], choice="auto")
    assert g is not None and g.lazy
    # Same tool grammar, opened by that word instead of the json format's "{" at the start of the reply.
    gbnf = g.gbnf.replace("root ::= (tool-call)", f'root ::= "{word}" " " (tool-call)')
    out = generate(llm, messages, Grammar(gbnf, (f"({word})",)))
    assert out.startswith(before + word), (free, out)  # untouched until the trigger
    text, calls = parse_text(FORMATS["json"], out[len(before) + len(word) :])
    assert text == "" and len(calls) == 1 and calls[0].error is None, out
    jsonschema.validate(calls[0].arguments, SCHEMAS[calls[0].name])


def test_tool_choice_must_name_a_tool_and_none_means_no_grammar(llm: LlamaCppBackend) -> None:
    assert tool_grammar(TOOLS, FORMATS["json"], choice="none") is None
    assert tool_grammar([], FORMATS["json"]) is None
    with pytest.raises(InvalidInput, match="'nope', which is not one of the tools"):
        tool_grammar(TOOLS, FORMATS["json"], choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(InvalidInput, match="cannot be used together"):
        g = tool_grammar(TOOLS, FORMATS["json"], choice="required")
        params = parse_params({"grammar": 'root ::= "x"'})
        list(llm.stream([{"role": "user", "content": "Hi"}], params, threading.Event(), grammar=g))


def test_an_unreadable_schema_falls_back_to_any_object(llm: LlamaCppBackend) -> None:
    odd = [
        {
            "type": "function",
            "function": {"name": "odd", "parameters": {"$ref": "https://example.com/s.json"}},
        }
    ]
    g = tool_grammar(odd, FORMATS["json"], choice="required")
    assert g is not None
    llm.check_grammar(g.gbnf)


def test_stream_with_tools_shows_them_and_a_named_choice_gives_a_valid_call(llm: LlamaCppBackend) -> None:
    msgs: list[Message] = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 2 plus 3?"},
    ]
    prompt = llm._render_text(msgs, "auto", TOOLS)[0]
    assert (
        "You are a helpful assistant.\n\nYou can call these tools:\n- add(a: integer, b: integer)" in prompt
    )
    params = parse_params({**GREEDY, "max_tokens": 64})

    def reply(**kw: Any) -> str:
        events = llm.stream(msgs, params, threading.Event(), tools=TOOLS, **kw)
        return "".join(e.text for e in events if isinstance(e, Delta))

    text, calls = parse_text(
        llm.tool_format, reply(tool_choice={"type": "function", "function": {"name": "add"}})
    )
    assert text == "" and [(c.name, c.error) for c in calls] == [("add", None)], calls
    jsonschema.validate(calls[0].arguments, ADD)
    text, calls = parse_text(llm.tool_format, reply(tool_choice="auto"))  # the model may answer or call
    assert text or calls
    for call in calls:
        assert call.error is None
        jsonschema.validate(call.arguments, SCHEMAS[call.name])


def test_a_template_that_reads_tools_gets_them(llm: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = (
        "{% if tools %}TOOLS:{% for t in tools %} {{ t.function.name }}{% endfor %}\n{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "<|im_start|>assistant\n"
    )
    monkeypatch.setattr(llm, "_formatter", Jinja2ChatFormatter(template=template, eos_token="", bos_token=""))
    monkeypatch.setattr(llm, "renders_tools", True)
    prompt = llm._render_text([{"role": "user", "content": "Hi"}], "auto", TOOLS)[0]
    assert (
        prompt.startswith("TOOLS: add echo get_current_time<|im_start|>user")
        and "You can call these tools" not in prompt
    )
