"""`config/mcp.json`: the MCP servers to start, in the format Claude Desktop, LM Studio, Jan and Cline use.

    {"mcpServers": {
        "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}},
        "docs": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"}}}}

A server has either `command` (a program started with its stdin/stdout as the connection) or `url` (a
streamable HTTP endpoint). `${VAR}` and `${VAR:-default}` take values from the environment, as Claude Code
does. `"disabled": true` (Cline, Cursor) or `"active": false` (Jan) keeps a server off; keys other apps
write for themselves (autoApprove, timeout, ...) are ignored. VS Code's top-level `"servers"` is read too.

Nothing here raises: a file that is not valid JSON is one error for the whole file, and a mistake in a
server (a typo in a key, a wrong type) is that server's error, naming the server and the field, while
the other servers start as usual.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

KNOWN = ("command", "args", "env", "cwd", "url", "headers", "type", "disabled", "enabled", "active")
# Keys that other apps keep in the same file for their own use: read past them quietly.
FOREIGN = (
    "autoApprove",
    "alwaysAllow",
    "timeout",
    "transportType",
    "description",
    "name",
    "icon",
    "disabledTools",
    "tools",
    "envFile",
    "oauth",
    "note",
)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class ServerConfig:
    name: str
    transport: Literal["stdio", "http"] = "stdio"
    command: str = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    enabled: bool = True
    error: str | None = None  # a mistake in this server's entry: it is not started
    warnings: list[str] = field(default_factory=list)

    def same_launch(self, other: ServerConfig) -> bool:
        """True when `other` starts the same server the same way (a reload keeps it running)."""
        keys = ("transport", "command", "args", "env", "cwd", "url", "headers", "enabled", "error")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


@dataclass
class McpConfig:
    path: Path
    servers: list[ServerConfig] = field(default_factory=list)
    error: str | None = None  # the whole file is unusable (not JSON, not the mcpServers shape)
    found: bool = False


class _EntryError(ValueError):
    pass


def load_mcp_config(path: Path) -> McpConfig:
    """Read and check `path`. A missing file is no servers and no error."""
    cfg = McpConfig(Path(path))
    try:
        text = cfg.path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return cfg
    except (OSError, UnicodeDecodeError) as exc:
        cfg.error = f"{cfg.path}: could not be read ({exc}). No tool servers were started."
        return cfg
    cfg.found = True
    try:
        raw = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        cfg.error = (
            f"{cfg.path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. "
            "No tool servers were started; fix the file and reload."
        )
        return cfg
    if isinstance(raw, dict) and not raw:
        return cfg  # an empty file or {}: no servers
    servers = raw.get("mcpServers", raw.get("servers")) if isinstance(raw, dict) else None
    if not isinstance(servers, dict):
        cfg.error = _shape_error(cfg.path, raw)
        return cfg
    cfg.servers = [parse_server(str(name), entry) for name, entry in servers.items()]
    return cfg


def _shape_error(path: Path, raw: Any) -> str:
    hint = ""
    if isinstance(raw, dict):
        close = difflib.get_close_matches(next(iter(raw)), ["mcpServers"], n=1, cutoff=0.6)
        found = "', '".join(str(k) for k in list(raw)[:5])
        hint = f" It has '{found}'" + (f"; did you mean '{close[0]}'?" if close else ".")
    return (
        f'{path} must be a JSON object {{"mcpServers": {{"name": {{"command": ...}}}}}}.{hint} '
        "No tool servers were started."
    )


def parse_server(name: str, entry: Any) -> ServerConfig:
    """One server's entry, checked; a mistake becomes the server's `error`, never an exception."""
    server = ServerConfig(name)
    try:
        _fill(server, entry)
    except _EntryError as exc:
        server.error = f"MCP server '{name}': {exc}"
    return server


def _fill(server: ServerConfig, entry: Any) -> None:
    if not isinstance(entry, dict):
        raise _EntryError('its entry must be a JSON object such as {"command": "...", "args": [...]}.')
    for key in entry:
        if key in KNOWN or key in FOREIGN:
            continue
        close = difflib.get_close_matches(key, KNOWN, n=1, cutoff=0.7)
        if close:
            raise _EntryError(f"unknown field '{key}'; did you mean '{close[0]}'?")
        server.warnings.append(f"MCP server '{server.name}': field '{key}' is not used here and is ignored.")
    off = entry.get("disabled") is True or entry.get("enabled") is False or entry.get("active") is False
    server.enabled = not off
    kind = entry.get("type")
    if kind is not None and kind not in ("stdio", "http", "streamable-http", "streamableHttp", "sse"):
        raise _EntryError(f'field \'type\' is {kind!r}; use "stdio" (with command) or "http" (with url).')
    if kind == "sse":
        raise _EntryError(
            "field 'type' is \"sse\", the old HTTP+SSE transport, which is not supported; "
            "use the server's streamable HTTP URL (it often ends in /mcp)."
        )
    has_command, has_url = "command" in entry, "url" in entry
    if has_command == has_url:
        raise _EntryError(
            "needs either 'command' (a program to start) or 'url' (a streamable HTTP endpoint)"
            + (", not both." if has_command else ".")
        )
    if has_url:
        _fill_http(server, entry, kind)
    else:
        _fill_stdio(server, entry, kind)


def _fill_stdio(server: ServerConfig, entry: dict[str, Any], kind: Any) -> None:
    if kind not in (None, "stdio"):
        raise _EntryError(f"field 'type' is {kind!r} but the server has a 'command', not a 'url'.")
    command = _expand(_string(entry, "command"), "command")
    if not command.strip():
        raise _EntryError('field \'command\' is empty; give the program to run, e.g. "npx" or "uvx".')
    server.transport, server.command = "stdio", command
    args = entry.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
        raise _EntryError('field \'args\' must be a list of strings, e.g. ["-y", "some-server"].')
    server.args = [_expand(str(a), "args") for a in args]
    server.env = _string_map(entry, "env")
    if entry.get("cwd") is not None:
        server.cwd = _expand(_string(entry, "cwd"), "cwd")


def _fill_http(server: ServerConfig, entry: dict[str, Any], kind: Any) -> None:
    if kind == "stdio":
        raise _EntryError("field 'type' is \"stdio\" but the server has a 'url'; stdio needs a 'command'.")
    url = _expand(_string(entry, "url"), "url").strip()
    if not url.startswith(("http://", "https://")):
        raise _EntryError(f"field 'url' must start with http:// or https://, not {url[:40]!r}.")
    server.transport, server.url = "http", url
    server.headers = _string_map(entry, "headers")


def _string(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise _EntryError(f"field '{key}' must be a string, not {type(value).__name__}.")
    return value


def _string_map(entry: dict[str, Any], key: str) -> dict[str, str]:
    value = entry.get(key) or {}
    if not isinstance(value, dict):
        raise _EntryError(f"field '{key}' must be an object of names to strings.")
    out: dict[str, str] = {}
    for k, v in value.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        if not isinstance(v, str | int | float):
            raise _EntryError(f"field '{key}.{k}' must be a string, not {type(v).__name__}.")
        out[str(k)] = _expand(str(v), f"{key}.{k}")
    return out


def _expand(text: str, where: str) -> str:
    """${VAR} and ${VAR:-default} from the environment; a missing variable without a default is an error."""

    def one(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value is not None:
            return value
        if m.group(2) is not None:
            return m.group(2)
        raise _EntryError(f"field '{where}' uses ${{{m.group(1)}}}, which is not set in the environment.")

    return _VAR.sub(one, text)
