"""Continuous batching: up to `parallel` sequences share each `llama_decode`, each in a KV slot of its own.

One long-lived thread runs every decode (see llama_cpp.py on why one thread). Each step batches the next
token of every generating sequence, then prompt chunks of newly admitted ones, up to n_batch tokens; a
request joins and leaves between steps. Each sequence keeps its own sampler chain (seed, grammar,
penalties), stop strings, max_tokens, cancel flag and metrics.

A slot is a llama.cpp sequence id plus the tokens its KV cells hold. A new request takes the free slot
whose cached tokens share the longest prefix with its prompt (else the least recently used one), so
alternating chats each evaluate only their new tokens. The KV cache is unified: the slots share n_ctx
cells, and idle slots are cleared, least recently used first, when a request needs the room. Every step
attends over the cache's whole used range, idle slots' cells included, so idle slots also go to the prompt
cache on disk while they would cost more than IDLE_COST of the decode speed (`_trim_idle`). With
model.kv_unified false each slot has n_ctx cells of its own (a KV stream per sequence): no chat attends over
another's cells, nothing is cleared for room, and slots share no cells.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import EngineError
from ..reasoning import ReasoningSplitter
from .base import Delta, Event, Finished, Metrics, Reasoning
from .slot_cache import SlotCache, common_prefix

log = logging.getLogger("engine.batching")

# The most decode speed that idle slots' cells may cost; beyond it they go to disk, to be restored from there
# when their chat returns. Each cell costs every token about `cell_cost` of its work: attention reads it in
# every layer (4 * n_embd flops per layer) against 2 flops per weight. Four idle chats of 300 tokens took a
# quarter off a fifth chat's speed on SmolLM2-135M (cell_cost 2.6e-4); on a 7B model (3.7e-5) the same
# cells would cost 4%.
IDLE_COST = 0.03


@dataclass
class Slot:
    seq_id: int
    kv: list[int] = field(default_factory=list)  # position i of this sequence holds kv[i]
    used_at: float = 0.0
    busy: bool = False
    label: str | None = None  # the chat whose tokens `kv` holds (its session id), for the status view


@dataclass
class Thinking:
    """One sequence's thought: the splitter that separates it, and its budget. At the budget the decode loop
    evaluates `close_tokens` (a note and the closing tag, then the reply prefix if any) as if the model had
    written them.

    `prefix`: a reply prefix that belongs after the thought. When the model closes its thought itself, the
    loop evaluates `prefix_tokens` (a separator and the prefix), or `prefix_bare_tokens` when the model
    already wrote the separator, so the answer continues the prefix. The prefix is never emitted: the
    caller shows it (engine.conversation), as it does for a prefix in the prompt."""

    splitter: ReasoningSplitter
    budget: int | None = None
    close_tokens: list[int] = field(default_factory=list)
    close_text: str = ""
    tokens: int = 0  # tokens sampled while inside the thought
    injected: bool = False
    prefix: str = ""
    prefix_tokens: list[int] = field(default_factory=list)
    prefix_bare_tokens: list[int] = field(default_factory=list)
    prefixed: bool = False

    @property
    def reserve(self) -> int:
        """KV cells the loop may fill with tokens the model did not sample."""
        return max(len(self.close_tokens), len(self.prefix_tokens))

    def prefix_due(self, was_thinking: bool) -> bool:
        """The thought has just closed and the prefix is still to come."""
        return bool(self.prefix) and not self.prefixed and was_thinking and not self.splitter.in_thought

    def due(self) -> bool:
        return (
            self.budget is not None
            and not self.injected
            and self.splitter.in_thought
            and self.tokens >= self.budget
        )


class Sequence:
    """One request's generation state."""

    def __init__(
        self,
        tokens: list[int],
        *,
        stops: list[str],
        max_tokens: int,
        sampler: Any,
        cancel: threading.Event,
        emit: Callable[[Event | BaseException | None], None],
        started: float,
        n_ctx: int,
        label: str | None = None,
        thinking: Thinking | None = None,
        greedy: bool = False,
    ) -> None:
        self.tokens, self.stops, self.max_tokens = tokens, stops, max_tokens
        # the sampler chain would only take the highest logit (temperature 0, no grammar, neutral
        # penalties): the loop takes it itself, without the chain's copy of the whole vocabulary
        self.greedy = greedy
        self.thinking = thinking
        self.prompt_len, self.injected = len(tokens), 0
        self.answer_at = 0.0  # when the first answer text was sent
        self.sampler, self.cancel, self.emit, self.started = sampler, cancel, emit, started
        self.halt = threading.Event()  # the consumer went away
        self.label = label
        self.slot: Slot | None = None
        self.pos = 0  # the next prompt token to evaluate
        self.logits_at = -1  # this step's batch index whose logits we sample, or -1
        self.next_token: int | None = None  # sampled, to be evaluated in the next step
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text, self.sent, self.n_out = "", 0, 0
        self.first_at = self.last_at = 0.0
        self.metrics = Metrics(prompt_tokens=len(tokens), context_size=n_ctx)

    def stopped(self) -> bool:
        return self.cancel.is_set() or self.halt.is_set()

    @property
    def need(self) -> int:
        """KV cells this sequence may still fill."""
        return len(self.tokens) + self.max_tokens


