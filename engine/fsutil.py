"""Atomic file writes: temp file in the same folder, fsync, keep the previous version as .bak, os.replace.
Also a random key kept in a file (`kept_secret`)."""

from __future__ import annotations

import contextlib
import os
import secrets
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


def kept_secret(path: Path) -> str:
    """The random key kept in `path`, made on first use. With an unwritable folder, a new key each call."""
    try:
        return path.read_text("utf-8").strip() or _new_secret(path)
    except OSError:
        return _new_secret(path)


def _new_secret(path: Path) -> str:
    secret = secrets.token_hex(16)
    with contextlib.suppress(StorageError):  # unwritable: the key lasts as long as the caller keeps it
        atomic_write(path, secret.encode(), keep_backup=False)
    return secret
