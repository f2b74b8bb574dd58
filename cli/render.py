"""Terminal output. On a TTY: rich Markdown streamed through Live, colours, a dim metrics line.
On a pipe: the reply as plain text on stdout, everything else on stderr, and no escape codes."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.padding import Padding
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

REFRESH_PER_S = 12

# Terminal control from data (a chat title, a reply, a card's greeting) is never printed: an escape
# sequence could retitle the window, clear the screen or, on some terminals, write the clipboard.
_SEQUENCE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, clearing
    r"|\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window title, clipboard, hyperlinks
    r"|[P^_X][^\x1b]*(?:\x1b\\)?"  # DCS, PM, APC, SOS strings
    r"|.?)"
)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe(text: object) -> str:
    """`text` without terminal escape sequences, control characters (but newlines and tabs) or bidi
    overrides. Everything printed that came from data goes through here."""
    s = str(text)
    if not _CONTROL.search(s):
        return s
    return _CONTROL.sub("", _SEQUENCE.sub("", s))


def _num(value: Any, fmt: str = "{}") -> str:
    return "?" if value is None else fmt.format(value)


def metrics_line(finish_reason: str, m: dict[str, Any]) -> str:
    """'24 tokens · 71.3 tok/s · TTFT 85 ms · prompt eval 35/120 · context 144/4096'; unknown is '?'."""
    parts = [
        f"{_num(m.get('completion_tokens'))} tokens",
        f"{_num(m.get('tokens_per_s'), '{:.1f}')} tok/s",
        f"TTFT {_num(m.get('ttft_ms'), '{:.0f}')} ms",
        f"prompt eval {_num(m.get('prompt_eval_tokens'))}/{_num(m.get('prompt_tokens'))}",
        f"context {_num(m.get('context_used'))}/{_num(m.get('context_size'))}",
    ]
    if m.get("reasoning_tokens"):
        parts.insert(1, f"thought {m['reasoning_tokens']} tokens")
    if m.get("dropped_messages"):
        parts.append(f"{m['dropped_messages']} older messages left out to fit the context")
    if (m.get("queue_ms") or 0) >= 500:
        parts.append(f"waited {m['queue_ms'] / 1000:.1f} s")
    if finish_reason == "length":
        parts.append("cut at max_tokens")
    elif finish_reason == "cancelled":
        parts.append("stopped")
    return " · ".join(parts)


class _Tail:
    """While streaming, show only the last screenful so the newest text stays in view."""

    def __init__(self, renderable: RenderableType, max_lines: int) -> None:
        self.renderable, self.max_lines = renderable, max(1, max_lines)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.renderable, options.update(height=None), pad=False)
        for i, line in enumerate(lines[-self.max_lines :]):
            if i:
                yield Segment.line()
            yield from line


class LiveReply:
    """A reply rendered as Markdown while it streams; the full text is rendered once at the end."""

    def __init__(self, console: Console, name: str) -> None:
        self.console, self.name, self.text, self.thought = console, name, "", ""
        self.live = Live(console=console, refresh_per_second=REFRESH_PER_S, transient=False)

    def _view(self) -> RenderableType:
        """The thought dim and indented above the reply."""
        if not self.thought.strip():
            return Markdown(self.text)
        thought = Padding(Text(self.thought.strip(), style="dim italic"), (0, 0, 1, 2))
        return Group(thought, Markdown(self.text))

    def think(self, text: str) -> None:
        self.thought += safe(text)
        self.live.update(_Tail(self._view(), self.console.size.height - 2))

    def __enter__(self) -> LiveReply:
        self.console.print(Text(safe(self.name), style="bold cyan"))
        self.live.start()
        return self

    def add(self, text: str) -> None:
        self.text += safe(text)
        self.live.update(_Tail(self._view(), self.console.size.height - 2))

    def status(self, message: str) -> None:
        if not self.text and not self.thought:
            self.live.update(Text(safe(message), style="dim italic"))

    def ask(self, question: str) -> str:
        """Stop the live view for a question (a tool call's y/N), then go on."""
        self.live.stop()
        try:
            return self.console.input(Text(safe(question)))  # Text: "[y/N]" is not markup
        finally:
            self.live.start()

    def __exit__(self, *exc: object) -> None:
        shown = self.text.strip() or self.thought.strip()
        self.live.update(self._view() if shown else Text(""), refresh=False)
        self.live.stop()  # the last refresh renders everything, taller than the screen or not


class PlainReply:
    """A reply written to stdout as it arrives."""

    def __init__(self, out: Output) -> None:
        self.out, self.text, self.thought = out, "", ""

    def __enter__(self) -> PlainReply:
        return self

    def add(self, text: str) -> None:
        text = safe(text)
        self.text += text
        self.out.stdout.write(text)
        self.out.stdout.flush()

    def think(self, text: str) -> None:
        """The thought goes to stderr, indented: a pipe gets the reply alone."""
        text = safe(text)
        err = self.out.err.file
        err.write(("" if self.thought else "  ") + text.replace("\n", "\n  "))
        err.flush()
        self.thought += text

    def status(self, message: str) -> None:
        self.out.info(message)

    def ask(self, question: str) -> str:
        return input(safe(question))

    def __exit__(self, *exc: object) -> None:
        if self.thought and not self.thought.endswith("\n"):
            self.out.err.file.write("\n")
        if self.text and not self.text.endswith("\n"):
            self.out.stdout.write("\n")
        self.out.stdout.flush()


class Output:
    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.stdout = sys.stdout
        if tty:
            self.console = Console(highlight=False)
            self.err = Console(stderr=True, highlight=False)
        else:
            plain = {"force_terminal": False, "no_color": True, "color_system": None, "highlight": False}
            self.console = Console(soft_wrap=True, emoji=False, **plain)  # type: ignore[arg-type]
            self.err = Console(stderr=True, soft_wrap=True, emoji=False, **plain)  # type: ignore[arg-type]

    # One-line messages. On a pipe they go to stderr so that stdout holds only what was asked for.
    def info(self, message: str) -> None:
        self.err.print(Text(safe(message), style="dim"))

    def success(self, message: str) -> None:
        self.err.print(Text(safe(message), style="green"))

    def hint(self, message: str) -> None:
        self.err.print(Text(safe(message), style="yellow"))

    def error(self, message: str) -> None:
        self.err.print(Text(f"error: {safe(message)}", style="bold red"))

    def metrics(self, finish_reason: str, metrics: dict[str, Any]) -> None:
        self.err.print(Text(metrics_line(finish_reason, metrics), style="dim"))

    # Output a command was asked for: stdout.
    def print(self, message: str = "", style: str = "") -> None:
        self.console.print(Text(safe(message), style=style))

    def table(self, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        title = safe(title)
        table = Table(title=title if self.tty else None, box=box.SIMPLE_HEAD if self.tty else None)
        for col in columns:
            table.add_column(safe(col), overflow="fold")
        for row in rows:
            table.add_row(*(Text("" if v is None else safe(v)) for v in row))
        if not self.tty and title:
            self.console.print(Text(title))
        self.console.print(table)

    def message(self, role: str, name: str, content: str) -> None:
        """One turn of a transcript (after /load)."""
        name, content = safe(name), safe(content)
        if not self.tty:
            self.console.print(Text(f"{name}: {content}"))
            return
        self.console.print(Text(name, style="bold green" if role == "user" else "bold cyan"))
        self.console.print(Markdown(content) if role == "assistant" else Text(content))

    def reply(self, name: str) -> LiveReply | PlainReply:
        return LiveReply(self.console, name) if self.tty else PlainReply(self)
