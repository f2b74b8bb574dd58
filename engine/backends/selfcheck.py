"""Setup's check of what it built: `python -m engine.backends.selfcheck [MODEL]`.

Loads the model in a worker process and decodes a few tokens, first with llama.cpp's weight repacking on,
then (if that crashed) with it off. Prints the CPU features llama.cpp reports and whether repacking is safe
here; a crash is remembered under the data dir, so `make run` starts in safe mode without crashing first.
Exits 1 only when the model cannot decode at all.
"""

from __future__ import annotations

import sys
import threading

from ..config import Settings, load_settings
from ..errors import EngineError
from ..params import parse_params
from .base import Delta
from .worker_client import WorkerBackend


def decode_once(settings: Settings, repack: bool) -> tuple[str, dict[str, object]]:
    model = settings.model.model_copy(update={"repack": repack})
    backend = WorkerBackend(model, settings.model_path, data_dir=None, policy=settings.worker)
    try:
        params = parse_params({"max_tokens": 4, "temperature": 0})
        events = backend.stream([{"role": "user", "content": "Hello"}], params, threading.Event())
        text = "".join(e.text for e in events if isinstance(e, Delta))
        return text, backend.model_info()
    finally:
        backend.close()


def main(argv: list[str]) -> int:
    overrides = {"model": {"path": argv[0]}} if argv else None
    settings, _ = load_settings(overrides=overrides)
    try:
        text, info = decode_once(settings, repack=True)
        verdict = "weight repacking is safe on this machine"
    except EngineError as exc:
        print(f"selfcheck: with weight repacking on: {exc.message}")
        if "crashed" in exc.message:
            from .safe_mode import SafeModeMemory

            SafeModeMemory(settings.data_path).remember(
                settings.model_path, "setup's selfcheck crashed with weight repacking on"
            )
        try:
            text, info = decode_once(settings, repack=False)
        except EngineError as again:
            print(f"selfcheck: FAILED, the model cannot decode here: {again.message}")
            return 1
        verdict = "weight repacking CRASHES on this machine: model.repack auto keeps it off"
    print(f"selfcheck: llama.cpp system info: {info.get('system_info')}")
    print(f"selfcheck: decoded {text!r} with {info.get('name')}; {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
