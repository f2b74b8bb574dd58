"""`ToolHub`: the MCP servers of `config/mcp.json`, with a synchronous API for the rest of the engine.

    hub = ToolHub.from_settings(settings, data_dir)
    hub.start()                      # returns at once; servers start in the background
    hub.list_tools()                 # [ToolInfo(server, name, description, input_schema, enabled)]
    hub.call("add", {"a": 1, "b": 2})  # ToolResult(content, is_error, ms, truncated), never raises

Every server runs on one asyncio loop in a daemon thread (`Connection`). A server that fails to start, or a
config mistake, shows in `servers()` and costs only that server's tools: the chat never waits for it.
A tool's name is its own unless two servers both have it; then both become `server__tool`. Tools the user
turned off are remembered in data/tools.json.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import re
import threading
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import NotFound
from ..fsutil import atomic_write
from .connection import Connection
from .mcp_config import McpConfig, ServerConfig, load_mcp_config
from .results import ToolResult, cap, error_result

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("engine.tools")
T = TypeVar("T")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class ToolInfo:
    server: str
    name: str  # the name the model calls it by
    description: str
    input_schema: dict[str, Any]
    enabled: bool
    tool: str = ""  # its name on the server, when that differs from `name`

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("tool")
        return out

    def to_openai(self) -> dict[str, Any]:
        """The tool as OpenAI's `tools` list (and chat templates) describe it."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.input_schema},
        }


