"""A streaming parser that takes tool calls out of a model's decoded text, in any format of `formats`.

Feed text chunks as they are decoded; get back answer text (str) and calls (`ToolCall`) in order. A marker
split across chunks is held back until it is whole, and so is trailing whitespace (the whitespace around a
call is dropped), so the result never depends on where the chunks were cut.

A call whose JSON does not parse, or that was cut off, still comes back as a `ToolCall` with `error` set:
the turn loop can tell the model what went wrong instead of showing raw JSON. Only the `json` and `llama3`
formats, which have no marker, give text back when the reply merely starts like JSON and is not a call.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any, Literal

from ..reasoning import partial_tail
from .formats import CallFormat

MAX_CALL_CHARS = 1_000_000  # a call longer than this is cut off and reported as an error
_ID_CHARS = string.ascii_letters + string.digits
_HARMONY_NAME = re.compile(r"to=functions\.([^\s<]+)")
# A header opens at <|start|> or <|channel|>; "to=functions." alone is a header whose start a reasoning
# splitter in front of this parser already took away.
_HARMONY_OPEN = ("<|start|>", "<|channel|>", "to=functions.")
_HARMONY_END = ("<|call|>", "<|end|>", "<|return|>")


def new_call_id() -> str:
    """Nine letters and digits: the one id shape every template accepts (Mistral's insists on it)."""
    return "".join(secrets.choice(_ID_CHARS) for _ in range(9))


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    raw: str = ""
    error: str | None = None  # why the call could not be read; None for a good call
    id: str = field(default_factory=new_call_id)

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments_json()},
        }


Piece = str | ToolCall
Mode = Literal["text", "header", "call"]


