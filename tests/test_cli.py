"""The terminal client (python -m cli), driven like a user: through a pipe and through a pty (pexpect),
with the engine in-process (direct) and against a real server (--url)."""

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
import pexpect
import pytest

from cli.commands import parse_assignments
from cli.render import metrics_line
from engine.errors import InvalidInput
from tests.helpers import ROOT, TEST_ENV, TRACEBACK_MARKERS, ServerProcess, free_port, server_fixture

SHORT = "/params max_tokens=24 temperature=0 seed=1"
LONG = "/params max_tokens=400 temperature=0 seed=1"
ID_RE = re.compile(r"s-\d{8}-\d{6}-[0-9a-f]{6}")
ESC = "\x1b"
PROMPT = "you>"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "COLUMNS", "LINES")}
    return {**env, **TEST_ENV, "PYTHONUNBUFFERED": "1", **extra}


def run_pipe(args: list[str], lines: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """python -m cli with `lines` on stdin (not a TTY)."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=cli_env(),
        timeout=timeout,
    )


def assert_clean(*texts: str) -> None:
    for text in texts:
        for marker in TRACEBACK_MARKERS:
            assert marker not in text, f"traceback in output: {text[-2000:]}"


def saved_id(stdout: str, title: str) -> str:
    m = re.search(rf"Saved as ({ID_RE.pattern}): {re.escape(title)}", stdout)
    assert m, stdout
    return m.group(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServerProcess]:
    yield from server_fixture(tmp_path_factory, "cli-server", model_path)


# ---- pure parts ------------------------------------------------------------------------------------------


def test_parse_assignments() -> None:
    assert parse_assignments('temperature=0.8 max_tokens=100 stop="###" seed=-1') == {
        "temperature": 0.8,
        "max_tokens": 100,
        "stop": "###",
        "seed": -1,
    }
    assert parse_assignments('stop=\'["a", "b"]\' grammar=root') == {"stop": ["a", "b"], "grammar": "root"}
    with pytest.raises(InvalidInput, match="Bad argument 'temperature'"):
        parse_assignments("temperature")
    with pytest.raises(InvalidInput, match="quoting"):
        parse_assignments('stop="open')


def test_metrics_line_marks_unknown_values() -> None:
    full = {
        "completion_tokens": 24,
        "tokens_per_s": 71.34,
        "ttft_ms": 85.2,
        "prompt_eval_tokens": 35,
        "prompt_tokens": 120,
        "context_used": 144,
        "context_size": 4096,
    }
    assert metrics_line("stop", full) == (
        "24 tokens · 71.3 tok/s · TTFT 85 ms · prompt eval 35/120 · context 144/4096"
    )
    line = metrics_line("cancelled", {"completion_tokens": 3, "dropped_messages": 2})
    assert "? tok/s" in line and "TTFT ? ms" in line and "context ?/?" in line
    assert line.endswith("2 older messages left out to fit the context · stopped")
    assert metrics_line("length", {}).endswith("cut at max_tokens")


def test_help_shows_usage() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cli", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0
    flags = ("--config", "--data-dir", "--model", "--url", "--api-key", "--preset", "--session", "--param")
    assert all(flag in out.stdout for flag in flags), out.stdout


# ---- errors: one line, no traceback ------------------------------------------------------------------------


def test_startup_errors_are_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    out = run_pipe(["--url", f"http://127.0.0.1:{port}"], ["hello"])
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: Cannot reach the server") and out.stderr.count("\n") == 1
    out = run_pipe(["--data-dir", str(tmp_path), "--config", str(tmp_path / "nope.yaml")], ["hello"])
    assert out.returncode == 2 and "error: Config file not found" in out.stderr
    assert_clean(out.stdout, out.stderr)


def test_missing_model_is_reported_and_commands_still_work(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = run_pipe(
        ["--data-dir", str(data), "--model", str(tmp_path / "missing.gguf")],
        ["hello", "/params temperature=0.5", "/sessions", "/status"],
    )
    assert_clean(out.stdout, out.stderr)
    assert out.returncode == 1
    assert out.stderr.count("error: Model file not found") == 2  # at start, and for the message
    assert "not loaded: Model file not found" in out.stdout  # /status
    assert not list((data / "sessions").glob("*.json"))  # no empty chat files


def test_bad_session_and_preset_exit_with_one_line(tmp_path: Path, model_path: Path) -> None:
    args = ["--data-dir", str(tmp_path), "--model", str(model_path)]
    out = run_pipe([*args, "--session", "s-20250101-000000-abcdef"], [])
    assert out.returncode == 2 and "error: No chat with id s-20250101-000000-abcdef" in out.stderr
    out = run_pipe([*args, "--preset", "nobody"], [])
    assert out.returncode == 2 and "error: There is no preset named 'nobody'" in out.stderr
    assert_clean(out.stdout, out.stderr)


# ---- pipe: direct and --url ------------------------------------------------------------------------------


@pytest.mark.slow
def test_echo_pipe_prints_plain_reply(tmp_path: Path, model_path: Path) -> None:
    out = run_pipe(
        ["--data-dir", str(tmp_path), "--model", str(model_path), "-p", "max_tokens=8", "-p", "seed=1"],
        ["hello"],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), out.stderr
    assert ESC not in out.stdout + out.stderr and PROMPT not in out.stdout
    assert " tokens · " in out.stderr and "tok/s" in out.stderr and "TTFT" in out.stderr
    assert re.search(rf"Chat saved: {ID_RE.pattern}", out.stderr)


@pytest.mark.slow
def test_pipe_direct_session_opens_in_the_server(server: ServerProcess) -> None:
    """Direct mode on the server's data dir: a chat saved in the terminal is served at /api/sessions/{id}."""
    out = run_pipe(
        ["--data-dir", str(server.data_dir), "--model", str(server.model)],
        [
            SHORT,
            "hello",
            "/save pipe chat",
            "/sessions",
            "/params",
            "/params temperature=9",
            "/params max_tokens",
            "/foo",
            "/system",
            "/system 1",
            "/load pipe chat",
            "/regen",
            "/system You are a pirate.",
            "/status",
            "/quit",
            "never sent",
        ],
    )
    assert_clean(out.stdout, out.stderr)
    assert ESC not in out.stdout + out.stderr and PROMPT not in out.stdout
    assert out.returncode == 1  # the bad /params and /foo
    sid = saved_id(out.stdout, "pipe chat")
    assert re.search(rf"1\s+{sid}\s+pipe chat", out.stdout)  # /sessions
    assert re.search(r"temperature\s+0\.0\s+this chat", out.stdout)  # /params
    assert "max_tokens = 24" in out.stdout
    assert "error: Invalid value for 'params.temperature'" in out.stderr
    assert "Unknown command /foo. Type /help." in out.stderr
    assert "concise" in out.stdout and "(none)" in out.stdout  # /system lists the presets
    assert "New chat with preset concise" in out.stderr
    assert f"Loaded {sid}: pipe chat (2 messages)" in out.stderr
    assert out.stderr.count(" tok/s · ") == 2  # hello, /regen
    assert "New chat with your prompt" in out.stderr and "prompt   custom" in out.stdout
    assert "chat     new" in out.stdout  # /status: the pirate chat is not saved before its first message

    with server.client() as http:
        doc = http.get(f"/api/sessions/{sid}").json()
        listed = {s["id"]: s for s in http.get("/api/sessions").json()}
    assert doc["title"] == "pipe chat" and doc["params"]["max_tokens"] == 24
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant"]
    assert len(doc["messages"][1]["alternatives"]) == 2  # /regen kept the first reply
    assert doc["messages"][1]["metrics"]["completion_tokens"] > 0
    assert listed[sid]["messages"] == 2


@pytest.mark.slow
def test_pipe_url_mode(server: ServerProcess) -> None:
    out = run_pipe(
        ["--url", server.url],
        [SHORT, "hello", "/save url chat", "/sessions", "/params", "/status", "/regen"]
        + ["/system friendly", "hi"],
    )
    assert_clean(out.stdout, out.stderr)
    assert ESC not in out.stdout + out.stderr and PROMPT not in out.stdout
    sid = saved_id(out.stdout, "url chat")
    assert re.search(rf"{sid}\s+url chat", out.stdout)
    assert f"backend  llama_cpp, {server.url} (ok)" in out.stdout
    assert "error:" not in out.stderr
    assert "New chat with preset friendly" in out.stderr
    assert out.stderr.count(" tok/s · ") == 3  # hello, /regen, hi
    with server.client() as http:
        doc = http.get(f"/api/sessions/{sid}").json()
        assert doc["title"] == "url chat"
        assert [m["content"] for m in doc["messages"] if m["role"] == "user"] == ["hello"]
        assert len(doc["messages"][-1]["alternatives"]) == 2  # /regen kept the first reply
        friendly = [s for s in http.get("/api/sessions").json() if s["title"] == "hi"]
        assert friendly and friendly[0]["messages"] == 3  # greeting, hi, reply
        assert http.get(f"/api/sessions/{friendly[0]['id']}").json()["character_name"] == "friendly"


@pytest.mark.slow
def test_url_mode_with_api_key(tmp_path: Path, model_path: Path) -> None:
    args = ["--api-key", "k3y"]
    with ServerProcess(
        tmp_path / "data", model=model_path, args=args, log_path=tmp_path / "server.log"
    ) as server:
        out = run_pipe(["--url", server.url], ["hi"])
        assert out.returncode == 2 and "Pass the server's key with --api-key" in out.stderr
        assert out.stderr.count("\n") == 1
        out = run_pipe(["--url", server.url, "--api-key", "k3y", "-p", "max_tokens=4"], ["hi", "/sessions"])
        assert out.returncode == 0, out.stderr
        assert re.search(rf"1\s+{ID_RE.pattern}\s+hi\s+\S+ \S+\s+2", out.stdout), out.stdout


# ---- pty: direct and --url --------------------------------------------------------------------------------


def spawn(args: list[str], log: Path) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "cli", *args],
        cwd=str(ROOT),
        env=cli_env(TERM="xterm-256color"),
        encoding="utf-8",
        timeout=180,
        dimensions=(40, 120),
    )
    child.logfile_read = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed with the child
    return child


