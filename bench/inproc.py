"""The in-process rows, each kind in a fresh process of its own, driven over stdin/stdout.

python -m bench.inproc raw|ours|worker MODEL THREADS N_CTX  (then one JSON request per line)

llama.cpp's CPU backend gives every thread that decodes its own OpenMP team. Two models decoding from two
threads of one process make libgomp manage more threads than there are cores, and it then sleeps at its
barriers instead of spinning: both get slower. So the raw baseline gets a process to itself, as every
server does, and the figures compare like with like.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from . import clients
from .clients import Message, Sample


def _formatter(llm: Any) -> Any:
    from llama_cpp import llama_chat_format as fmt

    eos, bos = llm.token_eos(), llm.token_bos()
    return fmt.Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
    )


def serve(kind: str, model: str, threads: int, n_ctx: int) -> None:
    from .probe import our_backend, our_worker, raw_llama

    if kind == "raw":
        llm = raw_llama(model, threads, n_ctx)
        formatter = _formatter(llm)

        def run(req: dict[str, Any]) -> Sample:
            if req["how"] == "chat":
                return clients.raw_chat(llm, req["messages"], req["p"])
            return clients.raw_generate(llm, formatter, req["messages"], req["p"])

    else:
        from engine.chat import Engine

        backend = our_worker if kind == "worker" else our_backend
        engine = Engine(backend(model, threads, n_ctx))

        def run(req: dict[str, Any]) -> Sample:
            return clients.engine_stream(engine, req["messages"], req["p"])

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            out: dict[str, Any] = run(json.loads(line)).to_dict()
        except Exception as exc:  # reported to the bench, which raises it there
            out = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)


class Worker:
    """The parent's handle on one such process."""

    def __init__(self, kind: str, model: str, threads: int, n_ctx: int) -> None:
        cmd = [sys.executable, "-m", "bench.inproc", kind, model, str(threads), str(n_ctx)]
        from .servers import ROOT

        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()  # {"ready": true} once the model is loaded

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench.inproc worker exited with {self.proc.wait()}")
        return dict(json.loads(line))

    def run(self, messages: list[Message], p: dict[str, Any], how: str = "generate") -> Sample:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"messages": messages, "p": p, "how": how}) + "\n")
        self.proc.stdin.flush()
        out = self._read()
        if "error" in out:
            raise RuntimeError(out["error"])
        return Sample(**out)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