class ToolHub:
    def __init__(
        self,
        config_path: Path,
        *,
        log_dir: Path,
        state_path: Path | None = None,
        call_timeout_s: float = 30.0,
        max_result_chars: int = 16_000,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.config_path = Path(config_path)
        self.log_dir = Path(log_dir)
        self.state_path = state_path
        self.call_timeout_s = call_timeout_s
        self.max_result_chars = max_result_chars
        self.start_timeout_s = start_timeout_s
        self.config = McpConfig(self.config_path)
        self._conns: dict[str, Connection] = {}
        self._tasks: dict[str, concurrent.futures.Future[None]] = {}
        self._disabled: set[str] = self._read_disabled()
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = False

    @classmethod
    def from_settings(cls, settings: Settings, data_dir: Path) -> ToolHub:
        t = settings.tools
        return cls(
            settings.resolve(t.mcp_config),
            log_dir=Path(data_dir) / "logs" / "mcp",
            state_path=Path(data_dir) / "tools.json",
            call_timeout_s=t.call_timeout_s,
            max_result_chars=t.max_result_chars,
        )

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Read the config and start every server in the background; returns at once. Once only: after
        that, `reload` reads the config again."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self.reload()

    def reload(self) -> dict[str, Any]:
        """Read the config again: start new or changed servers, stop removed ones, keep the rest running."""
        config = load_mcp_config(self.config_path)
        with self._lock:
            self.config = config
            if config.error:
                log.error("%s", config.error)
            for w in (w for s in config.servers for w in s.warnings):
                log.warning("%s", w)
            wanted = {s.name: s for s in config.servers} if not config.error else {}
            for name in list(self._conns):
                old = self._conns[name]
                if name not in wanted or not old.cfg.same_launch(wanted[name]) or old.state == "failed":
                    self._stop(name)
            for name, cfg in wanted.items():
                if name in self._conns:
                    self._conns[name].cfg = cfg  # same launch: only warnings may differ
                else:
                    self._launch(cfg)
        return self.status()

    def _launch(self, cfg: ServerConfig) -> None:
        safe = _UNSAFE.sub("_", cfg.name)[:60] or "server"
        conn = Connection(cfg, self.log_dir / f"{safe}.log", start_timeout_s=self.start_timeout_s)
        self._conns[cfg.name] = conn
        self._tasks[cfg.name] = asyncio.run_coroutine_threadsafe(conn.run(), self._ensure_loop())

    def _stop(self, name: str, wait_s: float = 10.0) -> None:
        conn = self._conns.pop(name)
        task = self._tasks.pop(name, None)
        self._submit(conn.stop(), 5)
        if task is not None:
            try:
                task.result(timeout=wait_s)
            except Exception as exc:  # a server that will not stop is left to its task; log it
                log.warning("MCP server %s did not stop cleanly: %s", name, exc)

    def close(self) -> None:
        """Stop every server (their processes end) and the loop thread."""
        with self._lock:
            for name in list(self._conns):
                self._stop(name)
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until no server is starting or restarting: each is ready, or has failed and says why.
        False if some server was still starting when `timeout` ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(c.state in ("starting", "restarting") for c in list(self._conns.values())):
                return True
            time.sleep(0.05)
        return False

    # --- what the rest of the engine asks ----------------------------------------------------------

    def servers(self) -> list[dict[str, Any]]:
        return [c.status() for c in list(self._conns.values())]

    def status(self) -> dict[str, Any]:
        return {
            "config": str(self.config_path),
            "found": self.config.found,
            "error": self.config.error,
            "servers": self.servers(),
        }

    def list_tools(self, *, enabled_only: bool = False) -> list[ToolInfo]:
        live = ("ready", "restarting")  # a restarting server's calls wait for it
        found = [(c.name, t) for c in list(self._conns.values()) if c.state in live for t in c.tools]
        counts: dict[str, int] = {}
        for _, t in found:
            counts[t.name] = counts.get(t.name, 0) + 1
        out = []
        for server, t in found:
            name = t.name if counts[t.name] == 1 else _UNSAFE.sub("_", f"{server}__{t.name}")[:64]
            enabled = f"{server}/{t.name}" not in self._disabled
            if enabled or not enabled_only:
                schema = t.input_schema or {"type": "object", "properties": {}}
                out.append(ToolInfo(server, name, t.description or "", schema, enabled, t.name))
        return out

    def tool(self, name: str) -> ToolInfo:
        for info in self.list_tools():
            if name in (info.name, f"{info.server}/{info.tool}"):
                return info
        raise NotFound(f"There is no tool named '{name}'.", field="name")

    def call(self, name: str, arguments: dict[str, Any], timeout: float | None = None) -> ToolResult:
        """Run one tool. Never raises: every failure is a ToolResult with is_error, in words a model reads."""
        timeout = timeout or self.call_timeout_s
        try:
            info = self.tool(name)
        except NotFound:
            names = ", ".join(t.name for t in self.list_tools(enabled_only=True)) or "none"
            return error_result(f"There is no tool named '{name}'. The tools are: {names}.")
        if not info.enabled:
            return error_result(f"The tool '{name}' is turned off.")
        conn = self._conns.get(info.server)
        if conn is None:
            return error_result(f"The tool server '{info.server}' is not running.")
        try:
            # a call may wait for a restarting server, then run: each up to `timeout`
            result = self._submit(conn.call(info.tool, arguments, timeout), 2 * timeout + 15)
        except TimeoutError:
            return error_result(f"The tool '{name}' did not answer within {timeout:g} s.")
        text, truncated = cap(result.content, self.max_result_chars)
        return ToolResult(text, is_error=result.is_error, ms=result.ms, truncated=truncated)

    def set_enabled(self, name: str, enabled: bool) -> ToolInfo:
        info = self.tool(name)
        key = f"{info.server}/{info.tool}"
        with self._lock:
            (self._disabled.discard if enabled else self._disabled.add)(key)
            self._write_disabled()
        return self.tool(name)

    # --- internals ---------------------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="mcp-tools", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop

    def _submit(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()
            raise

    def _read_disabled(self) -> set[str]:
        if self.state_path is None or not self.state_path.exists():
            return set()
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            return {str(x) for x in data.get("disabled", [])}
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("%s is unreadable (%s); every tool starts enabled", self.state_path, exc)
            return set()

    def _write_disabled(self) -> None:
        if self.state_path is not None:
            data = json.dumps({"disabled": sorted(self._disabled)}, indent=2).encode()
            atomic_write(self.state_path, data)
