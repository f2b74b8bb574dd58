"""Rotating logs in <data-dir>/logs/: engine.log (load, settings, errors), requests.log (a line a turn)."""

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
    requests = logging.getLogger(REQUESTS)
    for logger, name in ((engine, "engine.log"), (requests, "requests.log")):
        path = folder / name
        if any(getattr(h, "baseFilename", None) == str(path) for h in logger.handlers):
            continue
        handler = RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
        handler.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(handler)
    engine.setLevel(level.upper())
    requests.setLevel(logging.INFO)
    requests.propagate = False
