"""A GBNF grammar for a model's tool calls, built from each tool's JSON schema, in the model's call format.

    grammar = tool_grammar(tools, detect_call_format(template), choice="auto")
    backend.stream(messages, params, cancel, grammar=grammar)

`choice` is OpenAI's `tool_choice`:
- "auto": a lazy grammar. The model writes freely until the call opens (the format's trigger pattern,
  e.g. `<tool_call>`); from there on it can only write a call to one of the tools whose arguments fit
  that tool's schema. llama.cpp's `llama_sampler_init_grammar_lazy_patterns` does the waiting.
- "required": a call to any of the tools, from the first token.
- {"type": "function", "function": {"name": X}} (or just the name): a call to X, from the first token.
- "none": no grammar.

Each schema becomes GBNF through llama-cpp-python's converter (a port of llama.cpp's
json_schema_to_grammar.py); this module lives under engine/backends because only the model worker may
import llama_cpp. A schema the converter cannot read falls back to "any JSON object" for that tool.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput
from ..tools.formats import CallFormat

log = logging.getLogger("engine.tool_grammar")

Choice = str | dict[str, Any]


@dataclass(frozen=True)
class Grammar:
    """GBNF text (root rule `root`) and, for a lazy grammar, the patterns that switch it on."""

    gbnf: str
    triggers: tuple[str, ...] = ()

    @property
    def lazy(self) -> bool:
        return bool(self.triggers)


def tool_grammar(
    tools: list[dict[str, Any]], fmt: CallFormat, *, choice: Choice = "auto", parallel: bool = False
) -> Grammar | None:
    """The grammar for calls to `tools` (OpenAI's shape: {"type": "function", "function": {...}})."""
    chosen = _chosen(tools, choice)
    if not chosen:
        return None
    from llama_cpp.llama_grammar import SchemaConverter

    conv = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    calls = [f"tool-call-{i} ::= {_call_body(conv, i, fn, fmt)}" for i, fn in enumerate(chosen)]
    rules = [*calls, f"tool-call ::= {' | '.join(f'tool-call-{i}' for i in range(len(chosen)))}"]
    rules.append(f"root ::= {_root(fmt, parallel)}")
    gbnf = conv.format_grammar() + "\n" + "\n".join(rules) + "\n"
    triggers = (fmt.trigger,) if choice == "auto" else ()
    for pattern in triggers:
        re.compile(pattern)  # a pattern std::regex rejects would abort the worker: ours are plain
    return Grammar(gbnf, triggers)


def _chosen(tools: list[dict[str, Any]], choice: Choice) -> list[dict[str, Any]]:
    """The function specs a call may name."""
    fns = [t.get("function", t) for t in tools]
    if choice == "none" or not fns:
        return []
    if choice in ("auto", "required"):
        return fns
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else choice
    picked = [fn for fn in fns if fn.get("name") == name]
    if not picked:
        known = ", ".join(str(fn.get("name")) for fn in fns)
        raise InvalidInput(
            f"tool_choice names '{name}', which is not one of the tools ({known}).", field="tool_choice"
        )
    return picked


def _call_body(conv: Any, i: int, fn: dict[str, Any], fmt: CallFormat) -> str:
    """The rule for one call to `fn` in `fmt`, its arguments constrained by the schema."""
    name = str(fn["name"])
    args = _args_rule(conv, i, fn.get("parameters") or {"type": "object", "properties": {}})
    if fmt.name == "harmony":
        body = f'{_lit(name)} " <|constrain|>json<|message|>" {args}'
    elif fmt.name == "mistral" and fmt.args_style:
        body = f'{_lit(name)} "[ARGS]" {args}'
    else:
        key = json.dumps(fmt.args_key)
        body = (
            f'"{{" space {_lit(json.dumps("name"))} space ":" space {_lit(json.dumps(name))} space "," space '
        )
        body += f'{_lit(key)} space ":" space {args} "}}" space'
    return body


def _args_rule(conv: Any, i: int, schema: dict[str, Any]) -> str:
    try:
        resolved = conv.resolve_refs(schema, f"tool-{i}")
        return str(conv.visit(resolved, f"tool-args-{i}"))
    except Exception as exc:  # the converter asserts on what it cannot read (a remote $ref, an odd type)
        log.warning("tool %d: schema not usable for a grammar (%s); any JSON object is allowed", i, exc)
        return str(conv.visit({"type": "object"}, f"tool-args-{i}"))


def _root(fmt: CallFormat, parallel: bool) -> str:
    many = "+" if parallel else ""
    if fmt.name == "hermes":
        return f'("<tool_call>\\n" tool-call "</tool_call>" space){many}'
    if fmt.name == "mistral" and fmt.args_style:
        return f'("[TOOL_CALLS]" tool-call){many}'
    if fmt.name == "mistral":
        return (
            '"[TOOL_CALLS][" tool-call ("," space tool-call)* "]"'
            if parallel
            else '"[TOOL_CALLS][" tool-call "]"'
        )
    if fmt.name == "harmony":  # one call per message
        return '"<|channel|>commentary to=functions." tool-call'
    if fmt.name == "llama3":
        return f'"<|python_tag|>"? (tool-call){many}'
    return f"(tool-call){many}"


def _lit(text: str) -> str:
    """A GBNF string literal that matches `text` exactly."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'
