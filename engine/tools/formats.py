"""How models write a tool call, and which way a given model does, read from its chat template.

- `hermes`: `<tool_call>{"name": …, "arguments": {…}}</tool_call>` (Hermes, Qwen 2.5/3, many fine-tunes);
- `llama3`: a bare JSON object `{"name": …, "parameters": {…}}` as the whole reply, optionally after
  `<|python_tag|>` (Llama 3.1-3.3);
- `mistral`: `[TOOL_CALLS][{"name": …, "arguments": {…}}]`, or the newer `[TOOL_CALLS]name[ARGS]{…}`
  (Mistral Small 3.2, Devstral, Magistral: `args_style`);
- `harmony`: gpt-oss, `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{…}<|call|>`;
- `json`: the fallback for a template that shows no tool format: the reply is one JSON object
  `{"name": …, "arguments": {…}}` (also accepted: `parameters`, a list of calls, a ```json fence).

`trigger` is the regular expression (std::regex ECMAScript) that llama.cpp's lazy grammar waits for: the
grammar applies from its first capture group on. A pattern wrapped in `^…$` must match the whole output
so far (the call must open the reply); any other pattern may match anywhere.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

FORMAT_NAMES = ("hermes", "llama3", "mistral", "harmony", "json")

_AT_START = r"^\s*({})[\s\S]*$"


@dataclass(frozen=True)
class CallFormat:
    name: str
    trigger: str
    args_key: str = "arguments"  # the key that holds the arguments in the call object
    at_start: bool = False  # a call is recognised only as the start of the reply
    args_style: bool = False  # mistral: name[ARGS]{…} rather than a JSON list of calls


FORMATS: dict[str, CallFormat] = {
    "hermes": CallFormat("hermes", r"(<tool_call>)"),
    "llama3": CallFormat(
        "llama3", _AT_START.format(r"\{|<\|python_tag\|>"), args_key="parameters", at_start=True
    ),
    "mistral": CallFormat("mistral", r"(\[TOOL_CALLS\])"),
    "harmony": CallFormat("harmony", r"(<\|channel\|>commentary to=functions\.)"),
    "json": CallFormat("json", _AT_START.format(r"\{"), at_start=True),
}


def detect_call_format(template: str | None, override: str = "auto") -> CallFormat:
    """The format named by `override`, else the one the chat template renders tool calls in.

    A template that shows no tool format gets `json`: with a grammar even a model never trained for tools
    writes a call that parses, and the prompt (engine/tools/prompt.py) tells it what to write.
    """
    text = template or ""
    if override != "auto":
        if override not in FORMATS:
            raise ValueError(
                f"unknown tool call format {override!r}; one of: auto, {', '.join(FORMAT_NAMES)}"
            )
        fmt = FORMATS[override]
    elif "<|channel|>" in text:
        fmt = FORMATS["harmony"]
    elif "[TOOL_CALLS]" in text:
        fmt = FORMATS["mistral"]
    elif "<tool_call>" in text:
        fmt = FORMATS["hermes"]
    elif "<|python_tag|>" in text or ("<|start_header_id|>" in text and '"parameters"' in text):
        fmt = FORMATS["llama3"]
    else:
        fmt = FORMATS["json"]
    if fmt.name == "mistral" and "[ARGS]" in text:
        fmt = dataclasses.replace(fmt, args_style=True)
    return fmt


_READS_TOOLS = re.compile(r"\{%-?[^%]*\btools\b")


def template_renders_tools(template: str | None) -> bool:
    """True when the chat template reads a `tools` variable in a statement, so it can render the tools."""
    return bool(_READS_TOOLS.search(template or ""))
