"""Branches on the real model and server: switching back to an earlier branch evaluates only the tokens
after the branch point (the KV prefix of the visible path is reused)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import GREEDY, ServerProcess, server_fixture

pytestmark = pytest.mark.slow

LONG = "Here are my notes on the history of tea, which I want you to remember. " * 12 + "What is tea?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServerProcess]:
    yield from server_fixture(tmp_path_factory, "branches", model_path)


def test_switching_back_to_a_branch_evaluates_only_after_the_branch_point(server: ServerProcess) -> None:
    params = {**GREEDY, "max_tokens": 12}
    with server.client() as c:
        first = c.post(
            "/api/chat",
            json={"messages": [{"role": "user", "content": LONG}], "session_id": "new", "params": params},
        ).json()
        sid = first["session_id"]
        head = first["metrics"]["prompt_tokens"]  # the system prompt and the long first message
        c.post(
            "/api/chat", json={"messages": [{"role": "user", "content": "And coffee?"}], "session_id": sid}
        )
        r = c.post(
            f"/api/sessions/{sid}/edit", json={"index": 2, "content": "And green tea?", "params": params}
        )
        assert b'"done":true' in r.content
        back = c.post(f"/api/sessions/{sid}/select", json={"index": 2, "version": 0}).json()
        assert [m["content"] for m in back["messages"]][2] == "And coffee?"
        turn = c.post(
            "/api/chat",
            json={
                "messages": [{"role": "user", "content": "Which is stronger?"}],
                "session_id": sid,
                "params": params,
            },
        ).json()
    metrics = turn["metrics"]
    after_branch_point = metrics["prompt_tokens"] - head
    assert 0 < metrics["prompt_eval_tokens"] <= after_branch_point + 8, (metrics, head)
    assert metrics["prompt_eval_tokens"] < metrics["prompt_tokens"] / 2
