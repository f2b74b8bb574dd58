"""A scripted backend for fast tests of the `Turn` logic, the API's error paths and the UI's handlers.

Like llm's MockModel: `enqueue` the next replies, run turns, then read `prompts` for exactly what the model
was sent. It never stands in for the real-model tests; it makes the logic around them quick to test.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine import Delta, Finished, Message, Metrics, Reasoning, Runtime, SamplingParams, load_settings
from engine.backends.base import Event


class ScriptedBackend:
    name = "scripted"
    serialised = True
    parallel = 1

    def __init__(self, n_ctx: int = 4096) -> None:
        self.n_ctx = n_ctx
        self.script: deque[tuple[list[str], list[str], str]] = deque()
        self.prompts: list[list[Message]] = []
        self.params: list[SamplingParams] = []
        self.tools: list[dict[str, Any]] = []  # each reply's tools, tool_choice and parallel_tool_calls
        self.labels: list[str | None] = []  # each reply's label: its chat's session id, or None
        self.gate: threading.Event | None = None  # when set to an Event, each reply waits for it first

    def enqueue(self, *chunks: str, reasoning: tuple[str, ...] = (), finish: str = "stop") -> None:
        """The next reply: its text in these chunks (one Delta each), after its thought, if any."""
        self.script.append((list(chunks), list(reasoning), finish))

    def model_info(self) -> dict[str, Any]:
        return {
            "name": "scripted",
            "path": None,
            "n_ctx": self.n_ctx,
            "backend": self.name,
            "tool_call_format": "json",  # a reply that is one JSON object {"name", "arguments"} is a call
        }

    def health(self) -> dict[str, Any]:
        return {"ok": True}

    def count_tokens(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> int | None:
        return sum(4 + len(str(m["content"]).split()) for m in messages) + 10 * len(tools or [])

    def context_size(self) -> int | None:
        return self.n_ctx

    def stream(
        self,
        messages: list[Message],
        params: SamplingParams,
        cancel: threading.Event,
        *,
        label: str | None = None,
        **tools: Any,
    ) -> Iterator[Event]:
        self.prompts.append([dict(m) for m in messages])
        self.params.append(params)
        self.tools.append(tools)
        self.labels.append(label)
        chunks, thought, finish = self.script.popleft() if self.script else (["ok"], [], "stop")
        if self.gate is not None:
            while not self.gate.wait(0.01):
                if cancel.is_set():
                    yield Finished("cancelled")
                    return
        for text in thought:
            yield Reasoning(text)
        sent = 0
        for text in chunks:
            if cancel.is_set():
                yield Finished("cancelled", Metrics(completion_tokens=sent))
                return
            sent += 1
            yield Delta(text)
        prompt = self.count_tokens(messages)
        yield Finished(
            finish, Metrics(prompt_tokens=prompt, prompt_eval_tokens=prompt, completion_tokens=sent)
        )

    def close(self) -> None:
        pass


def scripted_runtime(data_dir: Path, backend: ScriptedBackend | None = None, **config: Any) -> Runtime:
    """A Runtime on `data_dir` whose model is a ScriptedBackend (`rt.engine.backend`)."""
    settings, _ = load_settings(environ={}, overrides={"data_dir": str(data_dir), **config})
    rt = Runtime(settings, load=False)
    rt.engine.replace_backend(backend or ScriptedBackend())
    return rt


@contextlib.contextmanager
def scripted_client(rt: Runtime) -> Iterator[Any]:
    """The whole app (create_app: /api, /v1 and the UI) on `rt`, as a TestClient on loopback."""
    from fastapi.testclient import TestClient

    from webui.app import create_app

    with TestClient(create_app(rt.settings, runtime=rt), base_url="http://127.0.0.1") as client:
        yield client
