"""Embedded backend: one GGUF model in this process, driven through llama.cpp's C API.

We render the chat template ourselves and run the decode loop directly on the context: `llama_decode`
with a one-token batch, llama.cpp's native sampler chain (`llama_sampler_sample`), and token pieces
cached per token id. No logits are copied into Python and nothing is re-detokenised, so the Python
work per token is a few dictionary lookups. The KV cache keeps the previous turn: a new prompt only
evaluates its suffix after the longest common prefix (the divergent tail is removed first).

Every decode runs on one long-lived thread per model. llama.cpp's CPU backend (built with OpenMP) gives
each calling thread its own team of worker threads and synchronises them with OpenMP barriers; once
libgomp manages more threads than there are cores it stops spin-waiting at those barriers and sleeps
instead, and every token pays for hundreds of wake-ups. Decoding on whatever thread the caller happens
to be on (a new one per request, or Gradio's worker pool) creates such teams; one thread keeps one team.
It also lets decoding run ahead of a consumer that is busy sending the previous piece.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from ..config import ModelSettings
from ..errors import InvalidInput, ModelUnavailable
from ..params import SamplingParams
from ..reasoning import ReasoningSplitter, detect_format, starts_in_thought, template_switch
from ..tools.formats import detect_call_format, template_renders_tools
from ..tools.prompt import history_for_template, with_tools
from .base import Event, Message
from .batching import Scheduler, Sequence, Thinking
from .repack import default_params_patch, repack_allowed
from .slot_cache import SlotCache, model_key
from .tool_grammar import Choice, Grammar, tool_grammar

log = logging.getLogger("engine.llama_cpp")

MEMO_MIN_CHARS = 4096  # prompts this long are remembered once tokenized (see _tokenize)
MEMO_PROMPTS = 4

_GGML_TYPES = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "iq4_nl": 20,
    "bf16": 30,
}


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelUnavailable(f"llama-cpp-python is not installed or failed to load: {exc}") from None
    return llama_cpp


_LLAMA_LOG: deque[str] = deque(maxlen=20)  # llama.cpp's latest warnings and errors (a grammar's parse error)
_log_callback: Any = None


def _capture_llama_log(llama_cpp: Any) -> None:
    """Route llama.cpp's log through here: warnings and errors are kept (to quote them to the user) and
    errors still go to stderr, as llama-cpp-python's own callback does when not verbose."""
    global _log_callback
    if _log_callback is not None:
        return

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: Any) -> None:
        if level in (2, 3, 5):  # warn, error, continuation
            line = text.decode("utf-8", "replace")
            _LLAMA_LOG.append(line)
            if level == 3:
                print(line, end="", file=sys.stderr, flush=True)

    _log_callback = callback  # keep a reference: llama.cpp holds only the C pointer
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