def command(child: pexpect.spawn, line: str, *expect: str) -> None:
    child.sendline(line)
    for pattern in expect:
        child.expect(pattern)
    child.expect(PROMPT)


def stop_a_long_reply(child: pexpect.spawn) -> None:
    """Ctrl+C while a long reply streams: it stops, the prompt comes back, the program still answers."""
    command(child, LONG, "Set max_tokens=400")
    child.sendline("Write a long story about a brave dragon and a clever knight.")
    child.expect("Assistant")
    child.expect(r"[A-Za-z]{3,}")  # the first word has streamed
    time.sleep(0.5)
    started = time.monotonic()
    child.sendintr()
    child.expect(r"(?i)stopped")
    child.expect(PROMPT)
    assert time.monotonic() - started < 30
    command(child, "/status", "model ", "context ")


def last_reply(doc: dict[str, Any]) -> dict[str, Any]:
    return [m for m in doc["messages"] if m["role"] == "assistant"][-1]


def close(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF, timeout=60)
    child.close()
    child.logfile_read.close()
    return int(child.exitstatus or 0)


@pytest.mark.slow
def test_tty_direct(tmp_path: Path, model_path: Path) -> None:
    data = tmp_path / "data"
    log = tmp_path / "tty.log"
    child = spawn(["--data-dir", str(data), "--model", str(model_path)], log)
    try:
        child.expect(PROMPT)
        command(child, SHORT, "Set max_tokens=24")
        command(child, "hello", "Assistant", r"\d+ tokens · [\d.?]+ tok/s · TTFT")
        child.sendline("/save tty chat")
        child.expect(rf"Saved as ({ID_RE.pattern}): tty chat")
        first = child.match.group(1)
        child.expect(PROMPT)
        command(child, "/sessions", "tty chat")
        command(child, "/params temperature=7", "Invalid value for 'params.temperature'")
        command(child, "/params", "max_tokens", "24")
        child.sendline("/system")
        child.expect("Pick a number or name")
        command(child, "2", "New chat with preset")
        command(child, "/load tty chat", f"Loaded {first}")
        command(child, "/nope", r"Unknown command /nope\. Type /help\.")
        stop_a_long_reply(child)
        child.sendline("/quit")
        child.expect(f"Chat saved: {first}")
        assert close(child) == 0
    finally:
        child.terminate(force=True)
    assert_clean(log.read_text(encoding="utf-8"))
    doc = json.loads((data / "sessions" / f"{first}.json").read_text(encoding="utf-8"))
    assert doc["title"] == "tty chat"
    reply = last_reply(doc)
    assert reply["stopped"] is True and reply["content"]  # the partial reply is kept, marked stopped
    assert reply["metrics"]["finish_reason"] == "cancelled"


