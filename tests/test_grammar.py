"""GBNF grammars: llama.cpp rejects a malformed one by returning a NULL sampler, which used to crash the
process on the first sample. Now every way in gets a 400 quoting llama.cpp's parse error, and the model
process is untouched; a valid grammar still constrains the reply."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from engine.session_formats import SCHEMA_VERSION
from tests.helpers import GREEDY, ROOT, TEST_ENV, ServerProcess, assert_error, free_port, server_fixture

pytestmark = pytest.mark.slow

BAD = ["root ::= (", 'root ::= "abc', "root ::= undefined-rule", "not a grammar at all"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServerProcess]:
    yield from server_fixture(tmp_path_factory, "grammar", model_path)


def worker_pid(server: ServerProcess) -> int:
    return int(httpx.get(server.url + "/api/health").json()["worker"]["pid"])


@pytest.mark.parametrize("grammar", BAD)
def test_a_bad_grammar_is_a_400_everywhere_and_nothing_crashes(server: ServerProcess, grammar: str) -> None:
    pid = worker_pid(server)
    msgs = [{"role": "user", "content": "Hi"}]
    with server.client() as c:
        for route, body in (
            ("/api/chat", {"messages": msgs, "params": {"grammar": grammar}}),
            ("/api/chat/stream", {"messages": msgs, "params": {"grammar": grammar}}),
            ("/api/chat", {"messages": msgs, "params": {"grammar": grammar}, "session_id": "new"}),
            ("/v1/chat/completions", {"model": "x", "messages": msgs, "grammar": grammar}),
        ):
            err = assert_error(c.post(route, json=body), 400, "grammar")
            assert "Invalid GBNF grammar" in err["message"], (route, err)
        assert c.get("/api/sessions").json() == []  # nothing was saved for the bad request
    assert worker_pid(server) == pid
    assert httpx.get(server.url + "/api/health").json()["worker"]["restarts"] == 0


def test_the_error_quotes_llama_cpps_parse_error(server: ServerProcess) -> None:
    resp = httpx.post(
        server.url + "/api/chat",
        json={"messages": [{"role": "user", "content": "Hi"}], "params": {"grammar": "root ::= ("}},
    )
    message = assert_error(resp, 400)["message"]
    assert "parse" in message.lower() or "expect" in message.lower(), message


def test_a_valid_grammar_constrains_the_reply(server: ServerProcess) -> None:
    params = {**GREEDY, "grammar": 'root ::= "yes" | "no"', "max_tokens": 8}
    resp = httpx.post(
        server.url + "/api/chat",
        json={"messages": [{"role": "user", "content": "Is the sky blue?"}], "params": params},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["reply"] in ("yes", "no")


def test_an_imported_chat_or_card_with_a_bad_grammar_is_refused_and_nothing_is_kept(
    server: ServerProcess,
) -> None:
    """Before: an imported chat or card kept its grammar, and the first turn on it met the NULL sampler."""
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    chat = {"schema_version": SCHEMA_VERSION, "title": "bad", "params": {"grammar": BAD[0]}, "messages": msgs}
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "Grammar",
            "description": "x",
            "extensions": {"local_llm_chat": {"sampling": {"grammar": BAD[0]}}},  # our own export's key
        },
    }
    with server.client() as c:
        before = {p["name"] for p in c.get("/api/presets").json()}
        err = assert_error(c.post("/api/sessions/import", json=chat), 400, "grammar")
        assert "Invalid GBNF grammar" in err["message"]
        files = {"file": ("grammar.json", orjson.dumps(card), "application/json")}
        resp = c.post("/api/presets/import", files=files, headers={"Origin": server.url})
        assert "Invalid GBNF grammar" in assert_error(resp, 400, "grammar")["message"]
        put = {"name": "grammar-put", "system_prompt": "x", "sampling": {"grammar": BAD[0]}}
        assert_error(c.put("/api/presets/grammar-put", json=put), 400, "grammar")
        assert c.get("/api/sessions").json() == []
        assert {p["name"] for p in c.get("/api/presets").json()} == before


def test_a_bad_grammar_in_the_config_refuses_to_start(tmp_path: Path, model_path: Path) -> None:
    env = {**os.environ, **TEST_ENV, "LLM_GENERATION__GRAMMAR": BAD[0]}
    cmd = [sys.executable, "-m", "webui", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")]
    out = subprocess.run(
        [*cmd, "--model", str(model_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "generation.grammar" in out.stderr and "Invalid GBNF grammar" in out.stderr
    assert "Traceback" not in out.stderr