class LlamaCppBackend:
    name = "llama_cpp"
    serialised = True

    def __init__(
        self,
        settings: ModelSettings,
        model_path: Path,
        *,
        gpu_required: bool = False,
        cache_dir: Path | None = None,
    ) -> None:
        llama_cpp = _import_llama()
        _capture_llama_log(llama_cpp)
        self.settings = settings
        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelUnavailable(
                f"Model file not found: {self.path}. Put a GGUF file in models/ and set model.path "
                "in config/model_config.yaml (or pass --model)."
            )
        offload = bool(llama_cpp.llama_supports_gpu_offload())
        if gpu_required and (not offload or settings.n_gpu_layers == 0):
            why = (
                "this llama-cpp-python build has no GPU support" if not offload else "model.n_gpu_layers is 0"
            )
            raise ModelUnavailable(
                f"gpu.required is true but {why}, so inference would run on the CPU. "
                "Install a CUDA build of llama-cpp-python (make run with nvcc present) "
                "or set gpu.required: false."
            )
        threads = settings.n_threads or os.cpu_count() or 1
        self.repack, self.repack_reason = repack_allowed(settings.repack)
        started = time.perf_counter()
        try:
            with (
                default_params_patch(llama_cpp, "llama_model_default_params", use_extra_bufts=self.repack),
                default_params_patch(
                    llama_cpp,
                    "llama_context_default_params",
                    n_seq_max=settings.parallel,
                    kv_unified=settings.kv_unified,
                ),
            ):
                self.llm = self._load(llama_cpp, settings, threads)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelUnavailable(
                f"Could not load model {self.path.name}: {exc}. Is it a valid GGUF file for this "
                "llama.cpp version, and does it fit in memory (try a smaller n_ctx or n_gpu_layers)?"
            ) from None
        self.load_s = time.perf_counter() - started
        self.gpu_offload = offload and settings.n_gpu_layers != 0
        self._llama_cpp = llama_cpp
        self._vocab = self.llm._model.vocab
        self._formatter = self._make_formatter()
        self._template = self.llm.metadata.get("tokenizer.chat_template")
        self.reasoning_format = detect_format(self._template, settings.reasoning_format)
        self.thinking_switch = template_switch(self._template)  # the template reads enable_thinking
        self.tool_format = detect_call_format(self._template, settings.tool_call_format)
        self.renders_tools = template_renders_tools(self._template)  # else the tools go in the system prompt
        self._special_pieces = self.reasoning_format is not None and self.reasoning_format.name == "harmony"
        self._pieces: dict[int, bytes | None] = {}  # token id -> its bytes; None ends the generation
        # the last long prompts tokenized: a turn counts its prompt to fit it, then sends that same text
        self._tokenized: OrderedDict[tuple[str, bool], list[int]] = OrderedDict()
        self._tokenized_lock = threading.Lock()
        self._piece_buf = ctypes.create_string_buffer(256)
        self._scheduler = Scheduler(
            llama_cpp,
            self.llm.ctx,
            parallel=settings.parallel,
            n_ctx=self.context_size(),
            n_batch=self.llm.n_batch,
            piece=self._piece,
            name=f"llama-decode-{self.path.stem[:24]}",
            cache=self._slot_cache(cache_dir),
            cell_cost=self._cell_cost(),
            n_vocab=self.llm.n_vocab(),
            unified=settings.kv_streams == 1,
        )
        log.info(
            "loaded %s in %.2fs (n_ctx=%d, n_gpu_layers=%d, threads=%d, gpu_offload=%s, repack=%s: %s)",
            self.path.name,
            self.load_s,
            settings.n_ctx,
            settings.n_gpu_layers,
            threads,
            self.gpu_offload,
            self.repack,
            self.repack_reason,
        )

    def _load(self, llama_cpp: Any, settings: ModelSettings, threads: int) -> Any:
        return llama_cpp.Llama(
            model_path=str(self.path),
            n_ctx=settings.n_ctx * settings.kv_streams,  # llama.cpp splits it among the streams
            n_gpu_layers=settings.n_gpu_layers,
            n_batch=settings.n_batch,
            n_ubatch=settings.n_batch,
            n_threads=threads,
            n_threads_batch=threads,
            use_mmap=settings.use_mmap,
            use_mlock=settings.use_mlock,
            flash_attn=settings.flash_attn,
            type_k=_GGML_TYPES.get(settings.cache_type_k),
            type_v=_GGML_TYPES.get(settings.cache_type_v),
            seed=settings.seed if settings.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED,
            chat_format=settings.chat_format,
            verbose=False,
        )

    def _slot_cache(self, cache_dir: Path | None) -> SlotCache | None:
        """The prompt cache on disk for this model file and KV layout, when it is on."""
        s = self.settings
        if cache_dir is None or not s.slot_cache:
            return None
        try:
            key = model_key(self.path, s.cache_type_k, s.cache_type_v)
            return SlotCache(
                self._llama_cpp, self.llm.ctx, cache_dir / key, max_bytes=int(s.slot_cache_gb * 2**30)
            )
        except OSError as exc:
            log.warning("prompt cache off: %s", exc)
            return None

    def _make_formatter(self) -> Any:
        from llama_cpp import llama_chat_format as fmt

        template = self.llm.metadata.get("tokenizer.chat_template")
        if template and not self.settings.chat_format:
            eos, bos = self.llm.token_eos(), self.llm.token_bos()
            return fmt.Jinja2ChatFormatter(
                template=template,
                eos_token=self.llm._model.token_get_text(eos) if eos != -1 else "",
                bos_token=self.llm._model.token_get_text(bos) if bos != -1 else "",
            )
        return fmt.format_chatml  # no template in the file: ChatML, the most common format

    # --- contract -------------------------------------------------------------------------------

    def model_info(self) -> dict[str, Any]:
        meta = self.llm.metadata
        return {
            "name": self.path.name,
            "path": str(self.path),
            "size_bytes": self.path.stat().st_size if self.path.exists() else None,
            "architecture": meta.get("general.architecture"),
            "n_ctx": self.settings.n_ctx,
            "n_ctx_train": self.llm.n_ctx_train() if hasattr(self.llm, "n_ctx_train") else None,
            "n_gpu_layers": self.settings.n_gpu_layers,
            "n_layers": int(meta.get(f"{meta.get('general.architecture')}.block_count", 0)) or None,
            "gpu_offload": self.gpu_offload,
            "repack": self.repack,
            "parallel": self.settings.parallel,
            "reasoning_format": self.reasoning_format.name if self.reasoning_format else None,
            "thinking_switch": self.thinking_switch,
            "tool_call_format": self.tool_format.name,
            "template_renders_tools": self.renders_tools,
            "system_info": self._llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
            "load_s": round(self.load_s, 3),
        }

    def health(self) -> dict[str, Any]:
        return {"ok": True}

    def context_size(self) -> int:
        # llama.cpp rounds n_ctx up (to a multiple of 256) but the Llama object keeps the configured size
        # for its token buffer, which _sync_llama fills: the configured size is the usable window.
        window = min(int(self.llm.n_ctx()), len(self.llm.input_ids))
        return window // self.settings.kv_streams  # a chat's window: the whole cache, or its slot's

    def render(
        self, messages: list[Message], thinking: str = "auto", tools: list[dict[str, Any]] | None = None
    ) -> tuple[list[int], list[str]]:
        """Prompt tokens and template stop strings for `messages` (and the `tools` offered, if any)."""
        text, stop, added_special = self._render_text(messages, thinking, tools)
        return self._tokenize(text, add_bos=not added_special), stop

    def _render_text(
        self, messages: list[Message], thinking: str = "auto", tools: list[dict[str, Any]] | None = None
    ) -> tuple[str, list[str], bool]:
        """The rendered prompt (a trailing assistant message appended as is), the template's stop strings,
        and whether the template added BOS. See `_render_parts`."""
        prompt, prefill, stop, added_special = self._render_parts(messages, thinking, tools)
        return prompt + prefill, stop, added_special

    def _render_parts(
        self, messages: list[Message], thinking: str = "auto", tools: list[dict[str, Any]] | None = None
    ) -> tuple[str, str, list[str], bool]:
        """The rendered prompt, the partial reply to continue, the template's stop strings, and whether the
        template added BOS.

        A trailing assistant message is continued: the rest is rendered with the generation prompt, and
        the partial reply (a reply prefix) comes back apart, for `_thinking` to place. `thinking` on/off
        reaches templates that read enable_thinking. `tools` (OpenAI's shape) go through the template's
        `tools` variable, or into the system prompt.
        """
        prefill = ""
        if len(messages) > 1 and messages[-1]["role"] == "assistant":
            prefill, messages = messages[-1]["content"], messages[:-1]
        kwargs: dict[str, Any] = (
            {"enable_thinking": thinking == "on"} if thinking != "auto" and self.thinking_switch else {}
        )
        messages = history_for_template(messages, self.tool_format, template_renders=self.renders_tools)
        if tools:
            shown, extra = with_tools(messages, tools, self.tool_format, template_renders=self.renders_tools)
            messages = cast(list[Message], shown)
            kwargs.update(extra)
        try:
            result = self._formatter(messages=messages, **kwargs)
        except Exception as exc:  # a chat template may reject a message order
            raise InvalidInput(f"The model's chat template rejected these messages: {exc}") from None
        stop = result.stop if isinstance(result.stop, list) else ([result.stop] if result.stop else [])
        return result.prompt, prefill, stop, bool(getattr(result, "added_special", False))

    def _tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        """The tokens of `text`. A long text (a whole chat: milliseconds to tokenize) is remembered for a
        while, since fitting a chat to the context counts the very prompt that is then sent."""
        if len(text) < MEMO_MIN_CHARS:
            return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))
        key = (text, add_bos)
        with self._tokenized_lock:
            hit = self._tokenized.get(key)
            if hit is not None:
                self._tokenized.move_to_end(key)
                return list(hit)
        tokens = list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))
        with self._tokenized_lock:
            self._tokenized[key] = tokens
            while len(self._tokenized) > MEMO_PROMPTS:
                self._tokenized.popitem(last=False)
        return list(tokens)

    def _thinking(self, prompt: str, prefill: str, params: SamplingParams) -> tuple[str, Thinking | None]:
        """The prompt as sent, and the splitter and budget for one reply.

        A thought that must not happen (off without a template switch, or a budget of 0) and that the
        prompt already opened is closed in the prompt itself. A reply prefix (`prefill`) goes after the
        thought: at the end of the prompt when no thought is coming or the prompt closed it; otherwise the
        decode loop forces its tokens right after the model's closing tag (or after the budget's), so the
        model thinks first and its answer continues the prefix. A template that lets the model open the
        thought itself (Qwen3's, thinking not off) gets the thought opened in the prompt, so the prefix
        cannot come before it."""
        fmt = self.reasoning_format
        if fmt is None:
            return prompt + prefill, None
        budget = params.thinking_budget
        if params.thinking == "off" and not self.thinking_switch:
            budget = 0
        in_thought = starts_in_thought(fmt, prompt)
        if prefill and not in_thought and budget != 0 and self._model_opens_thought(prompt, params):
            prompt += fmt.open + "\n"
            in_thought = True
        if in_thought and budget == 0:
            prompt += fmt.close + "\n\n"
            in_thought = False
        after = prefill if in_thought else ""  # forced after the thought by the decode loop
        if not in_thought:
            prompt += prefill
        splitter = ReasoningSplitter(fmt, in_thought=in_thought)
        if prefill and not after:
            splitter.answered_with(prefill)  # the model continues it: keep its leading space
        sep = "\n\n" if fmt.name != "harmony" else ""
        note = "" if budget == 0 else f"\n{self.settings.thinking_budget_note}\n"
        close = note + fmt.close + sep
        return prompt, Thinking(
            splitter,
            budget=budget,
            close_tokens=self._tokenize(close + after) if budget is not None else [],
            close_text=close,
            prefix=after,
            prefix_tokens=self._tokenize(sep + after) if after else [],
            prefix_bare_tokens=self._tokenize(after) if after else [],
        )

    def _model_opens_thought(self, prompt: str, params: SamplingParams) -> bool:
        """A template that reads enable_thinking and leaves the thought to the model (Qwen3): with thinking
        not off and no closed thought in the generation prompt, the model is about to think."""
        fmt = self.reasoning_format
        return (
            fmt is not None
            and fmt.name != "harmony"
            and self.thinking_switch
            and params.thinking != "off"
            and not prompt.rstrip().endswith(fmt.close)
        )

    def count_tokens(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> int:
        return len(self.render(messages, tools=tools)[0])

    def stream(
        self,
        messages: list[Message],
        params: SamplingParams,
        cancel: threading.Event,
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Choice = "auto",
        parallel_tool_calls: bool = False,
        grammar: Grammar | None = None,
        label: str | None = None,
    ) -> Iterator[Event]:
        """Decode a reply (see submit() for the options)."""
        events: queue.SimpleQueue[Event | BaseException | None] = queue.SimpleQueue()
        seq = self.submit(
            messages,
            params,
            cancel,
            events.put,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            grammar=grammar,
            label=label,
        )
        ended = False
        try:
            while (item := events.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
            ended = True
        finally:
            if not ended:  # closed early or failed: wait for the sequence to end, so its slot is free
                seq.halt.set()
                while events.get() is not None:
                    pass

    def submit(
        self,
        messages: list[Message],
        params: SamplingParams,
        cancel: threading.Event,
        emit: Callable[[Event | BaseException | None], None],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Choice = "auto",
        parallel_tool_calls: bool = False,
        grammar: Grammar | None = None,
        label: str | None = None,
    ) -> Sequence:
        """Start decoding a reply: the decode thread calls `emit` with each event, an exception if it fails,
        and None at the end. Bad input raises here. `tools` (OpenAI's shape) are shown to the model and its
        calls constrained by a grammar from their schemas (engine/backends/tool_grammar.py): lazy for
        tool_choice "auto", from the first token for "required" or a named tool. `grammar` gives such a
        grammar directly. Either takes the place of `params.grammar`; the two cannot be used together.
        `label` names the chat: the slot that holds its tokens shows it (slots())."""
        started = time.perf_counter()
        if tools and tool_choice == "none":
            tools = None
        if tools and grammar is None:
            grammar = tool_grammar(tools, self.tool_format, choice=tool_choice, parallel=parallel_tool_calls)
        prompt, prefill, template_stop, added_special = self._render_parts(messages, params.thinking, tools)
        prompt, thinking = self._thinking(prompt, prefill, params)
        tokens = self._tokenize(prompt, add_bos=not added_special)
        reserve = thinking.reserve if thinking is not None else 0
        n_ctx = self.context_size()
        if len(tokens) >= n_ctx:
            raise InvalidInput(
                f"The prompt is {len(tokens)} tokens but the context window is {n_ctx}. "
                "Shorten the system prompt or raise model.n_ctx."
            )
        if grammar is not None and params.grammar.strip():
            raise InvalidInput("A grammar and tool calls cannot be used together.", field="grammar")
        grammar = grammar or self._grammar(params.grammar)
        seq = Sequence(
            tokens,
            stops=[s for s in (*params.stop, *template_stop) if s],
            max_tokens=max(1, min(params.max_tokens, n_ctx - len(tokens) - reserve)),
            sampler=self._sampler(params, grammar),
            greedy=grammar is None and is_plain_greedy(params),
            cancel=cancel,
            emit=emit,
            started=started,
            n_ctx=n_ctx,
            label=label,
            thinking=thinking,
        )
        self._scheduler.submit(seq)
        return seq

    def slots(self) -> list[dict[str, Any]]:
        return self._scheduler.status()

    def _piece(self, token: int) -> bytes | None:
        """The bytes of one token (None for end-of-generation tokens), cached: the vocabulary is fixed."""
        pieces = self._pieces
        if token in pieces:
            return pieces[token]
        lib = self._llama_cpp
        piece: bytes | None = None
        if not lib.llama_vocab_is_eog(self._vocab, token):
            buf = self._piece_buf
            special = self._special_pieces  # harmony's channel markers are special tokens
            n = lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
            piece = buf.raw[:n]
        self._pieces[token] = piece
        return piece

    def _sampler(self, params: SamplingParams, grammar: Grammar | None) -> Any:
        """llama.cpp's sampler chain, built exactly as `Llama.generate` builds it."""
        from llama_cpp._internals import LlamaSampler

        seed = params.seed if params.seed >= 0 else self._llama_cpp.LLAMA_DEFAULT_SEED
        s = LlamaSampler()
        s.add_penalties(
            n_vocab=self.llm.n_vocab(),
            penalty_last_n=self.llm.last_n_tokens_size,
            penalty_repeat=params.repeat_penalty,
            penalty_freq=params.frequency_penalty,
            penalty_present=params.presence_penalty,
        )
        if grammar is not None:
            sampler = self._grammar_sampler(grammar.gbnf, grammar.triggers)
            self._llama_cpp.llama_sampler_chain_add(s.sampler, sampler)
        if params.temperature == 0:
            s.add_greedy()
        elif params.mirostat_mode == 1:
            s.add_mirostat(self.llm.n_vocab(), seed, params.mirostat_tau, params.mirostat_eta, 100)
        elif params.mirostat_mode == 2:
            s.add_mirostat_v2(seed, params.mirostat_tau, params.mirostat_eta)
        else:
            s.add_top_k(params.top_k)
            s.add_typical(params.typical_p, 1)
            s.add_top_p(params.top_p, 1)
            s.add_min_p(params.min_p, 1)
            s.add_temp(params.temperature)
            s.add_dist(seed)
        return s

    def _grammar(self, text: str) -> Grammar | None:
        if not text.strip():
            return None
        self.check_grammar(text)
        return Grammar(text)

    def _grammar_sampler(self, text: str, triggers: tuple[str, ...] = ()) -> Any:
        """llama.cpp's grammar sampler for `text`; lazy (waiting for one of `triggers`, regular expressions)
        when there are triggers. It returns NULL for a grammar it rejects, and a NULL in the chain crashes
        the first sample: refuse it here, quoting llama.cpp's own parse error."""
        lib = self._llama_cpp
        _LLAMA_LOG.clear()
        if triggers:
            patterns = (ctypes.c_char_p * len(triggers))(*(t.encode("utf-8") for t in triggers))
            sampler = lib.llama_sampler_init_grammar_lazy_patterns(
                self._vocab, text.encode("utf-8"), b"root", patterns, len(triggers), None, 0
            )
        else:
            sampler = lib.llama_sampler_init_grammar(self._vocab, text.encode("utf-8"), b"root")
        if not sampler:
            why = (
                " ".join(line.strip() for line in _LLAMA_LOG if line.strip())
                or "llama.cpp could not parse it"
            )
            raise InvalidInput(f"Invalid GBNF grammar: {why}", field="grammar")
        return sampler

    def _cell_cost(self) -> float:
        """The share of a token's work that one more KV cell adds: attention over it in every layer
        (4 * n_embd flops each) against about 2 flops per weight."""
        lib, model = self._llama_cpp, self.llm.model
        params = lib.llama_model_n_params(model)
        return 2 * lib.llama_model_n_embd(model) * lib.llama_model_n_layer(model) / params if params else 0.0

    def check_grammar(self, text: str) -> None:
        """Raise InvalidInput unless llama.cpp accepts the GBNF grammar `text`."""
        if text.strip():
            self._llama_cpp.llama_sampler_free(self._grammar_sampler(text))

    def close(self) -> None:
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is not None:
            scheduler.close()  # every sequence ends before the context is freed
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()


def is_plain_greedy(params: SamplingParams) -> bool:
    """Temperature 0 with neutral penalties: the chain's pick is the highest logit, which the decode loop
    reads straight from the logits (see Sequence.greedy)."""
    return (
        params.temperature == 0
        and params.repeat_penalty == 1.0
        and params.frequency_penalty == 0
        and params.presence_penalty == 0
    )
