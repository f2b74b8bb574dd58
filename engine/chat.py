"""A chat turn: messages -> fitted prompt -> backend stream, under one lock, with metrics.

Every interface (UI, REST, OpenAI API, terminal) calls `Engine.stream`.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .backends.base import Backend, Cancel, Delta, Finished, Message, Reasoning, ToolCall, ToolResult
from .errors import InvalidInput, ModelUnavailable
from .logs import REQUESTS
from .params import SamplingParams

log = logging.getLogger("engine.chat")
request_log = logging.getLogger(REQUESTS)

ROLES = ("system", "user", "assistant", "tool")
CUTS_KEPT = 64  # chats whose history cut the engine remembers


@dataclass(frozen=True, slots=True)
class Queued:
    """The request waits for the model; `position` requests are ahead of it."""

    position: int


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the user should know that did not stop the turn, e.g. a save that failed."""

    level: str  # "warning" | "info"
    message: str


StreamEvent = Queued | Delta | Reasoning | ToolCall | ToolResult | Finished | Notice


def validate_messages(messages: object) -> list[Message]:
    """{role, content} messages, checked; an assistant message keeps OpenAI's `tool_calls`, a tool message
    its `tool_call_id` and `name` (other keys are dropped)."""
    if not isinstance(messages, list) or not messages:
        raise InvalidInput(
            "'messages' must be a non-empty list of {role, content} objects.", field="messages"
        )
    out: list[Message] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidInput(
                f"messages[{i}] must be an object with 'role' and 'content'.", field="messages"
            )
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise InvalidInput(
                f"messages[{i}].role must be one of {', '.join(ROLES)}; got {role!r}.",
                field=f"messages.{i}.role",
            )
        if content is None and (m.get("tool_calls") or role == "tool"):
            content = ""
        if not isinstance(content, str):
            raise InvalidInput(f"messages[{i}].content must be a string.", field=f"messages.{i}.content")
        msg: Message = {"role": role, "content": content}
        if isinstance(m.get("name"), str) and m["name"]:
            msg["name"] = m["name"]  # a group chat's speaker; a tool result's tool
        if role == "assistant" and m.get("tool_calls"):
            msg["tool_calls"] = check_tool_calls(m["tool_calls"], i)
        elif role == "tool" and isinstance(m.get("tool_call_id"), str):
            msg["tool_call_id"] = m["tool_call_id"]
        out.append(msg)
    return out


def check_tool_calls(calls: object, i: int) -> list[dict[str, Any]]:
    """OpenAI's `tool_calls` of message `i`, in its exact shape (arguments as a JSON string)."""
    where = f"messages.{i}.tool_calls"
    if not isinstance(calls, list):
        raise InvalidInput(f"messages[{i}].tool_calls must be a list.", field=where)
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidInput(f"messages[{i}].tool_calls: each needs a function with a name.", field=where)
        args = fn.get("arguments")
        args = args if isinstance(args, str) else json.dumps(args or {}, ensure_ascii=False)
        out.append(
            {
                "id": str(call.get("id") or ""),
                "type": "function",
                "function": {"name": fn["name"], "arguments": args},
            }
        )
    return out


class FitCancelled(Exception):
    """The turn was cancelled while its history was being fitted to the context."""


class MessageCosts:
    """The tokens each message adds to a prompt, counted once per (role, text) and kept, so that fitting
    a long history costs one small count per new message instead of counts of the whole history.

    A message's cost is count([REF, m, LAST]) - count([REF, LAST]): with a system message first the template
    adds no default system prompt, and with a user message last the message is rendered as it is inside a
    history (a last assistant message would be rendered as a reply to continue). The difference is the
    message's own tokens and its role markers.
    """

    REF: Message = {"role": "system", "content": "."}
    LAST: Message = {"role": "user", "content": "."}

    def __init__(self, count: Callable[[list[Message]], int | None], size: int = 16_384) -> None:
        self.count = count
        self.size = size
        self._base: int | None = None
        self._memo: OrderedDict[tuple[str, str], int | None] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, message: Message) -> int | None:
        key = (message["role"], message["content"] + json.dumps(message.get("tool_calls") or ""))
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        if self._base is None:
            self._base = self.count([self.REF, self.LAST])
        try:
            n, base = self.count([self.REF, message, self.LAST]), self._base
        except InvalidInput:  # a strict template (roles must alternate): the content as a lone user turn
            n = self.count([{"role": "user", "content": str(message["content"])}])
            base = self.count([{"role": "user", "content": ""}])
        cost = None if n is None or base is None else max(0, n - base)
        with self._lock:
            self._memo[key] = cost
            if len(self._memo) > self.size:
                self._memo.popitem(last=False)
        return cost


