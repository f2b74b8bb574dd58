"""ToolHub against real MCP servers, started the way a user's config/mcp.json starts them: the SDK-written
tests/mcp_servers/echo_server.py (stdio and streamable HTTP) and the official mcp-server-time from PyPI.
Faults: a crash mid-call, a hang, a 1 MB result, a config typo, a missing program, a server that dies at
start. Each gives a clear message and the hub goes on working. Nothing here reaches the internet."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.tools.hub import ToolHub
from tests.helpers import ROOT, free_port

pytestmark = pytest.mark.slow

ECHO = str(ROOT / "tests" / "mcp_servers" / "echo_server.py")
MAX_CHARS = 16_000
TIME_ENTRY = {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}


def echo_entry() -> dict[str, Any]:
    return {"command": sys.executable, "args": [ECHO]}


def write(path: Path, servers: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"mcpServers": servers}, indent=2), encoding="utf-8")
    return path


def make_hub(tmp: Path, servers: dict[str, Any], **kwargs: Any) -> ToolHub:
    hub = ToolHub(
        write(tmp / "mcp.json", servers),
        log_dir=tmp / "logs",
        state_path=tmp / "tools.json",
        max_result_chars=MAX_CHARS,
        **kwargs,
    )
    hub.start()
    assert hub.wait_ready(60), hub.servers()
    return hub


def pid_of(hub: ToolHub, server: str) -> int:
    text = (hub.log_dir / f"{server}.log").read_text(encoding="utf-8")  # the server's stderr
    return int(re.findall(r"echo server starting \(pid (\d+)\)", text)[-1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolHub]:
    tmp = tmp_path_factory.mktemp("hub")
    servers = {
        "echo": echo_entry(),
        "time": TIME_ENTRY,
        "typo": {"comand": sys.executable, "args": [ECHO]},
        "missing": {"command": str(tmp / "no-such-program")},
        "dies": {
            "command": sys.executable,
            "args": ["-c", "import sys; print('boom: API_KEY is not set', file=sys.stderr); sys.exit(2)"],
        },
    }
    h = make_hub(tmp, servers, call_timeout_s=20)
    try:
        yield h
    finally:
        h.close()


def state(hub: ToolHub, name: str) -> dict[str, Any]:
    return next(s for s in hub.servers() if s["name"] == name)


def test_tools_of_both_real_servers_are_listed(hub: ToolHub) -> None:
    names = {t.name: t for t in hub.list_tools()}
    assert {"add", "echo", "crash", "hang", "big", "fail", "get_current_time", "convert_time"} <= set(names)
    add = names["add"]
    assert (add.server, add.description, add.enabled) == ("echo", "Add two integers.", True)
    assert add.input_schema["properties"]["a"]["type"] == "integer" and add.input_schema["required"] == [
        "a",
        "b",
    ]
    assert names["get_current_time"].server == "time"
    assert add.to_dict() == {
        "server": "echo",
        "name": "add",
        "description": "Add two integers.",
        "input_schema": add.input_schema,
        "enabled": True,
    }


def test_broken_servers_are_reported_and_cost_only_themselves(hub: ToolHub) -> None:
    assert state(hub, "echo")["state"] == "ready" and state(hub, "time")["state"] == "ready"
    typo = state(hub, "typo")
    assert (
        typo["state"] == "error" and "'comand'" in typo["error"] and "did you mean 'command'" in typo["error"]
    )
    missing = state(hub, "missing")
    assert missing["state"] == "failed" and "command was not found" in missing["error"], missing
    dies = state(hub, "dies")
    assert dies["state"] == "failed" and "boom: API_KEY is not set" in dies["error"], dies
    assert "boom: API_KEY is not set" in dies["stderr_tail"]


def test_calls_on_both_servers(hub: ToolHub) -> None:
    result = hub.call("add", {"a": 2, "b": 40})
    assert (result.content, result.is_error, result.truncated) == ("42", False, False) and result.ms > 0
    assert hub.call("echo", {"text": "héllo ✓"}).content == "héllo ✓"
    now = hub.call("get_current_time", {"timezone": "UTC"})
    assert not now.is_error and json.loads(now.content)["timezone"] == "UTC"
    bad = hub.call("get_current_time", {"timezone": "Not/AZone"})
    assert bad.is_error, bad


def test_a_tool_error_and_an_unknown_tool_come_back_as_errors(hub: ToolHub) -> None:
    assert hub.call("fail", {"message": "nope"}).is_error
    unknown = hub.call("nosuch", {})
    assert (
        unknown.is_error and "There is no tool named 'nosuch'" in unknown.content and "add" in unknown.content
    )
    wrong = hub.call("add", {"a": "two"})  # the server checks the arguments
    assert wrong.is_error


def test_a_hanging_tool_times_out_and_the_hub_goes_on(hub: ToolHub) -> None:
    started = time.monotonic()
    result = hub.call("hang", {}, timeout=1.5)
    took = time.monotonic() - started
    assert result.is_error and "did not answer within 1.5 s" in result.content, result
    assert 1.4 < took < 8, took
    assert hub.call("add", {"a": 1, "b": 1}).content == "2"
    assert state(hub, "echo")["restarts"] == 0  # a slow tool is not a dead server


def test_a_1mb_result_is_capped_with_a_note(hub: ToolHub) -> None:
    result = hub.call("big", {"size": 1_000_000})
    assert not result.is_error and result.truncated
    assert len(result.content) < MAX_CHARS + 100 and result.content.startswith("x" * MAX_CHARS)
    assert result.content.endswith("[truncated: 984,000 of 1,000,000 characters left out]")


def test_turning_a_tool_off_is_remembered(hub: ToolHub, tmp_path: Path) -> None:
    assert hub.set_enabled("echo", False).enabled is False
    off = hub.call("echo", {"text": "x"})
    assert off.is_error and "turned off" in off.content
    assert "echo" not in {t.name for t in hub.list_tools(enabled_only=True)}
    assert hub.state_path is not None
    assert json.loads(hub.state_path.read_text())["disabled"] == ["echo/echo"]
    assert hub.set_enabled("echo", True).enabled is True
    assert hub.call("echo", {"text": "x"}).content == "x"


def test_a_crash_mid_call_is_a_clear_error_and_the_server_comes_back(hub: ToolHub) -> None:
    before = pid_of(hub, "echo")
    result = hub.call("crash", {})
    assert result.is_error and "stopped during the call to 'crash'" in result.content, result
    assert hub.call("add", {"a": 3, "b": 4}).content == "7"  # waits for the restart
    echo = state(hub, "echo")
    assert echo["state"] == "ready" and echo["restarts"] == 1
    assert "crashing on purpose" in echo["last_error"], echo
    assert pid_of(hub, "echo") != before and not alive(before)
    assert (
        hub.call("get_current_time", {"timezone": "UTC"}).is_error is False
    )  # the other server never noticed


def test_reload_starts_new_servers_keeps_running_ones_and_qualifies_clashing_names(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, {"echo": echo_entry()}, call_timeout_s=20)
    try:
        first = pid_of(hub, "echo")
        write(hub.config_path, {"echo": echo_entry(), "echo2": echo_entry()})
        hub.reload()
        assert hub.wait_ready(60)
        names = {t.name for t in hub.list_tools()}
        assert {"echo__add", "echo2__add"} <= names and "add" not in names
        assert hub.call("echo2__add", {"a": 1, "b": 2}).content == "3"
        assert pid_of(hub, "echo") == first  # unchanged: not restarted
        second = pid_of(hub, "echo2")
        hub.config_path.write_text("{not json", encoding="utf-8")
        status = hub.reload()
        assert "not valid JSON" in status["error"] and status["servers"] == []
        assert hub.list_tools() == [] and hub.call("add", {}).is_error
        time.sleep(0.5)
        assert not alive(first) and not alive(second)
    finally:
        hub.close()


def test_close_ends_the_server_processes(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, {"echo": echo_entry()})
    pid = pid_of(hub, "echo")
    assert alive(pid)
    hub.close()
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid)


def test_health_pings_keep_servers_that_dropped_ping_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MCP 2026-07-28 removed ping: the SDK's own servers answer it "Method not found". An answer is an
    answer; only silence or a closed pipe is a dead server."""
    from engine.tools import connection

    monkeypatch.setattr(connection, "PING_EVERY_S", 0.2)
    hub = make_hub(tmp_path, {"echo": echo_entry(), "time": TIME_ENTRY})
    try:
        pids = pid_of(hub, "echo")
        time.sleep(2)  # about ten pings each
        for s in hub.servers():
            assert s["state"] == "ready" and s["restarts"] == 0, s
        assert pid_of(hub, "echo") == pids
        assert hub.call("echo", {"text": "still here"}).content == "still here"
    finally:
        hub.close()


@pytest.fixture()
def http_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    with open(tmp_path / "http.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, ECHO, "--http", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url, proc
    finally:
        proc.kill()
        proc.wait()


def test_a_streamable_http_server(tmp_path: Path, http_server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = http_server
    hub = make_hub(tmp_path, {"web": {"url": url, "headers": {"X-Test": "1"}}}, call_timeout_s=20)
    try:
        assert state(hub, "web")["state"] == "ready" and state(hub, "web")["transport"] == "http"
        assert hub.call("add", {"a": 20, "b": 22}).content == "42"
        assert hub.call("hang", {}, timeout=1).is_error
        assert hub.call("big", {}).truncated
        proc.kill()
        proc.wait()
        started = time.monotonic()
        gone = hub.call("add", {"a": 1, "b": 1}, timeout=5)
        assert gone.is_error and time.monotonic() - started < 20, gone
    finally:
        hub.close()
