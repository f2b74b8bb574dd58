"""The tools described in a system message, for chat templates that cannot render a `tools` list
(`formats.template_renders_tools` is False, as with SmolLM2's ChatML). The text shows the exact call
syntax of the format the parser and the grammar expect."""

from __future__ import annotations

import json
from typing import Any

from .formats import CallFormat

_EXAMPLES = {
    "hermes": '<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>',
    "llama3": '{{"name": "{name}", "parameters": {args}}}',
    "mistral": '[TOOL_CALLS][{{"name": "{name}", "arguments": {args}}}]',
    "harmony": "<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>{args}",
    "json": '{{"name": "{name}", "arguments": {args}}}',
}


def tools_prompt(tools: list[dict[str, Any]], fmt: CallFormat) -> str:
    """A system message section; `tools` in OpenAI's shape ({"type": "function", "function": {...}})."""
    lines = ["You can call these tools:"]
    for spec in tools:
        fn = spec.get("function", spec)
        about = f": {fn['description']}" if fn.get("description") else ""
        lines.append(f"- {fn['name']}({_signature(fn.get('parameters') or {})}){about}")
    first: dict[str, Any] = tools[0].get("function", tools[0]) if tools else {"name": "tool"}
    example = _EXAMPLES[fmt.name]
    if fmt.name == "mistral" and fmt.args_style:
        example = "[TOOL_CALLS]{name}[ARGS]{args}"
    sample = example.format(name=first["name"], args=json.dumps(_sample_args(first.get("parameters") or {})))
    where = "as the whole reply" if fmt.at_start else "on its own"
    lines += [
        "",
        f"To call a tool, write the call {where}, exactly like this:",
        sample,
        "The result comes back in the next message; then answer the user with it. "
        "If no tool fits, answer directly.",
    ]
    return "\n".join(lines)


def _signature(schema: dict[str, Any]) -> str:
    props: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    parts = []
    for name, prop in props.items():
        kind = prop.get("type", "any") if isinstance(prop, dict) else "any"
        kind = kind if isinstance(kind, str) else "|".join(str(k) for k in kind)
        parts.append(f"{name}: {kind}" + ("" if name in required else "?"))
    return ", ".join(parts)


def _sample_args(schema: dict[str, Any]) -> dict[str, Any]:
    samples: dict[str, Any] = {"string": "...", "integer": 1, "number": 1.5, "boolean": True}
    samples |= {"array": [], "object": {}}
    props: dict[str, Any] = schema.get("properties") or {}
    wanted = set(schema.get("required") or props)
    return {
        name: samples.get(str(prop.get("type")) if isinstance(prop, dict) else "", "...")
        for name, prop in props.items()
        if name in wanted
    }


def with_tools(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], fmt: CallFormat, *, template_renders: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(messages, extra template variables) that show `tools` to the model: the template's own `tools`
    variable when it reads one, else the tools prompt added to the system message (one made if none)."""
    if not tools:
        return messages, {}
    if template_renders:
        return messages, {"tools": tools}
    text = tools_prompt(tools, fmt)
    if messages and messages[0].get("role") == "system":
        first = {**messages[0], "content": f"{messages[0].get('content') or ''}\n\n{text}".lstrip()}
        return [first, *messages[1:]], {}
    return [{"role": "system", "content": text}, *messages], {}


def format_call(name: str, arguments: dict[str, Any], fmt: CallFormat) -> str:
    """A call written as the model writes it in `fmt`: for a template that cannot render `tool_calls`, an
    earlier call goes back into the history as this text (engine/tools/parse.py reads it back)."""
    args = json.dumps(arguments, ensure_ascii=False)
    if fmt.name == "mistral" and fmt.args_style:
        return f"[TOOL_CALLS]{name}[ARGS]{args}"
    template = _EXAMPLES[fmt.name]
    if fmt.name == "harmony":
        template += "<|call|>"
    return template.format(name=name, args=args)


def history_for_template(
    messages: list[dict[str, Any]], fmt: CallFormat, *, template_renders: bool
) -> list[dict[str, Any]]:
    """Earlier tool calls and results in the shape the chat template takes.

    A template that renders tools gets OpenAI's messages with each call's arguments as an object (as
    Hugging Face templates expect). Any other template gets plain turns: a call is written into the
    assistant's text as the model writes it in `fmt`, and results come back as a user message (the only
    shape a strict template such as Gemma's accepts), consecutive user messages joined."""
    if not any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
        return messages
    if template_renders:
        return [_with_object_args(m) if m.get("tool_calls") else m for m in messages]
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.get("role") == "tool":
            name = m.get("name") or "the tool"
            msg = {"role": "user", "content": f"Result of {name}:\n{m.get('content') or ''}"}
        elif m.get("tool_calls"):
            calls = [format_call(*_name_args(c), fmt) for c in m["tool_calls"]]
            msg = {"role": "assistant", "content": "\n".join([m.get("content") or "", *calls]).strip()}
        else:
            msg = {"role": m["role"], "content": m.get("content") or ""}
        if out and msg["role"] == "user" and out[-1]["role"] == "user":
            out[-1] = {"role": "user", "content": f"{out[-1]['content']}\n\n{msg['content']}"}
        else:
            out.append(msg)
    return out


def _name_args(call: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    fn = call.get("function") or {}
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            args = {}
    return str(fn.get("name") or ""), args if isinstance(args, dict) else {}


def _with_object_args(m: dict[str, Any]) -> dict[str, Any]:
    calls = []
    for call in m["tool_calls"]:
        name, args = _name_args(call)
        calls.append({**call, "function": {"name": name, "arguments": args}})
    return {**m, "tool_calls": calls}
