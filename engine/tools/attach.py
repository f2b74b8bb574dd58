"""The one ToolHub of a Runtime, made and started on first use.

It belongs in Runtime itself; until engine/runtime.py takes it (its owner is reworking it), every interface
reaches it through `tool_hub(rt)`, so there is one hub, and one set of MCP server processes, per runtime.
The hub is closed (its servers stopped) when the runtime is garbage collected or the process exits.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from .hub import ToolHub

if TYPE_CHECKING:
    from ..runtime import Runtime

_lock = threading.Lock()
_hubs: weakref.WeakKeyDictionary[Any, ToolHub] = weakref.WeakKeyDictionary()


def tool_hub(rt: Runtime) -> ToolHub:
    with _lock:
        hub = _hubs.get(rt)
        if hub is None:
            hub = _hubs[rt] = ToolHub.from_settings(rt.settings, rt.data_dir)
            weakref.finalize(rt, hub.close)  # also runs at exit: the servers' processes end with ours
            hub.start()
        return hub


def close_tool_hub(rt: Runtime) -> None:
    """Stop the runtime's MCP servers, if it has started any (for Runtime.close)."""
    with _lock:
        hub = _hubs.pop(rt, None)
    if hub is not None:
        hub.close()
