"""The REPL: read a line, run a command or a chat turn, stream the reply. Written once for both clients."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine import Cancel, EngineError

from .clients import ChatClient, Done, Event, Note, Text, Thought, ToolDone, ToolUse, Waiting
from .commands import Commands
from .render import Output

log = logging.getLogger("engine.cli")  # in direct mode: <data-dir>/logs/engine.log

DOUBLE_INTERRUPT_S = 2.0  # two Ctrl+C within this many seconds exit
HTTP_STOP_WAIT_S = 3.0  # after Ctrl+C, how long to wait for a server stream to notice
PROMPT = "you> "
_END = object()


class App:
    def __init__(self, client: ChatClient, out: Output, *, interactive: bool, params: dict[str, Any]) -> None:
        self.client, self.out, self.interactive = client, out, interactive
        self.sticky = dict(params)  # /params set in this run; new chats start with them
        self.commands = Commands(self)
        self.quitting = False
        self.hide_thinking = False  # --hide-thinking: a thinking model's thought is not shown
        self.failures = 0
        self._last_interrupt = 0.0
        self._interrupted_at_prompt = False
        self._worker: threading.Thread | None = None  # the last turn's thread
        self._asks: queue.Queue[tuple[str, dict[str, Any], queue.Queue[str]]] = queue.Queue()
        self._streaming = False
        if interactive and hasattr(client, "approver"):
            client.approver = self.ask_tool  # direct mode: a tool call waits for your y/N

    # --- the loop -----------------------------------------------------------------------------------

    def start(self, preset: str | None, session_id: str | None) -> None:
        """Open `session_id`, or start a new chat. Raises EngineError (the caller exits with it)."""
        if session_id:
            self.commands.show_session(self.client.open(session_id))
        else:
            self.new_chat(preset, None, quiet=True)

    def run(self) -> int:
        try:
            while not self.quitting:
                line = self.read()
                if line is None:
                    break
                self.handle(line)
        finally:
            self.finish()
        return 1 if self.failures and not self.interactive else 0

    def read(self) -> str | None:
        """The next line, or None at the end of input (EOF, or Ctrl+C twice at the prompt)."""
        if not self.interactive:
            line = sys.stdin.readline()
            return line.rstrip("\r\n") if line else None
        try:
            line = input(self._prompt())
        except EOFError:
            self.out.print()
            return None
        except KeyboardInterrupt:
            now = time.monotonic()
            if self._interrupted_at_prompt or now - self._last_interrupt < DOUBLE_INTERRUPT_S:
                self.out.print()
                return None
            self._last_interrupt, self._interrupted_at_prompt = now, True
            self.out.print()
            self.out.hint("Press Ctrl+C again, or type /quit, to exit.")
            return ""
        self._interrupted_at_prompt, self._last_interrupt = False, 0.0  # a line in between: start over
        return line

    def _prompt(self) -> str:
        if self.out.console.no_color:
            return PROMPT
        return f"\x01\x1b[1;32m\x02{PROMPT.rstrip()}\x01\x1b[0m\x02 "  # \x01..\x02: zero-width for readline

    def handle(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        try:
            if text.startswith("//"):  # a message that starts with "/"
                self.chat(text[1:])
            elif text.startswith("/"):
                self.commands.run(text)
            else:
                self.chat(text)
        except EngineError as exc:
            self.fail(exc.message)
        except KeyboardInterrupt:  # Ctrl+C during a command (a slow server, say): back to the prompt
            self.out.print()
            self.out.hint("Interrupted.")
            self._last_interrupt = time.monotonic()
        except Exception as exc:  # a bug or an odd failure: one line, never a traceback
            log.exception("command failed: %s", text[:80])
            self.fail(f"{type(exc).__name__}: {exc}")

    def fail(self, message: str) -> None:
        self.failures += 1
        self.out.error(message)

    def finish(self) -> None:
        sid = self.client.state.session_id
        if sid:
            self.out.info(f"Chat saved: {sid}")
        if self._worker is not None and self._worker.is_alive():
            return  # a turn is still ending (Ctrl+C twice): never free the model under it
        with contextlib.suppress(Exception):  # closing is best effort
            self.client.close()

    # --- chats --------------------------------------------------------------------------------------

    def new_chat(self, preset: str | None, system_prompt: str | None, *, quiet: bool = False) -> None:
        old = self.client.state.session_id
        greeting = self.client.new_chat(preset, system_prompt, self.sticky)
        if not quiet:
            what = f"preset {preset}" if preset else "your prompt" if system_prompt else "the default prompt"
            saved = f" The last one is saved as {old}." if old else ""
            self.out.success(f"New chat with {what}.{saved}")
        if greeting:
            self.out.message("assistant", self.assistant_name(), greeting)

    def assistant_name(self) -> str:
        return self.client.state.preset or "Assistant"

    def chat(self, text: str) -> None:
        self.stream(lambda cancel: self.client.send(text, cancel))

    def impersonate(self) -> None:
        """Let the model draft your next message; it is shown, and put into the next prompt to edit."""
        parts: list[str] = []

        def start(cancel: threading.Event) -> Iterator[Event]:
            events = self.client.impersonate(cancel)  # argument errors raise here

            def collect() -> Iterator[Event]:
                for event in events:
                    if isinstance(event, Text):
                        parts.append(event.text)
                    yield event

            return collect()

        self.stream(start, name="you (draft)", saves=False)
        draft = "".join(parts).strip()
        if not draft:
            return
        if self.interactive:
            self.prefill(draft)
            self.out.hint("The draft is in the prompt: edit it and press Enter to send, or clear it.")
        else:
            self.out.hint("Nothing was sent; send the draft yourself if you want it.")

    def prefill(self, text: str) -> None:
        """Put `text` into the next input line (readline), once."""
        try:
            import readline
        except ImportError:
            return

        def hook() -> None:
            readline.insert_text(text)
            readline.redisplay()
            readline.set_pre_input_hook()

        readline.set_pre_input_hook(hook)

    def ask_tool(self, name: str, arguments: dict[str, Any]) -> str:
        """Called on the turn's thread: the reply loop asks you (y/N/a), and this waits for the answer."""
        reply: queue.Queue[str] = queue.Queue()
        self._asks.put((name, arguments, reply))
        while self._streaming:
            try:
                return reply.get(timeout=0.1)
            except queue.Empty:
                continue
        return "deny"

    def _answer_asks(self, view: Any) -> None:
        while True:
            try:
                name, arguments, reply = self._asks.get_nowait()
            except queue.Empty:
                return
            args = json.dumps(arguments, ensure_ascii=False)
            try:
                text = view.ask(f"Run tool {name}({args})? [y/N/a=always] ").strip().lower()
            except (EOFError, KeyboardInterrupt):
                text = ""
            reply.put({"y": "allow", "yes": "allow", "a": "always", "always": "always"}.get(text, "deny"))

    def stream(
        self,
        start: Callable[[threading.Event], Iterator[Event]],
        *,
        name: str | None = None,
        saves: bool = True,
    ) -> None:
        """Run one turn in a worker thread and render its events. Ctrl+C sets `cancel`; the turn ends
        within a token and what was generated is kept. Ctrl+C twice within 2 s also quits."""
        cancel = Cancel()
        events = start(cancel)  # argument errors raise here, before anything is drawn
        items: queue.Queue[Any] = queue.Queue()

        def work() -> None:
            try:
                for event in events:
                    items.put(event)
            except BaseException as exc:
                items.put(exc)
            finally:
                items.put(_END)

        def on_interrupt(signum: int, frame: Any) -> None:
            now = time.monotonic()
            if cancel.is_set() and now - self._last_interrupt < DOUBLE_INTERRUPT_S:
                self.quitting = True
            self._last_interrupt = now
            cancel.set()

        worker = self._worker = threading.Thread(target=work, name="cli-turn", daemon=True)
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, on_interrupt) if main else None
        done: Done | None = None
        error: BaseException | None = None
        notes: list[str] = []
        stop_asked = 0.0
        self._streaming = True
        try:
            with self.out.reply(name or self.assistant_name()) as view:
                worker.start()
                while True:
                    self._answer_asks(view)
                    try:
                        item = items.get(timeout=0.1)
                    except queue.Empty:
                        if cancel.is_set():
                            if not stop_asked:
                                stop_asked = time.monotonic()
                                view.status("Stopping…")
                            waited = time.monotonic() - stop_asked
                            if self.quitting or (self.client.kind == "http" and waited > HTTP_STOP_WAIT_S):
                                break
                        continue
                    if item is _END:
                        break
                    if isinstance(item, Text):
                        view.add(item.text)
                    elif isinstance(item, Thought):
                        if not self.hide_thinking:
                            view.think(item.text)
                    elif isinstance(item, Done):
                        done = item
                    elif isinstance(item, Waiting):
                        view.status(f"Waiting for the model: {item.position} request(s) ahead…")
                    elif isinstance(item, Note):
                        notes.append(item.message)
                    elif isinstance(item, ToolUse | ToolDone):
                        view.think(_tool_line(item))
                    elif isinstance(item, BaseException):
                        error = item
        finally:
            self._streaming = False
            if main:
                signal.signal(signal.SIGINT, previous)
        if self.quitting:
            worker.join(DOUBLE_INTERRUPT_S)  # let the engine save what it has
        for note in notes:
            self.out.hint(note)
        if error is not None:
            raise error
        if done is not None and done.metrics:
            self.out.metrics(done.finish_reason, done.metrics)
        elif (cancel.is_set() or done is not None) and saves:
            self.out.info("Stopped; what was generated is saved.")


def _tool_line(item: ToolUse | ToolDone) -> str:
    """A tool call or its result, one line, shown with the thought (dim, above the reply)."""
    if isinstance(item, ToolUse):
        return f"\n[tool] {item.name}({json.dumps(item.arguments, ensure_ascii=False)})\n"
    text = " ".join(item.content.split())
    text = text if len(text) <= 200 else text[:197] + "…"
    return f"[{'tool error' if item.is_error else 'result'}] {text}\n"
