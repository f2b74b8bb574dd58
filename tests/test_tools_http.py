"""GET /api/tools on the real server, with real MCP servers from config (LLM_TOOLS__MCP_CONFIG): the
contract's shape, a broken server reported without blocking anything, on/off, reload, and the MCP server
processes ending with the server."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import GREEDY, ROOT, ServerProcess, assert_error

pytestmark = pytest.mark.slow

ECHO = str(ROOT / "tests" / "mcp_servers" / "echo_server.py")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("tools-http")
    config = base / "mcp.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "echo": {"command": sys.executable, "args": [ECHO]},
                    "time": {
                        "command": sys.executable,
                        "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"],
                    },
                    "typo": {"command": sys.executable, "arsg": [ECHO]},
                }
            }
        ),
        encoding="utf-8",
    )
    srv = ServerProcess(
        base / "data",
        model=model_path,
        env={"LLM_TOOLS__MCP_CONFIG": str(config)},
        log_path=base / "server.log",
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def wait_for_tools(server: ServerProcess, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(server.url + "/api/tools/servers", timeout=30).json()
        if not any(s["state"] in ("starting", "restarting") for s in status["servers"]):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    resp = httpx.get(server.url + "/api/tools", timeout=30)
    assert resp.status_code == 200, resp.text
    return list(resp.json())


def test_get_api_tools_lists_every_tool_in_the_contract_shape(server: ServerProcess) -> None:
    tools = wait_for_tools(server)
    by = {t["name"]: t for t in tools}
    assert {"add", "echo", "hang", "get_current_time", "convert_time"} <= set(by)
    for t in tools:
        assert set(t) == {"server", "name", "description", "input_schema", "enabled"}, t
        assert isinstance(t["input_schema"], dict) and t["enabled"] is True
    assert by["add"]["server"] == "echo" and by["add"]["description"] == "Add two integers."
    assert by["add"]["input_schema"]["required"] == ["a", "b"]
    assert by["get_current_time"]["server"] == "time"


def test_a_typo_is_reported_by_server_and_field_and_the_chat_goes_on(server: ServerProcess) -> None:
    wait_for_tools(server)
    status = httpx.get(server.url + "/api/tools/servers").json()
    typo = next(s for s in status["servers"] if s["name"] == "typo")
    assert typo["state"] == "error" and "MCP server 'typo'" in typo["error"] and "'arsg'" in typo["error"]
    assert "did you mean 'args'" in typo["error"]
    chat = httpx.post(
        server.url + "/api/chat",
        json={"messages": [{"role": "user", "content": "Hi"}], "params": {**GREEDY, "max_tokens": 4}},
        timeout=120,
    )
    assert chat.status_code == 200 and chat.json()["reply"], chat.text
    assert httpx.get(server.url + "/api/health").json()["status"] == "ok"


def test_a_tool_can_be_turned_off_and_on(server: ServerProcess) -> None:
    wait_for_tools(server)
    with server.client() as c:
        off = c.put("/api/tools/echo", json={"enabled": False})
        assert off.status_code == 200 and off.json()["enabled"] is False
        assert next(t for t in c.get("/api/tools").json() if t["name"] == "echo")["enabled"] is False
        assert c.put("/api/tools/echo", json={"enabled": True}).json()["enabled"] is True
        assert_error(c.put("/api/tools/nosuch", json={"enabled": False}), 404, "nosuch")
        assert_error(c.put("/api/tools/echo", json={"enabled": "maybe"}), 400)
        evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
        for method, path in (("PUT", "/api/tools/echo"), ("POST", "/api/tools/reload")):
            resp = c.request(method, path, json={"enabled": False}, headers=evil)
            assert resp.status_code == 403 and resp.json()["error"]["type"] == "forbidden_origin", resp.text
        plain = c.put(
            "/api/tools/echo", content=b'{"enabled": false}', headers={"Content-Type": "text/plain"}
        )
        assert plain.status_code == 415
        assert all(t["enabled"] for t in c.get("/api/tools").json())  # nothing changed


def test_reload_and_the_servers_end_with_the_server(tmp_path: Path, model_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text("{not json", encoding="utf-8")
    srv = ServerProcess(tmp_path / "data", model=model_path, env={"LLM_TOOLS__MCP_CONFIG": str(config)})
    with srv:
        assert httpx.get(srv.url + "/api/tools").json() == []
        status = httpx.get(srv.url + "/api/tools/servers").json()
        assert "not valid JSON" in status["error"] and "line 1" in status["error"]
        config.write_text(json.dumps({"mcpServers": {"echo": {"command": sys.executable, "args": [ECHO]}}}))
        status = httpx.post(srv.url + "/api/tools/reload", timeout=60).json()
        assert status["error"] is None and [s["name"] for s in status["servers"]] == ["echo"]
        assert "add" in {t["name"] for t in wait_for_tools(srv)}
        log = (tmp_path / "data" / "logs" / "mcp" / "echo.log").read_text(encoding="utf-8")
        pid = int(re.findall(r"echo server starting \(pid (\d+)\)", log)[-1])
        os.kill(pid, 0)  # running
    deadline = time.monotonic() + 15
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not running(pid), "the MCP server outlived the chat server"


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has ended
    except (OSError, IndexError):
        return False