@pytest.mark.slow
def test_tty_url(tmp_path: Path, server: ServerProcess) -> None:
    log = tmp_path / "tty-url.log"
    child = spawn(["--url", server.url], log)
    try:
        child.expect(PROMPT)
        command(child, SHORT, "Set max_tokens=24")
        command(child, "hello", "Assistant", r"\d+ tokens · [\d.?]+ tok/s")
        child.sendline("/save tty url chat")
        child.expect(rf"Saved as ({ID_RE.pattern}): tty url chat")
        sid = child.match.group(1)
        child.expect(PROMPT)
        command(child, "/sessions", "tty url chat")
        command(child, "/params", "seed")
        command(child, "/system 0", "New chat with the default prompt")
        command(child, f"/load {sid}", f"Loaded {sid}")
        stop_a_long_reply(child)
        child.sendintr()  # Ctrl+C twice at the prompt exits, saving
        # the full suite can leave SIGINT ignored in pytest, and so in the CLI it spawns: the CLI restores it
        child.expect("Ctrl\\+C again")
        child.sendintr()
        child.expect(f"Chat saved: {sid}")
        assert close(child) == 0
    finally:
        child.terminate(force=True)
    assert_clean(log.read_text(encoding="utf-8"))
    deadline = time.monotonic() + 30
    while True:  # the server saves the partial reply once it notices the closed stream
        doc = httpx.get(f"{server.url}/api/sessions/{sid}", timeout=30).json()
        if last_reply(doc)["stopped"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert doc["title"] == "tty url chat"
    assert len(doc["messages"]) == 4 and last_reply(doc)["stopped"] is True


def test_terminal_control_from_data_is_never_printed(server: ServerProcess) -> None:
    """Titles and messages come from imported files: an escape sequence in them could retitle the
    terminal, clear it or write the clipboard. /sessions and /load print them without any."""
    evil = "\x1b]0;pwned\x07\x1b[2J\x1b]52;c;cHduZWQ=\x07\u202egnp.exe\x9b31m"
    doc = [
        {"role": "user", "content": f"hello {evil} there"},
        {"role": "assistant", "content": f"reply {evil} done"},
    ]
    with server.client() as http:
        sid = http.post("/api/sessions/import", json=doc).json()["id"]
        http.patch(f"/api/sessions/{sid}", json={"title": f"title {evil} end"})
    out = run_pipe(["--url", server.url], ["/sessions", f"/load {sid}"])
    assert_clean(out.stdout, out.stderr)
    printed = out.stdout + out.stderr
    assert "hello" in printed and "reply" in printed and "title" in printed, printed
    for bad in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert bad not in printed, (bad, printed)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["direct", "url"])
