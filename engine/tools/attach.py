"""The one ToolHub of a Runtime (`Runtime.tools`), made and started on first use, so that there is one set
of MCP server processes per runtime. `Runtime.close` closes it; so does the runtime's garbage collection
or the end of the process, whichever comes first.
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
