"""Embedded backend: one GGUF model in this process, driven through llama-cpp-python's token API.

We render the chat template ourselves, feed tokens to `Llama.generate` (which reuses the KV cache for
the longest common prefix), and detokenise incrementally. That skips `create_chat_completion`'s
per-token re-detokenisation of the whole reply.
"""

from __future__ import annotations

import codecs
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import ModelSettings
from ..errors import InvalidInput, ModelUnavailable
from ..params import SamplingParams
from .base import Delta, Event, Finished, Message, Metrics

log = logging.getLogger("engine.llama_cpp")

_GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30}


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelUnavailable(f"llama-cpp-python is not installed or failed to load: {exc}") from None
    return llama_cpp


def supports_gpu_offload() -> bool:
    return bool(_import_llama().llama_supports_gpu_offload())


class LlamaCppBackend:
    name = "llama_cpp"
    serialised = True

    def __init__(self, settings: ModelSettings, model_path: Path, *, gpu_required: bool = False) -> None:
        llama_cpp = _import_llama()
        self.settings = settings
        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelUnavailable(
                f"Model file not found: {self.path}. Put a GGUF file in models/ and set model.path "
                "in config/model_config.yaml (or pass --model)."
            )
        offload = bool(llama_cpp.llama_supports_gpu_offload())
        if gpu_required and (not offload or settings.n_gpu_layers == 0):
            why = "this llama-cpp-python build has no GPU support" if not offload else "model.n_gpu_layers is 0"
            raise ModelUnavailable(
                f"gpu.required is true but {why}, so inference would run on the CPU. "
                "Install a CUDA build of llama-cpp-python (make run with nvcc present) "
                "or set gpu.required: false."
            )
        threads = settings.n_threads or os.cpu_count() or 1
        started = time.perf_counter()
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=settings.n_ctx,
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
        log.info(
            "loaded %s in %.2fs (n_ctx=%d, n_gpu_layers=%d, threads=%d, gpu_offload=%s)",
            self.path.name,
            self.load_s,
            settings.n_ctx,
            settings.n_gpu_layers,
            threads,
            self.gpu_offload,
        )

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
            "load_s": round(self.load_s, 3),
        }

    def health(self) -> dict[str, Any]:
        return {"ok": True}

    def context_size(self) -> int:
        return int(self.llm.n_ctx())

    def render(self, messages: list[Message]) -> tuple[list[int], list[str]]:
        """Prompt tokens and template stop strings for `messages`.

        A trailing assistant message is continued: the rest is rendered with the generation prompt and
        the partial reply appended as is.
        """
        prefill = ""
        if len(messages) > 1 and messages[-1]["role"] == "assistant":
            prefill, messages = messages[-1]["content"], messages[:-1]
        try:
            result = self._formatter(messages=messages)
        except Exception as exc:  # a chat template may reject a message order
            raise InvalidInput(f"The model's chat template rejected these messages: {exc}") from None
        tokens = self.llm.tokenize(
            (result.prompt + prefill).encode("utf-8"), add_bos=not getattr(result, "added_special", False), special=True
        )
        stop = result.stop if isinstance(result.stop, list) else ([result.stop] if result.stop else [])
        return tokens, stop

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.render(messages)[0])

    def stream(self, messages: list[Message], params: SamplingParams, cancel: threading.Event) -> Iterator[Event]:
        started = time.perf_counter()
        tokens, template_stop = self.render(messages)
        n_ctx = self.context_size()
        if len(tokens) >= n_ctx:
            raise InvalidInput(
                f"The prompt is {len(tokens)} tokens but the context window is {n_ctx}. "
                "Shorten the system prompt or raise model.n_ctx."
            )
        max_tokens = min(params.max_tokens, n_ctx - len(tokens))
        grammar = self._grammar(params.grammar)
        self.llm.set_seed(params.seed if params.seed >= 0 else self._llama_cpp.LLAMA_DEFAULT_SEED)
        reused = self._cached_prefix(tokens)
        stops = [s for s in (*params.stop, *template_stop) if s]
        holdback = max((len(s) for s in stops), default=1) - 1
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        metrics = Metrics(prompt_tokens=len(tokens), prompt_eval_tokens=len(tokens) - reused, context_size=n_ctx)
        text, sent, n_out = "", 0, 0
        first_at = last_at = 0.0
        reason = "length"
        gen = self.llm.generate(
            tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            typical_p=params.typical_p,
            temp=params.temperature,
            repeat_penalty=params.repeat_penalty,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            mirostat_mode=params.mirostat_mode,
            mirostat_tau=params.mirostat_tau,
            mirostat_eta=params.mirostat_eta,
            grammar=grammar,
        )
        try:
            for token in gen:
                if cancel.is_set():
                    reason = "cancelled"
                    break
                last_at = time.perf_counter()
                if n_out == 0:
                    first_at = last_at
                if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    reason = "stop"
                    break
                n_out += 1
                text += decoder.decode(self.llm.detokenize([token]))
                cut = _find_stop(text, stops, sent)
                if cut is not None:
                    text, reason = text[:cut], "stop"
                    break
                safe = len(text) - holdback if stops else len(text)
                if safe > sent:
                    yield Delta(text[sent:safe])
                    sent = safe
                if n_out >= max_tokens:
                    break
        finally:
            gen.close()
        if reason != "cancelled":
            text += decoder.decode(b"", final=True)
        if len(text) > sent and reason != "cancelled":
            yield Delta(text[sent:])
        metrics.completion_tokens = n_out
        metrics.context_used = len(tokens) + n_out
        metrics.total_ms = round((time.perf_counter() - started) * 1000, 1)
        if first_at:
            metrics.ttft_ms = round((first_at - started) * 1000, 1)
            if n_out > 1 and last_at > first_at:
                metrics.tokens_per_s = round((n_out - 1) / (last_at - first_at), 2)
        yield Finished(reason, metrics)

    def _cached_prefix(self, tokens: list[int]) -> int:
        cached = self.llm._input_ids[: self.llm.n_tokens]
        n = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            n += 1
        # generate() replays the last prompt token when the whole prompt is cached
        return min(n, len(tokens) - 1)

    def _grammar(self, text: str) -> Any:
        if not text.strip():
            return None
        try:
            return self._llama_cpp.LlamaGrammar.from_string(text, verbose=False)
        except Exception as exc:
            raise InvalidInput(f"Invalid GBNF grammar: {exc}", field="grammar") from None

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()


def _find_stop(text: str, stops: list[str], sent: int) -> int | None:
    """Index where the first stop string starts, searching only text that could hold a new match."""
    best: int | None = None
    for s in stops:
        i = text.find(s, max(0, sent - len(s)))
        if i != -1 and (best is None or i < best):
            best = i
    return best
