"""Atomic file writes: temp file in the same folder, fsync, keep the previous version as .bak, os.replace."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import StorageError


def atomic_write(path: Path, data: bytes, *, keep_backup: bool = True) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if keep_backup and path.exists():
                shutil.copy2(path, path.with_name(path.name + ".bak"))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(
            f"Could not save {path.name}: {exc.strerror or exc}. "
            "Check that the data folder exists, is writable and the disk is not full."
        ) from exc


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def move_to(folder: Path, path: Path) -> Path:
    """Move `path` into `folder` without overwriting anything there; return the new path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 1
    while target.exists():
        target = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    try:
        os.replace(path, target)
    except OSError as exc:
        raise StorageError(f"Could not move {path.name} to {folder}: {exc.strerror or exc}") from exc
    return target
