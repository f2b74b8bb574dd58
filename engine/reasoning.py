"""Reasoning ("thinking") formats, and a streaming splitter that separates a model's thought from its answer.

A format is a set of markers that switch the stream between the thought and the answer:

- `think`: `<think>…</think>` (Qwen3, DeepSeek-R1 and its distills, whose generation prompt already
  opens `<think>`, so the reply starts inside the thought);
- `bracket`: `[THINK]…[/THINK]` (Magistral);
- `seed`: `<seed:think>…</seed:think>` (Seed-OSS);
- `harmony`: gpt-oss channels, `<|channel|>analysis<|message|>…<|end|>` then `…final<|message|>…`.

The splitter is fed text chunks as they are decoded; a marker split across chunks is held back until it
is whole. An opening tag counts only before any answer text (a model that writes `<think>` in the middle
of an answer is quoting it). A thought that never closes stays reasoning and is flagged `unclosed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Part = Literal["reasoning", "answer"]
FORMAT_NAMES = ("think", "bracket", "seed", "harmony")


@dataclass(frozen=True)
class ReasoningFormat:
    name: str
    open: str
    close: str  # what the decode loop injects to end a thought early
    markers: tuple[tuple[str, Part | None], ...]  # marker -> the part it switches to (None: just dropped)
    open_anywhere: bool = False  # harmony: a channel header may come at any point
    kept: tuple[str, ...] = ()  # markers that switch part and stay in the text (a tool call's header)


def _tags(name: str, open_: str, close: str) -> ReasoningFormat:
    return ReasoningFormat(name, open_, close, ((open_, "reasoning"), (close, "answer")))


FORMATS: dict[str, ReasoningFormat] = {
    "think": _tags("think", "<think>", "</think>"),
    "bracket": _tags("bracket", "[THINK]", "[/THINK]"),
    "seed": _tags("seed", "<seed:think>", "</seed:think>"),
    "harmony": ReasoningFormat(
        "harmony",
        "<|channel|>analysis<|message|>",
        "<|end|><|start|>assistant<|channel|>final<|message|>",
        (
            ("<|channel|>analysis<|message|>", "reasoning"),
            ("<|channel|>final<|message|>", "answer"),
            # a tool call after the thought: answer text, for the tool-call parser (engine/tools/parse.py)
            ("<|channel|>commentary to=", "answer"),
            ("<|end|>", None),
            ("<|start|>assistant", None),
        ),
        open_anywhere=True,
        kept=("<|channel|>commentary to=",),
    ),
}


def detect_format(template: str | None, override: str = "auto") -> ReasoningFormat | None:
    """The format named by `override`, else the one the chat template uses. A template with no thinking
    markers still gets `think`: a model may open `<think>` itself (or a grammar may make it)."""
    if override == "none":
        return None
    if override != "auto":
        return FORMATS[override]
    text = template or ""
    if "<|channel|>" in text:
        return FORMATS["harmony"]
    if "[THINK]" in text:
        return FORMATS["bracket"]
    if "<seed:think>" in text:
        return FORMATS["seed"]
    return FORMATS["think"]


def starts_in_thought(fmt: ReasoningFormat, prompt: str) -> bool:
    """True when the rendered prompt (its generation prompt) already opened the thought (R1 distills)."""
    tail = prompt.rstrip()
    return fmt.name != "harmony" and tail.endswith(fmt.open)


def template_switch(template: str | None) -> bool:
    """True when the chat template reads `enable_thinking` (Qwen3 style), so "off" can reach it."""
    return "enable_thinking" in (template or "")


class ReasoningSplitter:
    """Feed decoded text; get back (part, text) pieces with the markers removed."""

    def __init__(self, fmt: ReasoningFormat, *, in_thought: bool = False) -> None:
        self.fmt = fmt
        self.part: Part = "reasoning" if in_thought else "answer"
        self.buf = ""
        self.answered = False  # answer text other than whitespace has been sent
        self.thought = False  # reasoning text other than whitespace has been sent
        self.opened = in_thought  # a thought was started at some point
        self.closed = False  # a thought was closed at some point
        self._strip_next = False  # drop the whitespace that follows a closing tag

    @property
    def in_thought(self) -> bool:
        return self.part == "reasoning"

    @property
    def unclosed(self) -> bool:
        return self.in_thought

    def _active(self) -> list[tuple[str, Part | None]]:
        may_open = not self.in_thought and not self.answered and not self.closed
        return [
            (marker, to)
            for marker, to in self.fmt.markers
            if self.fmt.open_anywhere
            or (to == "answer" and self.in_thought)
            or (to == "reasoning" and may_open)
        ]

    def answered_with(self, text: str) -> None:
        """The answer already begins with `text`, which the caller shows (a reply prefix: in the prompt, or
        forced after the thought). What the model writes next continues it, its leading spaces kept, and a
        thinking tag it writes now is quoted text."""
        if text.strip():
            self.answered = True
            self._strip_next = False

    def feed(self, text: str) -> list[tuple[Part, str]]:
        self.buf += text
        out: list[tuple[Part, str]] = []
        while True:
            markers = self._active()
            hit = min(
                ((i, m, to) for m, to in markers if (i := self.buf.find(m)) != -1),
                default=None,
                key=lambda h: h[0],
            )
            if hit is None:
                break
            i, marker, to = hit
            self._emit(out, self.buf[:i])
            self.buf = self.buf[i + len(marker) :]
            if (marker, to) not in self._active():  # the text before it was an answer: a quoted tag
                self._emit(out, marker)
                continue
            if to == "answer" and self.in_thought:
                self.closed, self._strip_next = True, True
            if to == "reasoning":
                self.opened = True
            if to is not None:
                self.part = to
            if marker in self.fmt.kept:
                self._emit(out, marker)
        keep = partial_tail(self.buf, [m for m, _ in self._active()])
        self._emit(out, self.buf[: len(self.buf) - keep])
        self.buf = self.buf[len(self.buf) - keep :]
        return out

    def flush(self) -> list[tuple[Part, str]]:
        out: list[tuple[Part, str]] = []
        self._emit(out, self.buf)
        self.buf = ""
        return out

    def _emit(self, out: list[tuple[Part, str]], text: str) -> None:
        if self.part == "answer" and (self._strip_next or not self.answered):
            text = text.lstrip()
            if not text:
                return
            self._strip_next = False
        if self.part == "reasoning" and not self.thought:
            text = text.lstrip()
        if not text:
            return
        if self.part == "answer":
            self.answered = True
        else:
            self.thought = True
        if out and out[-1][0] == self.part:
            out[-1] = (self.part, out[-1][1] + text)
        else:
            out.append((self.part, text))


def partial_tail(text: str, markers: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some marker."""
    best = 0
    for m in markers:
        for n in range(min(len(m) - 1, len(text)), best, -1):
            if text.endswith(m[:n]):
                best = n
                break
    return best


def split_text(fmt: ReasoningFormat | None, text: str, *, in_thought: bool = False) -> tuple[str, str]:
    """(reasoning, answer) of a whole reply; for imports and tests."""
    if fmt is None:
        return "", text
    s = ReasoningSplitter(fmt, in_thought=in_thought)
    parts = s.feed(text) + s.flush()
    return (
        "".join(t for p, t in parts if p == "reasoning"),
        "".join(t for p, t in parts if p == "answer"),
    )
