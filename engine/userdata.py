"""The persona and lorebook stores of a Runtime, made on first use.

They belong in Runtime itself; until engine/runtime.py takes them (its owner is reworking it), every
interface reaches them through these two functions, so there is one store of each per runtime.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from .lore_store import LorebookStore
from .personas import PersonaStore

if TYPE_CHECKING:
    from .runtime import Runtime

_lock = threading.Lock()
_stores: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _of(rt: Runtime) -> dict[str, Any]:
    with _lock:
        found = _stores.get(rt)
        if found is None:
            found = _stores[rt] = {
                "personas": PersonaStore(rt.data_dir),
                "lorebooks": LorebookStore(rt.data_dir),
            }
        return found


def personas(rt: Runtime) -> PersonaStore:
    return _of(rt)["personas"]  # type: ignore[no-any-return]


def lorebooks(rt: Runtime) -> LorebookStore:
    return _of(rt)["lorebooks"]  # type: ignore[no-any-return]