def test_persona_lore_prefix_and_impersonate(server: ServerProcess, mode: str) -> None:
    """/persona, /lore, /prefix and /impersonate, in the engine in-process and against the server."""
    with server.client() as http:
        assert http.put("/api/personas/Ken", json={"description": "{{user}} is a sailor."}).status_code == 200
        world = (ROOT / "tests" / "data" / "lore" / "eldoria_world_info.json").read_bytes()
        assert http.put("/api/lorebooks/Eldoria", json=json.loads(world)).status_code == 200
    args = (
        ["--url", server.url]
        if mode == "url"
        else ["--data-dir", str(server.data_dir), "--model", str(server.model)]
    )
    out = run_pipe(
        [*args, "--reply-prefix", "Aye,"],
        [
            SHORT,
            "/persona",
            "/persona ken",
            "/lore",
            "/lore Eldoria",
            "/lore Nope",
            "hello",
            "/save cli lore",
            "/impersonate",
            "/prefix",
            "/status",
        ],
    )
    assert_clean(out.stdout, out.stderr)
    assert out.returncode == 1  # /lore Nope
    assert re.search(r"Ken\s+default\s+\{\{user\}\} is a sailor", out.stdout)  # /persona lists
    assert "You are Ken in this chat." in out.stderr and "Attached: Eldoria." in out.stderr
    assert "No lorebook named 'Nope'" in out.stderr
    assert "Replies start freely." in out.stderr
    assert "Nothing was sent; send the draft yourself" in out.stderr  # /impersonate drafted something
    sid = saved_id(out.stdout, "cli lore")
    with server.client() as http:
        doc = http.get(f"/api/sessions/{sid}").json()
        assert doc["persona"] == "Ken" and doc["lorebooks"] == ["Eldoria"] and doc["reply_prefix"] == "Aye,"
        assert doc["messages"][-1]["content"].startswith("Aye,")
        assert len(doc["messages"]) == 2  # /impersonate saved nothing


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["direct", "url"])
def test_branch_commands(server: ServerProcess, mode: str) -> None:
    """/edit N, /regen N, /versions and /version: every edit branches, and the old branch comes back."""
    args = (
        ["--url", server.url]
        if mode == "url"
        else ["--data-dir", str(server.data_dir), "--model", str(server.model)]
    )
    out = run_pipe(
        args,
        [
            SHORT,
            "Name a fruit.",
            "Name a colour.",
            "/edit 1 Name a vegetable.",
            "/versions",
            "/versions 1",
            "/regen 2",
            "/version 1 1",
            "/versions 2",
        ],
    )
    assert out.returncode == 0, out.stderr
    assert_clean(out.stdout, out.stderr)
    text = out.stdout + out.stderr
    assert "Messages with versions" in text and "Versions of message 1" in text
    assert "Name a vegetable." in text
    sid = ID_RE.findall(text[text.rindex("Loaded ") :])[0]
    doc = httpx.get(f"{server.url}/api/sessions/{sid}").json()
    shown = [m["content"] for m in doc["messages"]]
    assert shown[0] == "Name a fruit." and shown[2] == "Name a colour."  # the first branch, intact
    assert (doc["messages"][0]["versions"], doc["messages"][0]["version"]) == (2, 0)
    assert doc["messages"][0]["alternatives"][1]["content"] == "Name a vegetable."
    assert len(doc["messages"][0]["alternatives"][1]["after"]) == 1  # its reply (regenerated: 2 versions)