class ToolCallParser:
    """Feed decoded text; get back text and `ToolCall`s with the call syntax removed."""

    def __init__(self, fmt: CallFormat) -> None:
        self.fmt = fmt
        self.buf = ""
        self.mode: Mode = "text"
        self.opener = ""  # the text that opened the current call (kept for `raw`)
        self.name = ""  # harmony: the name from the call's header
        self.answered = False  # answer text was emitted: a call can no longer open the reply
        self._strip_next = False  # drop the whitespace that follows a call
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> list[Piece]:
        self.buf += text
        out: list[Piece] = []
        while self._step(out):
            pass
        return out

    def flush(self) -> list[Piece]:
        out: list[Piece] = []
        while self._step(out):
            pass
        if self.mode == "call":
            self._finish(out, self.buf, final=True)
        elif self.buf.strip():
            self._text(out, self.opener + self.buf if self.mode == "header" else self.buf)
        self.buf, self.mode, self.opener = "", "text", ""
        return out

    # --- one step of the state machine: True when it made progress ---------------------------------

    def _step(self, out: list[Piece]) -> bool:
        if self.mode == "header":
            return self._header(out)
        if self.mode == "call":
            return self._call(out)
        if self.fmt.at_start:
            return self._text_at_start(out)
        return self._text_markers(out)

    def _markers(self) -> tuple[str, ...]:
        name = self.fmt.name
        if name == "hermes":
            return ("<tool_call>",)
        if name == "mistral":
            return ("[TOOL_CALLS]",)
        return _HARMONY_OPEN

    def _text_markers(self, out: list[Piece]) -> bool:
        markers = self._markers()
        hit = min(((i, m) for m in markers if (i := self.buf.find(m)) != -1), default=None)
        if hit is None:  # hold back a marker's start, and the whitespace before it
            ready = self.buf[: len(self.buf) - partial_tail(self.buf, markers)].rstrip()
            self._text(out, ready)
            self.buf = self.buf[len(ready) :]
            return False
        i, marker = hit
        self._text(out, self.buf[:i].rstrip())
        self.opener, self.buf = marker, self.buf[i + len(marker) :]
        self.mode = "header" if self.fmt.name == "harmony" else "call"
        return True

    def _text_at_start(self, out: list[Piece]) -> bool:
        """json/llama3: a call is the reply's first thing (or follows a call); anything else is text."""
        if self.answered:
            self._text(out, self.buf)
            self.buf = ""
            return False
        rest = self.buf.lstrip(" \t\r\n;,") if self.calls else self.buf.lstrip()
        openers = ["```", "{", "["] + (["<|python_tag|>"] if self.fmt.name == "llama3" else [])
        for opener in openers:
            if rest.startswith(opener):
                self.opener, self.buf, self.mode = opener, rest[len(opener) :], "call"
                return True
        if not rest or any(o.startswith(rest) for o in openers):
            return False  # only whitespace so far, or the start of an opener
        self.answered = True
        self._text(out, self.buf)
        self.buf = ""
        return False

    def _header(self, out: list[Piece]) -> bool:
        """harmony: a header runs from <|start|> or <|channel|> to <|message|>; to=functions.X: a call."""
        end = self.buf.find("<|message|>")
        if end == -1:
            if len(self.buf) > 400:  # not a header after all
                self.mode = "text"
                self._text(out, self.opener + self.buf)
                self.buf = ""
            return False
        header = self.opener + self.buf[:end]
        found = _HARMONY_NAME.search(header)
        if found is None:  # an analysis/final header: text, for the reasoning splitter after us
            self._text(out, header + "<|message|>")
            self.buf, self.mode = self.buf[end + len("<|message|>") :], "text"
            return True
        self.name = found.group(1)
        self.opener, self.buf, self.mode = (
            header + "<|message|>",
            self.buf[end + len("<|message|>") :],
            "call",
        )
        return True

    def _call(self, out: list[Piece]) -> bool:
        if self.fmt.at_start and self._not_a_call():
            self.answered, self.mode = True, "text"
            self._text(out, self.opener + self.buf)
            self.buf = self.opener = ""
            return False
        end = self._call_end()
        if end is None:
            if len(self.buf) > MAX_CALL_CHARS:
                self._finish(out, self.buf, final=True)
                return True
            return False
        body_end, resume = end
        self._finish(out, self.buf[:body_end], final=False, closer=self.buf[body_end:resume])
        self.buf = self.buf[resume:]
        return True

    def _call_end(self) -> tuple[int, int] | None:
        """(end of the call's body, where the text after it resumes), or None while the call is open."""
        name, buf = self.fmt.name, self.buf
        if name == "hermes":
            return _closed_by(buf, ("</tool_call>",))
        if name == "harmony":
            return _closed_by(buf, _HARMONY_END)
        if self.opener == "```":
            i = buf.find("```")
            return None if i == -1 else (i, i + 3)
        if self.opener in ("{", "["):  # the opening bracket was consumed: scan as if it were there
            start: int | None = -1
        elif name == "mistral" and not buf.lstrip().startswith(("[", "{")):
            k = buf.find("[ARGS]")  # name[ARGS]{…}
            start = None if k == -1 else _json_start(buf, k + len("[ARGS]"))
        else:
            start = _json_start(buf, 0)
        j = None if start is None else _json_end(buf, start)
        return None if j is None else (j, j)

    def _not_a_call(self) -> bool:
        """json/llama3: what follows the opener shows this is an answer that starts like JSON."""
        head = self.buf.lstrip()
        if not head or self.opener == "<|python_tag|>":
            return False
        if self.opener == "{":
            return head[0] != '"'
        if self.opener == "[":
            return head[0] != "{"
        if head[0] in "[{" or "json".startswith(head[:4]):  # ``` then json, or the start of it
            return False
        if head.startswith("json"):
            after = head[4:].lstrip()
            return bool(after) and after[0] not in "[{"
        return True

    # --- finishing a call --------------------------------------------------------------------------

    def _finish(self, out: list[Piece], body: str, *, final: bool, closer: str = "") -> None:
        opener, raw = self.opener, self.opener + body + closer
        self.mode, self.opener = "text", ""
        try:
            calls = self._read(opener, body)
        except ValueError as exc:
            if self.fmt.at_start and '"name"' not in body:  # it only looked like JSON: an answer
                self.answered = True
                self._text(out, raw)
                return
            why = f"{exc} (the reply ended inside the call)" if final else str(exc)
            calls = [ToolCall(_guess_name(body) or self.name, {}, raw=raw, error=why)]
        for call in calls:
            call.raw = raw
        self.calls.extend(calls)
        out.extend(calls)
        self._strip_next = True

    def _read(self, opener: str, body: str) -> list[ToolCall]:
        name = self.fmt.name
        if name == "harmony":
            return [_call(self.name, _loads(body))]
        if name == "mistral" and not body.lstrip().startswith(("[", "{")):
            head, sep, args = body.partition("[ARGS]")
            if not sep:
                raise ValueError("expected [ARGS] after the tool name")
            return [_call(head.partition("[CALL_ID]")[0].strip(), _loads(args))]
        if opener == "```":
            body = body.strip().removeprefix("json")
        elif opener in ("{", "["):
            body = opener + body
        return _calls_of(_loads(body), self.fmt.args_key)

    def _text(self, out: list[Piece], text: str) -> None:
        if self._strip_next:
            text = text.lstrip()
            if not text:
                return
            self._strip_next = False
        if not text:
            return
        if text.strip():
            self.answered = True
        if out and isinstance(out[-1], str):
            out[-1] += text
        else:
            out.append(text)


