"""An MCP server for the tool tests, written with the official SDK. It runs as a user's config starts a
server: `python echo_server.py` speaks MCP on stdin/stdout; `--http PORT` serves streamable HTTP on
127.0.0.1 instead. Its tools cover the faults the hub must survive."""

from __future__ import annotations

import os
import sys

import anyio
from mcp.server.mcpserver import MCPServer

server = MCPServer("echo")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Say the text back."""
    return text


@server.tool()
def crash() -> str:
    """Die in the middle of the call, as a native fault would."""
    print("echo server: crashing on purpose", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool()
async def hang(seconds: float = 3600) -> str:
    """Take a very long time."""
    await anyio.sleep(seconds)
    return "woke up"


@server.tool()
def big(size: int = 1_000_000) -> str:
    """Return `size` characters."""
    return "x" * size


@server.tool()
def fail(message: str) -> str:
    """Raise an error inside the tool."""
    raise ValueError(message)


if __name__ == "__main__":
    print(f"echo server starting (pid {os.getpid()})", file=sys.stderr, flush=True)
    if "--http" in sys.argv:
        port = int(sys.argv[sys.argv.index("--http") + 1])
        server.run("streamable-http", host="127.0.0.1", port=port)
    else:
        server.run()