def fit_messages(
    messages: list[Message],
    count: Callable[[list[Message]], int | None],
    budget: int,
    *,
    anchors: Sequence[Message] = (),
    headroom: int = 0,
    cost: Callable[[Message], int | None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[list[Message], int]:
    """Drop the oldest turns until the prompt fits `budget` tokens.

    Leading system messages, the last user turn and everything after it (a post-history note, a reply
    being continued) are never dropped. Returns (messages, dropped count).

    Dropping the fewest turns would move the start of the history on every turn, and the KV cache would
    be re-evaluated in full each time. So a history that starts at one of `anchors` (where recent cuts put
    it, one per chat) is kept while it fits, and a new cut frees `headroom` more tokens, which the next
    turns then fill.

    The cost stays linear in what is kept: each message's own cost (`cost`, cached by the caller) is summed
    from the newest message back until the budget is spent, and the few windows near that estimate are
    counted exactly with `count`. The whole history is never counted unless it fits. `cancel` is checked
    between steps (FitCancelled).
    """
    if not messages:
        return messages, 0
    head = 0
    while head < len(messages) - 1 and messages[head]["role"] == "system":
        head += 1
    tail = len(messages) - 1
    while tail > head and messages[tail]["role"] != "user":
        tail -= 1
    if messages[tail]["role"] != "user":
        tail = len(messages) - 1
    middle = messages[head:tail]
    if not middle:
        return messages, 0
    fitter = _Fitter(messages[:head], middle, messages[tail:], count, cost or MessageCosts(count), cancel)
    drop = fitter.fewest(budget)
    if drop == 0:
        return messages, 0
    kept_start = next((i for i in range(drop, len(middle)) if middle[i] in anchors), None)
    if kept_start is not None:
        drop = kept_start
    elif headroom > 0 and drop < len(middle) and fitter.fits(len(middle), budget - headroom):
        drop = max(drop, fitter.fewest(budget - headroom))
    return messages[:head] + middle[drop:] + messages[tail:], drop


class _Fitter:
    """fit_messages' search: the fewest dropped messages (a history that starts on a user turn) that fit."""

    def __init__(
        self,
        head: list[Message],
        middle: list[Message],
        kept: list[Message],
        count: Callable[[list[Message]], int | None],
        cost: Callable[[Message], int | None],
        cancel: threading.Event | None,
    ) -> None:
        self.head, self.middle, self.kept = head, middle, kept
        self.count, self.cost, self.cancel = count, cost, cancel
        # where a kept history may start: all of it, a user turn, or nothing kept at all
        users = (i for i, m in enumerate(middle) if i and m["role"] == "user")
        self.starts = [0, *users, len(middle)]
        self._counted: dict[int, int | None] = {}

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise FitCancelled

    def tokens(self, drop: int) -> int | None:
        if drop not in self._counted:
            self.check_cancel()
            self._counted[drop] = self.count(self.head + self.middle[drop:] + self.kept)
        return self._counted[drop]

    def fits(self, drop: int, limit: int) -> bool:
        n = self.tokens(drop)
        return n is None or n <= limit

    def fewest(self, limit: int) -> int:
        """The first start in `starts` whose window fits (the last one if none does)."""
        k = self._estimate(limit)
        if self.fits(self.starts[k], limit):  # gallop down to the first start that does not fit
            step, hi = 1, k
            while hi - step >= 0 and self.fits(self.starts[hi - step], limit):
                hi -= step
                step *= 2
            lo = max(0, hi - step)  # starts[lo] does not fit, or lo == 0
            if lo == hi or self.fits(self.starts[lo], limit):
                return self.starts[lo]
        else:  # gallop up to a start that fits
            step, lo = 1, k
            while lo + step < len(self.starts) - 1 and not self.fits(self.starts[lo + step], limit):
                lo += step
                step *= 2
            hi = min(len(self.starts) - 1, lo + step)
        while hi - lo > 1:  # starts[lo] does not fit, starts[hi] fits (or is the last)
            mid = (lo + hi) // 2
            if self.fits(self.starts[mid], limit):
                hi = mid
            else:
                lo = mid
        return self.starts[hi]

    def _estimate(self, limit: int) -> int:
        """Index in `starts` of the first start whose window fits by the messages' own costs, summed from
        the newest message back; only messages within the budget are ever counted."""
        fixed = self.tokens(len(self.middle))
        if fixed is None:
            return 0
        total = fixed
        for i in range(len(self.middle) - 1, -1, -1):
            self.check_cancel()
            c = self.cost(self.middle[i])
            if c is None:
                return 0
            total += c
            if total > limit:
                return bisect.bisect_right(self.starts, i)  # the first start after message i
        return 0


class ModelQueue:
    """FIFO access to one model that serves `capacity` requests at once. Waiters see their place in line
    and can give up. An exclusive ticket (a model switch) waits for the whole model, and holds back
    everyone behind it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._line: list[object] = []
        self._exclusive: set[object] = set()

    def __len__(self) -> int:
        return len(self._line)

    def _ahead(self, ticket: object, capacity: int) -> int:
        """How many requests must leave before `ticket` may run (0: it may run now)."""
        i = self._line.index(ticket)
        if ticket in self._exclusive:
            return i
        first_exclusive = next((k for k, t in enumerate(self._line[:i]) if t in self._exclusive), None)
        if first_exclusive is not None:
            return i - first_exclusive + 1
        return max(0, i - capacity + 1)

    def wait(
        self, ticket: object, cancel: threading.Event, *, capacity: int = 1, exclusive: bool = False
    ) -> Iterator[int]:
        """Yield the place in line whenever it changes; return once `ticket` may use the model."""
        with self._cond:
            self._line.append(ticket)
            if exclusive:
                self._exclusive.add(ticket)
        last = -1
        while True:
            if cancel.is_set():  # checked on every wake-up, so a waiter that gives up leaves at once
                return
            with self._cond:
                pos = self._ahead(ticket, max(1, capacity))
                if pos == 0:
                    return
                if pos == last:
                    self._cond.wait(0.1)
                    continue
            last = pos
            yield pos

    def leave(self, ticket: object) -> None:
        with self._cond:
            if ticket in self._line:
                self._line.remove(ticket)
            self._exclusive.discard(ticket)
            self._cond.notify_all()


def _counter(backend: Backend, tools: list[dict[str, Any]] | None) -> Callable[[list[Message]], int | None]:
    """The backend's token count of a prompt, with the tools offered shown in it."""
    if not tools:
        return backend.count_tokens
    count: Any = backend.count_tokens
    return lambda messages: count(messages, tools=tools)


class Engine:
    """Owns the backend and its lock. Thin interfaces call `stream`."""

    def __init__(self, backend: Backend | None, *, load_error: str | None = None, chat_content: bool = False):
        self.backend = backend
        self.load_error = load_error
        self.queue = ModelQueue()
        self.chat_content = chat_content
        self._swap = threading.Lock()
        # where recent fitted histories started, one per chat (see fit_messages): chats that take turns
        # each keep their cut, and so their cached prefix
        self.cuts: deque[Message] = deque(maxlen=CUTS_KEPT)
        self._costs: tuple[weakref.ref[Backend], MessageCosts] | None = None

    @property
    def ready(self) -> bool:
        return self.backend is not None

    def require_backend(self) -> Backend:
        if self.backend is None:
            raise ModelUnavailable(self.load_error or "No model is loaded. Pick one in the Models tab.")
        return self.backend

    def replace_backend(self, backend: Backend) -> None:
        """Swap models once the running request is done; the old model is closed."""
        ticket = object()
        for _ in self.queue.wait(ticket, threading.Event(), exclusive=True):
            pass
        try:
            old, self.backend, self.load_error = self.backend, backend, None
            if old is not None and old is not backend:
                old.close()
        finally:
            self.queue.leave(ticket)

    def stream(
        self,
        messages: list[Message],
        params: SamplingParams,
        cancel: threading.Event | None = None,
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] = "auto",
        parallel_tool_calls: bool = False,
        label: str | None = None,
    ) -> Iterator[StreamEvent]:
        """The backend's reply to `messages`, fitted to its context. `tools` (OpenAI's function specs) are
        offered to the model with `tool_choice`; their description counts against the context too. `label`
        names the chat (its session id) for the backend's slot view."""
        cancel = cancel or Cancel()
        backend = self.require_backend()
        messages = validate_messages(messages)
        queued_at = time.perf_counter()
        ticket = object()
        try:
            if backend.serialised:
                for pos in self.queue.wait(ticket, cancel, capacity=getattr(backend, "parallel", 1)):
                    yield Queued(pos)
                if cancel.is_set():
                    yield Finished("cancelled")
                    return
                backend = self.require_backend()  # the model may have been switched while we waited
            queue_ms = (time.perf_counter() - queued_at) * 1000
            n_ctx = backend.context_size()
            dropped = 0
            if n_ctx:
                budget = n_ctx - min(params.max_tokens, n_ctx // 2)
                try:
                    messages, dropped = fit_messages(
                        messages,
                        _counter(backend, tools),
                        budget,
                        anchors=self.cuts,
                        headroom=budget // 4,
                        cost=self._message_costs(backend),
                        cancel=cancel,
                    )
                except FitCancelled:
                    yield Finished("cancelled")
                    return
                start = next((m for m in messages if m["role"] != "system"), None) if dropped else None
                if start is not None and start not in self.cuts:
                    self.cuts.append(start)
            extra: dict[str, Any] = {}
            if tools:
                extra = {
                    "tools": tools,
                    "tool_choice": tool_choice,
                    "parallel_tool_calls": parallel_tool_calls,
                }
            for event in backend.stream(messages, params, cancel, label=label, **extra):
                if isinstance(event, Finished):
                    event.metrics.queue_ms = round(queue_ms, 1)
                    event.metrics.dropped_messages = dropped
                    self._log_turn(messages, event)
                yield event
        finally:
            self.queue.leave(ticket)

    def _message_costs(self, backend: Backend) -> MessageCosts:
        """Per-message token counts, kept for as long as this backend (its tokenizer) is in use."""
        held = self._costs
        if held is None or held[0]() is not backend:
            held = self._costs = (weakref.ref(backend), MessageCosts(backend.count_tokens))
        return held[1]

    def complete(self, messages: list[Message], params: SamplingParams) -> tuple[str, Finished]:
        parts: list[str] = []
        done = Finished("stop")
        for event in self.stream(messages, params):
            if isinstance(event, Delta):
                parts.append(event.text)
            elif isinstance(event, Finished):
                done = event
        return "".join(parts), done

    def _log_turn(self, messages: list[Message], done: Finished) -> None:
        m = done.metrics
        line = (
            f"finish={done.finish_reason} prompt={m.prompt_tokens} eval={m.prompt_eval_tokens} "
            f"completion={m.completion_tokens} ttft_ms={m.ttft_ms} tok_s={m.tokens_per_s} "
            f"ctx={m.context_used}/{m.context_size} dropped={m.dropped_messages} queue_ms={m.queue_ms} "
            f"reasoning={m.reasoning_tokens} answer_ttft_ms={m.answer_ttft_ms}"
        )
        if self.chat_content:
            line += f" last_user={messages[-1]['content']!r}"
        request_log.info(line)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