def _closed_by(buf: str, closes: tuple[str, ...]) -> tuple[int, int] | None:
    """The end of a body closed by one of `closes`: after its JSON value when it has one (so a close tag
    inside a JSON string does not end it), else at the first close tag outside a string."""
    start = _json_start(buf, 0)
    j = None if start is None else _json_end(buf, start)
    if j is not None:
        after = buf[j:].lstrip()
        for close in closes:
            if after.startswith(close):
                return j, len(buf) - len(after) + len(close)
        if any(close.startswith(after) for close in closes):
            return None  # the close tag is still arriving
    hits = [(i, len(c)) for c in closes if (i := _find_outside(buf, c, start, j)) != -1]
    if not hits:
        return None
    i, n = min(hits)
    return i, i + n


def _find_outside(buf: str, close: str, start: int | None, j: int | None) -> int:
    i = buf.find(close, j or 0)
    while i != -1 and start is not None and j is None and _in_string(buf, start, i):
        i = buf.find(close, i + 1)  # a close tag inside a JSON string of an unfinished call
    return i


def _in_string(buf: str, start: int, end: int) -> bool:
    in_str, esc = False, False
    for c in buf[start:end]:
        if esc:
            esc = False
        elif c == "\\":
            esc = in_str
        elif c == '"':
            in_str = not in_str
    return in_str


def _json_start(buf: str, offset: int) -> int | None:
    """Where a JSON object or array starts in `buf` at `offset`, after whitespace; None if not (yet)."""
    rest = buf[offset:]
    i = offset + len(rest) - len(rest.lstrip())
    return i if i < len(buf) and buf[i] in "[{" else None


def _json_end(buf: str, start: int) -> int | None:
    """Index just past the JSON object or array that opens at `start` (-1: an already consumed bracket),
    or None while it is still open. Strings and escapes are honoured; brackets are only counted."""
    depth, in_str, esc = (1, False, False) if start == -1 else (0, False, False)
    for i in range(max(start, 0), len(buf)):
        c = buf[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _loads(text: str) -> Any:
    text = text.strip()
    if not text:
        raise ValueError("the call has no JSON arguments")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the call's JSON does not parse: {exc.msg} at character {exc.pos}") from None


def _calls_of(value: Any, args_key: str) -> list[ToolCall]:
    """The calls in a parsed JSON value: one call object, an OpenAI-style object, or a list of them."""
    if isinstance(value, list):
        if not value:
            raise ValueError("an empty list of calls")
        return [c for item in value for c in _calls_of(item, args_key)]
    if not isinstance(value, dict):
        raise ValueError("a call must be a JSON object with a name")
    if isinstance(value.get("tool_calls"), list):
        return _calls_of(value["tool_calls"], args_key)
    if isinstance(value.get("function"), dict):
        value = value["function"]
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError('a call must have a "name" string')
    args: Any = next((value[k] for k in (args_key, "arguments", "parameters") if k in value), {})
    return [_call(name, args)]


def _call(name: str, args: Any) -> ToolCall:
    if isinstance(args, str):  # OpenAI style: the arguments as a JSON string
        args = _loads(args) if args.strip() else {}
    if not isinstance(args, dict):
        raise ValueError(f"the arguments of {name} must be a JSON object")
    if not name:
        raise ValueError("the call has no tool name")
    return ToolCall(name, args)


def _guess_name(body: str) -> str:
    found = re.search(r'"name"\s*:\s*"([^"]{1,128})"', body)
    return found.group(1) if found else ""


def parse_text(fmt: CallFormat, text: str) -> tuple[str, list[ToolCall]]:
    """(answer text, calls) of a whole reply; for imports and tests."""
    p = ToolCallParser(fmt)
    pieces = p.feed(text) + p.flush()
    return "".join(x for x in pieces if isinstance(x, str)), [x for x in pieces if isinstance(x, ToolCall)]
