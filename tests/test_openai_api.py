"""The OpenAI-compatible API, driven by the official `openai` SDK against the real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import (
    GREEDY,
    ServerProcess,
    assert_no_traceback,
    give_up_on_whole_reply,
    queue_ms_of_next_request,
    server_fixture,
)

pytestmark = pytest.mark.slow

N_CTX = 1024
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
HI = [{"role": "user", "content": "Hi!"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServerProcess]:
    yield from server_fixture(tmp_path_factory, "openai", model_path, env={"LLM_MODEL__N_CTX": str(N_CTX)})


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def model_id(client: openai.OpenAI, model_path: Path) -> str:
    models = client.models.list().data
    assert [m.id for m in models] == [model_path.name]
    return models[0].id


def create(client: openai.OpenAI, model_id: str, messages: list[Any], **kw: Any) -> Any:
    return client.chat.completions.create(model=model_id, messages=messages, **{**GREEDY, **kw})


def test_models_list(client: openai.OpenAI, model_path: Path) -> None:
    page = client.models.list()
    assert len(page.data) == 1
    assert page.data[0].id == model_path.name
    assert page.data[0].object == "model"


def test_completion_length(client: openai.OpenAI, model_id: str) -> None:
    out = create(client, model_id, STORY, max_tokens=8)
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    choice = out.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason == "length"
    assert out.usage is not None
    assert out.usage.completion_tokens == 8
    assert out.usage.prompt_tokens > 0
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert out.model == model_id


def test_completion_stop(client: openai.OpenAI, model_id: str) -> None:
    out = create(client, model_id, HI, max_tokens=64)
    assert out.choices[0].finish_reason == "stop"
    assert 0 < out.usage.completion_tokens < 64
    # a stop sequence also ends with "stop", and the text stops before it
    words = out.choices[0].message.content.split()
    assert len(words) >= 3
    cut = create(client, model_id, HI, max_tokens=64, stop=[words[2]])
    assert cut.choices[0].finish_reason == "stop"
    assert words[2] not in cut.choices[0].message.content
    assert cut.usage.completion_tokens < out.usage.completion_tokens


def collect(stream: Any) -> tuple[str, list[Any]]:
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_streaming_with_usage_matches_plain(client: openai.OpenAI, model_id: str) -> None:
    # Same prompt-cache state for both (see tests/test_http.py): warm it first.
    create(client, model_id, STORY, max_tokens=1)
    plain = create(client, model_id, STORY, max_tokens=16)
    text, chunks = collect(
        create(client, model_id, STORY, max_tokens=16, stream=True, stream_options={"include_usage": True})
    )
    assert text == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) >= 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
    assert usage_chunks[0].usage.completion_tokens == 16
    assert usage_chunks[0].usage.prompt_tokens == plain.usage.prompt_tokens


def test_streaming_without_usage_and_stop(client: openai.OpenAI, model_id: str) -> None:
    text, chunks = collect(create(client, model_id, HI, max_tokens=64, stream=True))
    assert text.strip()
    assert all(c.usage is None for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]


def test_content_parts_developer_role_and_unknown_fields(client: openai.OpenAI, model_id: str) -> None:
    messages: list[Any] = [
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": "Say hello."}]},
    ]
    out = create(
        client,
        model_id,
        messages,
        max_tokens=4,
        user="someone",
        logit_bias={"1": 0},
        n=1,
        extra_body={"not_an_openai_field": True, "cache_prompt": True},
    )
    assert out.choices[0].message.content
    assert out.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"temperature": 9}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"seed": -5}, "seed"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
    ],
)
def test_invalid_values_are_openai_shaped_400(
    client: openai.OpenAI, model_id: str, kw: dict[str, Any], param: str
) -> None:
    messages = kw.pop("messages", HI)
    with pytest.raises(openai.BadRequestError) as info:
        create(client, model_id, messages, **{"max_tokens": 4, **kw})
    err = info.value.response.json()["error"]
    assert_no_traceback(info.value.response.text)
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    if param in kw:
        assert param in err["message"]


def test_raw_http_errors(server: ServerProcess) -> None:
    with server.client() as http:
        bad_json = http.post(
            "/v1/chat/completions", content=b"{", headers={"content-type": "application/json"}
        )
        assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
        missing = http.get("/v1/nothing-here")
        assert missing.status_code == 404 and set(missing.json()["error"]) >= {
            "message",
            "type",
            "param",
            "code",
        }


def test_stream_failure_reaches_the_sdk(client: openai.OpenAI, model_id: str) -> None:
    too_long = [{"role": "user", "content": "lighthouse " * (N_CTX + 200)}]
    with pytest.raises(openai.APIError) as info:
        collect(create(client, model_id, too_long, max_tokens=4, stream=True))
    assert "context window" in str(info.value)
    with pytest.raises(openai.BadRequestError, match="context window"):
        create(client, model_id, too_long, max_tokens=4)


def test_wrong_api_key_is_ignored_without_server_key(server: ServerProcess) -> None:
    # no --api-key on this server: any key (or none) works, as with llama.cpp's server
    r = httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer whatever"})
    assert r.status_code == 200


def test_closed_stream_frees_the_model(client: openai.OpenAI, model_id: str, server: ServerProcess) -> None:
    stream = create(client, model_id, STORY, max_tokens=400, stream=True)
    received = 0
    for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].delta.content)
        if received == 3:
            break
    stream.close()
    assert received == 3
    assert queue_ms_of_next_request(server.url) < 1000


def test_client_timeout_frees_the_model(server: ServerProcess) -> None:
    give_up_on_whole_reply(
        server.url, "/v1/chat/completions", {"messages": STORY, "max_tokens": 400, **GREEDY}
    )
    assert queue_ms_of_next_request(server.url) < 1000
