"""Rotating logs in <data-dir>/logs/: engine.log (load, settings, and every unexpected error, the web
server's too, with its traceback), requests.log (a line a turn)."""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path

REQUESTS = "engine.requests"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(data_dir: Path, level: str = "INFO") -> None:
    folder = Path(data_dir) / "logs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # the server still runs; the UI reports the unwritable data dir
    engine = logging.getLogger("engine")
    web = logging.getLogger("webui")
    requests = logging.getLogger(REQUESTS)
    for loggers, name in (((engine, web), "engine.log"), ((requests,), "requests.log")):
        path = folder / name
        if any(getattr(h, "baseFilename", None) == str(path) for h in loggers[0].handlers):
            continue
        handler = RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
        handler.setFormatter(logging.Formatter(_FORMAT))
        for logger in loggers:  # one handler per file, so rotation is not raced
            logger.addHandler(handler)
    engine.setLevel(level.upper())
    web.setLevel(logging.INFO)
    requests.setLevel(logging.INFO)
    requests.propagate = False
