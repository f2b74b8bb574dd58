"""config/mcp.json: the Claude Desktop / LM Studio / Jan format, and a clear error (never an exception) for
every mistake, naming the server and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import load_settings
from engine.tools.approval import ApprovalPolicy, refusal
from engine.tools.formats import FORMATS
from engine.tools.mcp_config import load_mcp_config, parse_server
from engine.tools.prompt import tools_prompt
from engine.tools.results import cap


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_claude_desktop_lm_studio_and_jan_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCS_TOKEN", "s3cret")
    cfg = load_mcp_config(
        write(
            tmp_path,
            {
                "mcpServers": {
                    "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC", "N": 3}},
                    "docs": {
                        "url": "https://example.com/mcp",
                        "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"},
                    },
                    "jan": {"command": "npx", "args": ["-y", "x"], "active": False},
                    "cline": {
                        "command": "node",
                        "args": ["s.js"],
                        "disabled": True,
                        "autoApprove": [],
                        "timeout": 60,
                    },
                    "typed": {"type": "http", "url": "http://127.0.0.1:1/mcp"},
                    "dflt": {"command": "${NO_SUCH_VAR_HERE:-python}", "cwd": "/tmp"},
                }
            },
        )
    )
    assert cfg.found and cfg.error is None
    by = {s.name: s for s in cfg.servers}
    assert all(s.error is None and not s.warnings for s in cfg.servers), [
        (s.error, s.warnings) for s in cfg.servers
    ]
    assert (by["time"].transport, by["time"].command, by["time"].args) == (
        "stdio",
        "uvx",
        ["mcp-server-time"],
    )
    assert by["time"].env == {"TZ": "UTC", "N": "3"}
    assert (by["docs"].transport, by["docs"].headers) == ("http", {"Authorization": "Bearer s3cret"})
    assert not by["jan"].enabled and not by["cline"].enabled and by["time"].enabled
    assert by["typed"].transport == "http" and by["dflt"].command == "python" and by["dflt"].cwd == "/tmp"


@pytest.mark.parametrize(
    "entry,words",
    [
        ({"comand": "npx"}, ["'typo'", "'comand'", "did you mean 'command'"]),
        ({"command": "npx", "arg": ["x"]}, ["'typo'", "'arg'", "'args'"]),
        ({"url": "http://h/mcp", "header": {}}, ["'header'", "'headers'"]),
        ({"command": "npx", "args": "-y x"}, ["'typo'", "'args'", "list of strings"]),
        ({"command": "npx", "env": {"A": ["x"]}}, ["'env.A'", "string"]),
        ({"command": 5}, ["'command'", "string"]),
        ({"command": ""}, ["'command'", "empty"]),
        ({"args": ["x"]}, ["'typo'", "either 'command'", "'url'"]),
        ({"command": "x", "url": "http://h"}, ["not both"]),
        ({"url": "ftp://h/mcp"}, ["'url'", "http://"]),
        ({"url": "http://h/sse", "type": "sse"}, ["sse", "not supported", "/mcp"]),
        ({"command": "x", "type": "http"}, ["'type'", "'url'"]),
        ({"command": "x", "type": "websocket"}, ["'type'", "websocket"]),
        ({"command": "${MISSING_VAR_FOR_TEST}"}, ["${MISSING_VAR_FOR_TEST}", "not set"]),
        ("npx -y server", ["'typo'", "JSON object"]),
    ],
)
def test_a_mistake_is_that_servers_error_naming_the_field(
    tmp_path: Path, entry: Any, words: list[str]
) -> None:
    cfg = load_mcp_config(write(tmp_path, {"mcpServers": {"typo": entry, "good": {"command": "python"}}}))
    by = {s.name: s for s in cfg.servers}
    assert cfg.error is None and by["good"].error is None  # the other servers are unaffected
    error = by["typo"].error
    assert error is not None and error.startswith("MCP server 'typo': ")
    for word in words:
        assert word in error, (word, error)


def test_an_unknown_key_that_is_no_typo_is_a_warning(tmp_path: Path) -> None:
    cfg = load_mcp_config(write(tmp_path, {"mcpServers": {"s": {"command": "x", "colour": "blue"}}}))
    (server,) = cfg.servers
    assert server.error is None and server.warnings == [
        "MCP server 's': field 'colour' is not used here and is ignored."
    ]


@pytest.mark.parametrize(
    "text,words",
    [
        ('{"mcpServers": {"a": {"command": "x",}}}', ["not valid JSON", "line 1", "column"]),
        ('{"mcpServer": {}}', ["mcpServers", "did you mean 'mcpServers'"]),
        ("[1, 2]", ["mcpServers"]),
        ('{"mcpServers": []}', ["mcpServers"]),
        (b"\xff\xfe\x00".decode("latin-1"), ["not valid JSON"]),
    ],
)
def test_a_broken_file_is_one_clear_error(tmp_path: Path, text: str, words: list[str]) -> None:
    cfg = load_mcp_config(write(tmp_path, text))
    assert cfg.servers == [] and cfg.error is not None and str(tmp_path / "mcp.json") in cfg.error
    for word in words:
        assert word in cfg.error, (word, cfg.error)


def test_no_file_and_an_empty_file_mean_no_tools(tmp_path: Path) -> None:
    missing = load_mcp_config(tmp_path / "nope.json")
    assert (missing.found, missing.error, missing.servers) == (False, None, [])
    for text in ("", "{}", '{"mcpServers": {}}'):
        cfg = load_mcp_config(write(tmp_path, text))
        assert cfg.error is None and cfg.servers == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
entry_keys = st.sampled_from(
    ["command", "args", "env", "url", "headers", "type", "cwd", "disabled", "x", "cmd"]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(entry_keys, json_values, max_size=6) | json_values)
def test_any_entry_gives_a_server_or_an_error_never_an_exception(entry: Any) -> None:
    server = parse_server("s", entry)
    if server.error is None:
        assert server.command if server.transport == "stdio" else server.url
        assert all(isinstance(a, str) for a in server.args)
    else:
        assert server.error.startswith("MCP server 's': ")


def test_tools_settings_defaults_and_overrides() -> None:
    s, _ = load_settings(environ={"LLM_TOOLS__APPROVAL": "auto", "LLM_TOOLS__MAX_ROUNDS": "2"})
    assert (s.tools.approval, s.tools.max_rounds) == ("auto", 2)
    d, _ = load_settings(environ={})
    assert (d.tools.mcp_config, d.tools.approval, d.tools.max_rounds) == ("config/mcp.json", "ask", 5)
    assert (d.tools.call_timeout_s, d.tools.max_result_chars, d.model.tool_call_format) == (30, 16000, "auto")
    listed, _ = load_settings(environ={}, overrides={"tools": {"approval": ["add", "echo"]}})
    assert listed.tools.approval == ["add", "echo"]
    for field in type(d.tools).model_fields.values():
        assert field.description, field


def test_approval_policy() -> None:
    ask = ApprovalPolicy.from_setting("ask")
    assert ask.decide("add") == "ask"
    assert ask.answer("add", "always") and ask.decide("add") == "allow"
    assert not ask.answer("echo", "deny") and ask.decide("echo") == "deny"  # not asked again this turn
    api = ApprovalPolicy.from_setting(["add"], interactive=False)  # the API never waits for a person
    assert (api.decide("add"), api.decide("echo")) == ("allow", "deny")
    assert ApprovalPolicy.from_setting("auto", interactive=False).decide("anything") == "allow"
    text = refusal("echo")
    assert "did not allow" in text and "'echo'" in text and "Do not call it again" in text
    with pytest.raises(Exception, match="tool_approval"):
        ApprovalPolicy.from_setting({"x": 1})


def test_a_long_result_is_cut_with_a_visible_note() -> None:
    assert cap("short", 10) == ("short", False)
    text, cut = cap("x" * 1_000_000, 16_000)
    assert cut and text.startswith("x" * 16_000) and len(text) < 16_100
    assert text.endswith("[truncated: 984,000 of 1,000,000 characters left out]")


def test_the_tools_prompt_shows_each_tool_and_the_exact_call_syntax() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Add two integers.",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                },
            },
        }
    ]
    text = tools_prompt(tools, FORMATS["json"])
    assert "- add(a: integer?, b: integer?): Add two integers." in text
    assert '{"name": "add", "arguments": {"a": 1, "b": 1}}' in text
    assert '<tool_call>\n{"name": "add"' in tools_prompt(tools, FORMATS["hermes"])
