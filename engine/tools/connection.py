"""One MCP server, held open by the official SDK on the hub's asyncio loop, and restarted when it dies.

A runner task owns the connection: it starts the server (a child process over stdio, or a streamable HTTP
session), lists its tools, then waits until it is told to stop or the connection dies (a call that finds
it closed, or a failed ping). A dead server is restarted after a pause that doubles with each recent
crash; after `MAX_CRASHES` within `CRASH_WINDOW_S` it is left `failed`, with its stderr tail, until the
hub reloads. The SDK's contexts are entered and left in the runner task, as anyio requires; calls come
from other tasks on the same loop.

A stdio server's stderr goes to a log file under the data dir (data/logs/mcp/NAME.log), and the tail of
what the current run wrote is quoted when the server fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Literal

from .mcp_config import ServerConfig
from .results import ToolResult, error_result, result_text

log = logging.getLogger("engine.tools")
# The SDK warns on every health ping (a legacy method it still serves); in the terminal that lands mid-chat.
warnings.filterwarnings("ignore", message=r"ping is removed")

State = Literal["starting", "ready", "restarting", "failed", "error", "disabled", "stopped"]
MAX_CRASHES = 5
CRASH_WINDOW_S = 120.0
MAX_BACKOFF_S = 30.0
PING_EVERY_S = 15.0
LOG_MAX_BYTES = 512 * 1024
TAIL_CHARS = 2000


class Connection:
    def __init__(self, cfg: ServerConfig, log_path: Path, *, start_timeout_s: float = 30.0) -> None:
        self.cfg = cfg
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.state: State = "disabled" if not cfg.enabled else ("error" if cfg.error else "starting")
        self.error: str | None = cfg.error
        self.tools: list[Any] = []  # mcp_types.Tool
        self.restarts = 0
        self.started_at: float | None = None
        self.stderr_tail = ""
        self.last_error: str | None = None  # why it last failed, kept after a restart succeeds
        self._client: Any = None
        self._log_offset = 0
        self._crashes: list[float] = []
        self._stop = asyncio.Event()
        self._dead = asyncio.Event()
        self._ready = asyncio.Event()

    @property
    def name(self) -> str:
        return self.cfg.name

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transport": self.cfg.transport,
            "target": self.cfg.url or " ".join([self.cfg.command, *self.cfg.args]),
            "state": self.state,
            "error": self.error,
            "warnings": list(self.cfg.warnings),
            "tools": len(self.tools),
            "restarts": self.restarts,
            "started_at": self.started_at,
            "last_error": self.last_error,
            "stderr_tail": self.stderr_tail or self._tail(),
        }

    # --- the runner task ---------------------------------------------------------------------------

    async def run(self) -> None:
        if self.state in ("disabled", "error"):
            return
        backoff = 0.5
        while not self._stop.is_set():
            self.state = "restarting" if self.restarts or self._crashes else "starting"
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # an ExceptionGroup from the SDK's task groups, an OSError
                self._failed(exc)
                if _spawn_failed(exc):  # the program is missing or not executable: retrying cannot help
                    self.state = "failed"
                    return
            self._client = None  # the tools stay listed while it restarts; calls wait for it
            self._ready.clear()
            if self._stop.is_set():
                break
            if self._give_up():
                return
            self.state = "restarting"
            await self._pause(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            self.restarts += 1

    def _give_up(self) -> bool:
        """After too many crashes in a while, or a server that never started twice in a row."""
        now = time.monotonic()
        self._crashes = [t for t in self._crashes if now - t < CRASH_WINDOW_S] + [now]
        never = self.started_at is None and len(self._crashes) >= 2
        if len(self._crashes) < MAX_CRASHES and not never:
            return False
        self.state = "failed"
        why = (
            "It did not start, twice"
            if never
            else f"It failed {len(self._crashes)} times in {CRASH_WINDOW_S:g} s"
        )
        self.error = (
            f"{self.error or 'It stopped.'} {why}, and is not restarted again; fix it and reload the tools."
        )
        log.error("%s", self.error)
        return True

    async def _session(self) -> None:
        from mcp import Client

        self._dead.clear()
        async with AsyncExitStack() as stack:
            errlog = self._open_log(stack)
            async with asyncio.timeout(self.start_timeout_s):
                client = await stack.enter_async_context(Client(self._transport(stack, errlog), cache=None))
                tools = await _list_tools(client)
            self._client, self.tools = client, tools
            self.state, self.error, self.stderr_tail = "ready", None, ""
            self.started_at = time.time()
            self._ready.set()
            log.info("MCP server %s ready: %d tools", self.name, len(tools))
            await self._hold(client)
            self._client = None
            self._ready.clear()

    def _transport(self, stack: AsyncExitStack, errlog: Any) -> Any:
        if self.cfg.transport == "http":
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            http = httpx2.AsyncClient(headers=self.cfg.headers or None, timeout=httpx2.Timeout(30, read=300))
            stack.push_async_callback(http.aclose)
            return streamable_http_client(self.cfg.url, http_client=http)
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(
            command=self.cfg.command, args=self.cfg.args, env=self.cfg.env or None, cwd=self.cfg.cwd
        )
        return stdio_client(params, errlog=errlog)

    async def _hold(self, client: Any) -> None:
        """Wait until told to stop or the connection dies; a ping now and then finds a silent death."""
        while not self._stop.is_set() and not self._dead.is_set():
            waiters = [asyncio.ensure_future(e.wait()) for e in (self._stop, self._dead)]
            try:
                await asyncio.wait(waiters, timeout=PING_EVERY_S, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
            if self._stop.is_set() or self._dead.is_set():
                break
            try:
                async with asyncio.timeout(10):
                    await client.send_ping()
            except Exception as exc:
                if _answered(exc):
                    continue  # an error reply is a reply: servers of MCP 2026-07-28 on dropped ping
                raise ConnectionError(f"it stopped answering ({_describe(exc)})") from None
        if self._dead.is_set() and not self._stop.is_set():
            raise ConnectionError("it stopped during a call")

    def _failed(self, exc: BaseException) -> None:
        self.stderr_tail = self._tail()
        why = _describe(exc)
        if isinstance(exc, TimeoutError):
            why = f"it did not finish starting within {self.start_timeout_s:g} s"
        self.error = f"MCP server '{self.name}' failed: {why}." + (
            f" Its last output: {self.stderr_tail[-500:]}" if self.stderr_tail else ""
        )
        self.last_error = self.error
        log.warning("%s", self.error)

    async def _pause(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            pass

    async def stop(self) -> None:
        self._stop.set()
        if self.state not in ("disabled", "error", "failed"):
            self.state = "stopped"

    # --- calls -------------------------------------------------------------------------------------

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float) -> ToolResult:
        started = time.perf_counter()
        if self.state in ("starting", "restarting"):
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                pass
        client = self._client
        if client is None or self.state != "ready" or self._dead.is_set():
            return error_result(f"The tool server '{self.name}' is not running ({self.state}).")
        try:
            async with asyncio.timeout(timeout):
                result = await client.call_tool(tool, arguments, read_timeout_seconds=timeout + 5)
        except TimeoutError:
            return error_result(
                f"The tool '{tool}' did not answer within {timeout:g} s; the call was stopped.", _ms(started)
            )
        except Exception as exc:
            if _closed(exc):
                self._lost()
                return error_result(
                    f"The tool server '{self.name}' stopped during the call to '{tool}', which did not "
                    "complete. The server is being restarted.",
                    _ms(started),
                )
            return error_result(f"The tool '{tool}' failed: {_describe(exc)}", _ms(started))
        return ToolResult(result_text(result), is_error=bool(result.is_error), ms=_ms(started))

    def _lost(self) -> None:
        """The connection is gone: no call may use it, and the runner restarts the server."""
        self._dead.set()
        self._client = None
        self._ready.clear()
        if self.state == "ready":
            self.state = "restarting"

    # --- the stderr log ----------------------------------------------------------------------------

    def _open_log(self, stack: AsyncExitStack) -> Any:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        mode = "w" if self.log_path.exists() and self.log_path.stat().st_size > LOG_MAX_BYTES else "a"
        f = stack.enter_context(open(self.log_path, mode, encoding="utf-8", errors="replace"))  # noqa: SIM115
        f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n")
        f.flush()
        self._log_offset = f.tell()
        return f

    def _tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(self._log_offset, f.seek(0, 2) - TAIL_CHARS))
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""


def _answered(exc: BaseException) -> bool:
    """The server sent an error reply (such as "Method not found"): it is alive."""
    from mcp.shared.exceptions import MCPError

    return isinstance(exc, MCPError)


async def _list_tools(client: Any) -> list[Any]:
    tools: list[Any] = []
    cursor = None
    for _ in range(100):  # a paginator that never ends cannot hang the start
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _closed(exc: BaseException) -> bool:
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED

    return isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED


def _spawn_failed(exc: BaseException) -> bool:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return isinstance(exc, FileNotFoundError | PermissionError | NotADirectoryError)


def _describe(exc: BaseException) -> str:
    """A one-line reason, from the first real error inside an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, FileNotFoundError):
        return f"the command was not found ({exc.filename or exc})"
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "…"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
