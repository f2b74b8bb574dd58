"""The chat template's text for a list of messages, rendered in this process from the GGUF file's own
template, as the model worker renders it (a sandboxed Jinja environment with the same variables), so a
preview can show the prompt without asking the worker. Token counts still come from the worker."""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("engine.template_text")
Message = dict[str, str]


@functools.lru_cache(maxsize=8)
def _template(path: str, mtime_ns: int) -> tuple[str | None, str, str]:
    """(chat template, bos token text, eos token text) from the GGUF metadata."""
    import gguf

    reader = gguf.GGUFReader(path)

    def field(name: str) -> Any:
        f = reader.fields.get(name)
        return f.parts[f.data[0]] if f is not None and f.data else None

    raw = field("tokenizer.chat_template")
    template = bytes(raw).decode("utf-8", "replace") if raw is not None else None
    tokens = reader.fields.get("tokenizer.ggml.tokens")

    def token_text(id_field: str) -> str:
        value = field(id_field)
        if value is None or tokens is None:
            return ""
        index = int(value[0])
        if not 0 <= index < len(tokens.data):
            return ""
        return bytes(tokens.parts[tokens.data[index]]).decode("utf-8", "replace")

    return template, token_text("tokenizer.ggml.bos_token_id"), token_text("tokenizer.ggml.eos_token_id")


def render_text(path: str | Path, messages: list[Message]) -> str | None:
    """The prompt text for `messages` with the model file's chat template (ChatML when it has none), a
    trailing assistant message continued as the worker does; None when the file cannot be read."""
    from jinja2 import BaseLoader
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        p = Path(path)
        template, bos, eos = _template(str(p), p.stat().st_mtime_ns)
    except Exception as exc:  # an unreadable file: the caller shows a plain transcript
        log.info("no template text for %s: %s", path, exc)
        return None
    prefill = ""
    if len(messages) > 1 and messages[-1]["role"] == "assistant":
        prefill, messages = messages[-1]["content"], messages[:-1]
    if not template:
        body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return body + "<|im_start|>assistant\n" + prefill

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(loader=BaseLoader(), trim_blocks=True, lstrip_blocks=True)
    try:
        text = env.from_string(template).render(
            messages=messages,
            bos_token=bos,
            eos_token=eos,
            add_generation_prompt=True,
            raise_exception=raise_exception,
            strftime_now=lambda fmt: datetime.now().strftime(fmt),
        )
    except Exception as exc:  # the template rejects these messages; the turn itself will say so
        log.info("template render failed: %s", exc)
        return None
    return text + prefill
