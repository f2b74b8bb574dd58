"""The terminal with MCP tools (direct mode, a real terminal through a pty): /tools lists the echo server's
tools, a call asks y/N before it runs, its result is shown, and the model answers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pexpect
import pytest

from tests.helpers import ROOT
from tests.test_cli import PROMPT, SHORT, assert_clean, cli_env

pytestmark = pytest.mark.slow

ECHO = str(ROOT / "tests" / "mcp_servers" / "echo_server.py")


def test_a_tool_call_asks_y_n_then_runs(tmp_path: Path, model_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"echo": {"command": sys.executable, "args": [ECHO]}}}))
    env = cli_env(TERM="xterm-256color", LLM_TOOLS__MCP_CONFIG=str(config), LLM_TOOLS__MAX_ROUNDS="2")
    log = tmp_path / "tty.log"
    args = ["-m", "cli", "--data-dir", str(tmp_path / "data"), "--model", str(model_path)]
    child = pexpect.spawn(
        sys.executable, args, cwd=str(ROOT), env=env, encoding="utf-8", timeout=180, dimensions=(40, 120)
    )
    child.logfile_read = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        child.expect(PROMPT)
        child.sendline(SHORT)
        child.expect(PROMPT)
        child.sendline("/tools")
        child.expect("add")
        child.expect("echo")
        child.expect(PROMPT)
        child.sendline("/tools use add")
        child.expect("The next reply calls add")
        child.expect(PROMPT)
        child.sendline("What is 2 plus 3?")
        child.expect(r"Run tool add\(\{")
        child.expect(r"\[y/N/a=always\]")
        child.sendline("y")
        child.expect(r"\[result\] -?\d+")
        child.expect(r"\d+ tokens")  # the model answered after the result
        child.expect(PROMPT)
        child.sendline("/quit")
        child.expect(pexpect.EOF, timeout=60)
    finally:
        child.terminate(force=True)
        child.logfile_read.close()
    assert_clean(log.read_text(encoding="utf-8"))