class Batch:
    """A llama_batch over arrays this object owns (one sequence id per token)."""

    def __init__(self, lib: Any, capacity: int) -> None:
        self.capacity = capacity
        self.token = (lib.llama_token * capacity)()
        self.pos = (lib.llama_pos * capacity)()
        self.n_seq_id = (ctypes.c_int32 * capacity)(*([1] * capacity))
        self.seq_ids = (lib.llama_seq_id * capacity)()
        ptr = ctypes.POINTER(lib.llama_seq_id)
        base, size = ctypes.addressof(self.seq_ids), ctypes.sizeof(lib.llama_seq_id)
        self.seq_ptrs = (ptr * capacity)(*(ctypes.cast(base + i * size, ptr) for i in range(capacity)))
        self.logits = (ctypes.c_int8 * capacity)()
        self.batch = lib.llama_batch()
        self.batch.token = self.token
        self.batch.embd = None
        self.batch.pos = self.pos
        self.batch.n_seq_id = self.n_seq_id
        self.batch.seq_id = self.seq_ptrs
        self.batch.logits = self.logits
        self.n = 0

    def add(self, token: int, pos: int, seq_id: int, logits: bool) -> int:
        i = self.n
        self.token[i], self.pos[i], self.seq_ids[i], self.logits[i] = token, pos, seq_id, logits
        self.n = i + 1
        return i


class Scheduler:
    """The decode thread: admits sequences into slots and runs batched steps until each one ends.

    `piece(token)` gives a token's bytes (None for end of generation); `decode_failed(rc)` turns a
    llama_decode error into an EngineError after the caller's cache bookkeeping.
    """

    def __init__(
        self,
        lib: Any,
        ctx: Any,
        *,
        parallel: int,
        n_ctx: int,
        n_batch: int,
        piece: Callable[[int], bytes | None],
        name: str,
        cache: SlotCache | None = None,
        cell_cost: float = 0.0,
        n_vocab: int = 0,
        unified: bool = True,
    ) -> None:
        self.lib, self.ctx, self.n_ctx, self.n_batch = lib, ctx, n_ctx, max(1, n_batch)
        self.n_vocab = n_vocab
        # unified: the slots share n_ctx cells; else each has n_ctx cells of its own (model.kv_unified)
        self.unified = unified
        self.piece, self.cache, self.cell_cost = piece, cache, cell_cost
        self.slots = [Slot(i) for i in range(parallel)]
        self.batch = Batch(lib, self.n_batch + parallel)
        self._waiting: list[Sequence] = []
        self._active: list[Sequence] = []
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- the caller's side -----------------------------------------------------------------------

    def submit(self, seq: Sequence) -> None:
        with self._cond:
            if self._closing:
                raise EngineError("The model is shutting down.")
            self._waiting.append(seq)
            self._cond.notify_all()

    def status(self) -> list[dict[str, Any]]:
        with self._cond:
            return [
                {"id": s.seq_id, "busy": s.busy, "chat": s.label, "cached_tokens": len(s.kv)}
                for s in self.slots
            ]

    def close(self) -> None:
        """Cancel every sequence, let the thread finish its step, then return (the model can be freed)."""
        with self._cond:
            self._closing = True
            for seq in self._waiting + self._active:
                seq.halt.set()
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(30)
        if self.cache is not None and not self._thread.is_alive():
            for slot in self.slots:
                self._save(slot)
            self.cache.flush()

    def _save(self, slot: Slot) -> None:
        if self.cache is not None and slot.kv:
            try:
                self.cache.save(slot.seq_id, slot.kv)
            except OSError as exc:  # a full disk costs the cache, never the reply
                log.warning("could not save slot %d to the prompt cache: %s", slot.seq_id, exc)

    # --- the decode thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._active and not self._waiting:
                    self._decoding(False)
                while not self._closing and not self._active and not self._waiting:
                    self._cond.wait()
                if self._closing and not self._active and not self._waiting:
                    return
                self._decoding(True)
                self._admit()
            if self._active:
                try:
                    self._step()
                except BaseException as exc:  # a failed decode: every sequence in it ends with the error
                    for seq in list(self._active):
                        self._end(seq, exc)
            elif self._waiting:
                with self._cond:
                    self._cond.wait(0.01)  # room frees up only when an active sequence ends

    def _decoding(self, busy: bool) -> None:
        """Tell the prompt cache when decoding starts and stops: it writes saved states in between."""
        if self.cache is not None and busy != self._busy:
            self.cache.decoding(busy)
        self._busy = busy

    def _admit(self) -> None:
        """Move waiting sequences into free slots while the KV cache has room (called under the lock)."""
        while self._waiting:
            seq = self._waiting[0]
            if seq.stopped():
                self._waiting.pop(0)
                self._finish(seq, "cancelled")
                continue
            free = [s for s in self.slots if not s.busy]
            if not free:
                return
            best = max(free, key=lambda s: (common_prefix(s.kv, seq.tokens), -s.used_at))
            shared = min(common_prefix(best.kv, seq.tokens), len(seq.tokens) - 1)
            own = shared == len(best.kv)  # the chat's own slot: everything it holds is reused
            slot = best if own else min(free, key=self._fresh_slot_order)
            if not self._make_room(seq, slot):
                return
            self._waiting.pop(0)
            if slot.kv and common_prefix(slot.kv, seq.tokens) < len(slot.kv):
                self._save(slot)  # another chat's context: to disk before it is overwritten, for its return
            if not self._restore(seq, slot, shared) and slot is not best and shared > 0 and self.unified:
                self._share(best, slot, shared)  # another chat's prefix (a system prompt): share its cells
            self._place(seq, slot)
            self._trim_idle()

    def _fresh_slot_order(self, slot: Slot) -> tuple[bool, int, float]:
        """Which free slot a chat that holds none takes: an empty one first, then (with a KV stream per slot)
        one next to the busy ones, then the least recently used. llama.cpp evaluates the streams of a batch
        in runs of consecutive sequence ids, each run a pass over the weights of its own: two chats in slots
        0 and 2 took 11.3 ms a step, in slots 0 and 1 9.1 ms (SmolLM2-135M, 2 threads)."""
        runs = 0
        if not self.unified:
            busy = [s.busy or s is slot for s in self.slots]
            runs = sum(1 for i, b in enumerate(busy) if b and (i == 0 or not busy[i - 1]))
        return bool(slot.kv), runs, slot.used_at

    def _trim_idle(self) -> None:
        """Save idle slots to the prompt cache and clear them, least recently used first, while their cells
        would cost more than IDLE_COST of the decode speed. Without the disk cache they stay."""
        if self.cache is None or self.cell_cost <= 0 or not self.unified:
            return
        idle = sorted((s for s in self.slots if not s.busy and s.kv), key=lambda s: s.used_at)
        held = sum(len(s.kv) for s in idle)
        for slot in idle:
            if held * self.cell_cost <= IDLE_COST:
                break
            held -= len(slot.kv)
            self._save(slot)
            self._clear(slot)

    def _make_room(self, seq: Sequence, slot: Slot) -> bool:
        """Clear idle slots, least recently used first, until `seq` fits beside the running ones."""
        if not self.unified:
            return True  # its slot has n_ctx cells of its own, and the prompt was fitted to them

        def used() -> int:
            running = sum(max(len(a.slot.kv), a.need) for a in self._active if a.slot)
            idle = sum(len(s.kv) for s in self.slots if not s.busy and s is not slot)
            return running + idle + seq.need

        for idle in sorted(
            (s for s in self.slots if not s.busy and s is not slot and s.kv), key=lambda s: s.used_at
        ):
            if used() <= self.n_ctx:
                break
            self._save(idle)
            self._clear(idle)
        return used() <= self.n_ctx or not self._active

    def _restore(self, seq: Sequence, slot: Slot, shared: int) -> bool:
        """Load a saved state from disk into `slot` when it covers more of the prompt than memory does."""
        found = self.cache.best(seq.tokens) if self.cache is not None else None
        if found is None or found[1] <= max(shared, common_prefix(slot.kv, seq.tokens)):
            return False
        self._save(slot)
        self._clear(slot)
        assert self.cache is not None
        tokens = self.cache.load(found[0], slot.seq_id)
        if tokens is None:
            return False
        slot.kv = list(tokens)
        return True

    def _share(self, source: Slot, target: Slot, n: int) -> None:
        """Give `target` the first n cached tokens of `source` without evaluating them (a unified KV cache
        lets two sequences share cells; separate ones copy only whole caches); `source` keeps its own."""
        self._clear(target)
        self.lib.llama_memory_seq_cp(self.lib.llama_get_memory(self.ctx), source.seq_id, target.seq_id, 0, n)
        target.kv = source.kv[:n]

    def _clear(self, slot: Slot, start: int = 0) -> None:
        mem = self.lib.llama_get_memory(self.ctx)
        if not self.lib.llama_memory_seq_rm(mem, slot.seq_id, start, -1):
            self.lib.llama_memory_seq_rm(mem, slot.seq_id, 0, -1)  # recurrent models: start over
            start = 0
        del slot.kv[start:]
        if not slot.kv:
            slot.label = None

    def _place(self, seq: Sequence, slot: Slot) -> None:
        n = min(common_prefix(slot.kv, seq.tokens), len(seq.tokens) - 1)  # the last token is always evaluated
        if n < len(slot.kv):
            self._clear(slot, n)
            n = len(slot.kv)
        slot.busy, slot.label, slot.used_at = True, seq.label, time.monotonic()
        seq.slot, seq.pos = slot, n
        seq.metrics.prompt_eval_tokens = len(seq.tokens) - n
        self._active.append(seq)

    def _step(self) -> None:
        lib, batch = self.lib, self.batch
        stepping = self._fill()
        if batch.n == 0:
            return
        batch.batch.n_tokens = batch.n
        rc = lib.llama_decode(self.ctx, batch.batch)
        if rc != 0:
            for slot in self.slots:
                if slot.busy:
                    self._clear(slot)
            raise EngineError(f"The model failed to evaluate the prompt (llama_decode returned {rc}).")
        sample, clock = lib.llama_sampler_sample, time.perf_counter
        for seq in stepping:
            if seq.greedy and self.n_vocab:
                token = self._argmax(seq.logits_at)
            else:
                token = sample(seq.sampler.sampler, self.ctx, seq.logits_at)
            seq.logits_at = -1
            seq.last_at = clock()
            if seq.n_out == 0:
                seq.first_at = seq.last_at
            self._take(seq, token)

    def _fill(self) -> list[Sequence]:
        """Put the next token of every generating sequence, then prompt chunks up to n_batch tokens, into the
        batch, in slot order; return the sequences to sample after the decode. With a KV stream per slot
        (kv_unified false) llama.cpp cuts the batch wherever the next token's sequence id is not the last
        one plus 1: in admission order, 8 slots could take 8 passes over the weights instead of one."""
        plan: list[tuple[Sequence, list[int], bool]] = []  # (sequence, tokens, logits at the last one)
        for seq in list(self._active):
            if seq.stopped():
                self._end(seq, "cancelled")
            elif seq.next_token is not None:
                plan.append((seq, [seq.next_token], True))
                seq.next_token = None
        budget = self.n_batch
        for seq in self._active:
            if seq.pos >= len(seq.tokens) or seq.stopped() or budget <= 0:
                continue
            chunk = seq.tokens[seq.pos : seq.pos + budget]
            seq.pos += len(chunk)
            budget -= len(chunk)
            plan.append((seq, chunk, seq.pos >= len(seq.tokens)))  # logits only after the prompt's end
        batch, stepping = self.batch, []
        batch.n = 0
        for seq, tokens, sample in sorted(plan, key=lambda p: p[0].slot.seq_id if p[0].slot else -1):
            slot = seq.slot
            assert slot is not None
            for k, token in enumerate(tokens):
                last = sample and k == len(tokens) - 1
                i = batch.add(token, len(slot.kv), slot.seq_id, last)
                slot.kv.append(token)
                if last:
                    seq.logits_at = i
                    stepping.append(seq)
        return stepping

    def _argmax(self, i: int) -> int:
        """The token with the highest logit at batch index i; the first of equals, as llama.cpp's greedy
        sampler picks."""
        logits = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
        return int(logits.argmax())

    def _take(self, seq: Sequence, token: int) -> None:
        """Detokenise one sampled token; end the sequence on EOG, a stop string or max_tokens."""
        piece = self.piece(token)
        if piece is None:
            return self._end(seq, "stop")
        seq.n_out += 1
        th = seq.thinking
        was_thinking = th is not None and th.splitter.in_thought
        chunk = seq.decoder.decode(piece)
        if chunk:
            seq.text += chunk
            if seq.stops:
                cut = find_stop(seq.text, seq.stops, seq.sent)
                if cut is not None:
                    seq.text = seq.text[:cut]
                    return self._end(seq, "stop", flush=False)
                safe = safe_end(seq.text, seq.stops, seq.sent)
            else:
                safe = len(seq.text)
            if safe > seq.sent:
                self._send(seq, seq.text[seq.sent : safe])
                seq.sent = safe
        if th is not None and (was_thinking or th.splitter.in_thought):
            th.tokens += 1
        if seq.n_out >= seq.max_tokens:
            return self._end(seq, "length")
        if th is not None and th.due():
            return self._inject(seq, token, th)
        if th is not None and th.prefix_due(was_thinking):
            return self._inject_prefix(seq, token, th)
        seq.next_token = token
        return None

    def _send(self, seq: Sequence, text: str) -> None:
        """Emit decoded text: through the reasoning splitter when the sequence has one."""
        parts = [("answer", text)] if seq.thinking is None else seq.thinking.splitter.feed(text)
        for part, piece in parts:
            if part == "reasoning":
                seq.emit(Reasoning(piece))
            else:
                seq.answer_at = seq.answer_at or time.perf_counter()
                seq.emit(Delta(piece))

    def _inject(self, seq: Sequence, token: int, th: Thinking) -> None:
        """The thinking budget is spent: evaluate the sampled token, then the note and the closing tag, as a
        prompt chunk; the answer is sampled after them."""
        th.injected = True
        seq.tokens.extend([token, *th.close_tokens])
        seq.injected += len(th.close_tokens)
        seq.text += th.close_text
        self._send(seq, seq.text[seq.sent :])
        seq.sent = len(seq.text)
        if th.prefix and not th.prefixed:  # close_tokens end with the prefix
            self._prefixed(seq, th, th.prefix)

    def _inject_prefix(self, seq: Sequence, token: int, th: Thinking) -> None:
        """The model closed its thought: evaluate the token that closed it, then the reply prefix (after
        the separator, unless the model wrote one), as a prompt chunk; the answer continues the prefix."""
        if len(seq.text) > seq.sent:
            self._send(seq, seq.text[seq.sent :])
        wrote_separator = seq.text.endswith(("\n", " "))
        tokens = th.prefix_bare_tokens if wrote_separator else th.prefix_tokens
        seq.tokens.extend([token, *tokens])
        seq.injected += len(tokens)
        self._prefixed(seq, th, th.prefix)

    def _prefixed(self, seq: Sequence, th: Thinking, text: str) -> None:
        th.prefixed = True
        seq.text += text  # not sent: the caller shows the prefix itself
        seq.sent = len(seq.text)
        th.splitter.answered_with(text)

    def _end(self, seq: Sequence, reason: str | BaseException, *, flush: bool = True) -> None:
        with self._cond:
            if seq in self._active:
                self._active.remove(seq)
            if seq.slot is not None:
                seq.slot.busy, seq.slot.used_at = False, time.monotonic()
        if isinstance(reason, BaseException):
            seq.sampler.close()
            seq.emit(reason)
            seq.emit(None)
            return
        if flush and reason != "cancelled":
            seq.text += seq.decoder.decode(b"", final=True)
        if len(seq.text) > seq.sent and reason != "cancelled":
            self._send(seq, seq.text[seq.sent :])
        if seq.thinking is not None and reason != "cancelled":
            for part, piece in seq.thinking.splitter.flush():
                seq.emit(Reasoning(piece) if part == "reasoning" else Delta(piece))
        self._finish(seq, reason)

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.sampler.close()
        m = seq.metrics
        m.completion_tokens = seq.n_out
        m.context_used = seq.prompt_len + seq.n_out + seq.injected
        m.total_ms = round((time.perf_counter() - seq.started) * 1000, 1)
        if seq.first_at:
            m.ttft_ms = round((seq.first_at - seq.started) * 1000, 1)
            if seq.n_out > 1 and seq.last_at > seq.first_at:
                m.tokens_per_s = round((seq.n_out - 1) / (seq.last_at - seq.first_at), 2)
        if seq.answer_at:
            m.answer_ttft_ms = round((seq.answer_at - seq.started) * 1000, 1)
        th = seq.thinking
        if th is not None:
            m.reasoning_tokens = th.tokens
            m.reasoning_unclosed = th.splitter.unclosed and th.splitter.opened
            if th.tokens and seq.first_at:
                end = seq.answer_at or seq.last_at or time.perf_counter()
                m.reasoning_ms = round(max(0.0, end - seq.first_at) * 1000, 1)
        seq.emit(Finished(reason, m))
        seq.emit(None)


def find_stop(text: str, stops: list[str], sent: int) -> int | None:
    """Index where the first stop string starts, searching only text that could hold a new match."""
    best: int | None = None
    for s in stops:
        i = text.find(s, max(0, sent - len(s)))
        if i != -1 and (best is None or i < best):
            best = i
    return best


def safe_end(text: str, stops: list[str], sent: int) -> int:
    """How much of `text` can be sent: all but a tail that could still grow into a stop string."""
    end = len(text)
    for s in stops:
        i = text.find(s[0], max(sent, len(text) - len(s) + 1))
        while i != -1 and i < end:
            if s.startswith(text[i:]):
                end = i
                break
            i = text.find(s[0], i + 1)
    return end
