"""Personas, lorebooks, the prompt preview, impersonate and "start reply with" against the real server and
the real default model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.cards import placeholder_png
from tests.helpers import GREEDY, ServerProcess, assert_error, parse_sse, server_fixture

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data" / "lore"
WORLD = (DATA / "eldoria_world_info.json").read_bytes()
CARD = (DATA / "mira_card.json").read_bytes()
ASK = [{"role": "user", "content": "We ride to Eldoria tonight. Tell me a secret."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServerProcess]:
    yield from server_fixture(tmp_path_factory, "lore", model_path, env={"LLM_MODEL__N_CTX": "2048"})


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        assert c.put("/api/personas/Ken", json={"description": "{{user}} is a sailor."}).status_code == 200
        r = c.post("/api/lorebooks/import", files={"file": ("Eldoria.json", WORLD)})
        assert r.status_code == 200 and r.json() == {"name": "Eldoria", "entries": 19}, r.text
        yield c


def body(messages: list[dict[str, str]] = ASK, max_tokens: int = 12, **extra: Any) -> dict[str, Any]:
    return {"messages": messages, "params": {**GREEDY, "max_tokens": max_tokens}, **extra}


# --- personas ---------------------------------------------------------------------------------------


def test_persona_routes(client: httpx.Client) -> None:
    assert client.get("/api/personas/Ken").json() == {
        "name": "Ken",
        "description": "{{user}} is a sailor.",
        "avatar": None,
        "default": True,  # the first persona becomes the default
    }
    r = client.put("/api/personas/アン", json={"description": "船乗り", "default": False})
    assert r.status_code == 200 and r.json()["default"] is False
    assert [p["name"] for p in client.get("/api/personas").json()] == ["Ken", "アン"]
    assert client.delete("/api/personas/アン").json() == {"deleted": "アン"}
    assert_error(client.get("/api/personas/アン"), 404, "アン")
    assert_error(client.put("/api/personas/%20x", json={}), 400, "name")
    assert_error(client.put("/api/personas/Ken", json={"name": "Other"}), 400, "name")
    assert_error(client.put("/api/personas/Ken", json={"colour": "red"}), 400, "colour")


def test_a_persona_avatar_is_uploaded_over_the_api(client: httpx.Client, server: ServerProcess) -> None:
    png = placeholder_png("A", (32, 32))
    assert client.put("/api/personas/Ava", json={"description": "x", "default": False}).status_code == 200
    r = client.post("/api/personas/Ava/avatar", files={"file": ("me.png", png, "image/png")})
    assert r.status_code == 200, r.text
    stored = r.json()["avatar"]
    assert stored.startswith("avatar-") and stored.endswith(".png") and r.json()["default"] is False
    got = client.get("/api/personas/Ava/avatar")
    assert got.content == png and got.headers["content-type"] == "image/png"
    assert client.get("/api/personas/Ava").json()["avatar"] == stored
    assert client.get("/api/personas/Ken").json()["default"] is True  # the default stays as it was
    assert_error(client.post("/api/personas/Ava/avatar", files={"file": ("x.txt", b"hello")}), 400, "PNG")
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (5 * 1024 * 1024)
    assert_error(client.post("/api/personas/Ava/avatar", files={"file": ("big.png", big)}), 413, "5 MB")
    assert_error(client.post("/api/personas/Nobody/avatar", files={"file": ("a.png", png)}), 404, "Nobody")
    json_body = client.post("/api/personas/Ava/avatar", json={"file": "x"})
    assert json_body.status_code == 415 and "multipart" in json_body.json()["error"]["message"]
    evil = httpx.post(
        server.url + "/api/personas/Ava/avatar",
        files={"file": ("evil.gif", b"GIF89a" + b"\0" * 16)},
        headers={"Origin": "http://evil.example"},
    )
    assert evil.status_code == 403 and evil.json()["error"]["type"] == "forbidden_origin"
    assert client.get("/api/personas/Ava").json()["avatar"] == stored  # nothing changed
    assert client.delete("/api/personas/Ava").json() == {"deleted": "Ava"}


# --- lorebooks --------------------------------------------------------------------------------------


def test_lorebook_export_is_the_imported_world_info(client: httpx.Client) -> None:
    r = client.get("/api/lorebooks/Eldoria")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == json.loads(WORLD)
    assert {"name": "Eldoria", "entries": 19, "description": ""} in client.get("/api/lorebooks").json()


def test_lorebook_put_get_delete_and_card_import(client: httpx.Client) -> None:
    book = {"entries": {"0": {"uid": 0, "key": ["x"], "content": "y", "myField": [1]}}}
    assert client.put("/api/lorebooks/Tiny book", json=book).json() == {"name": "Tiny book", "entries": 1}
    assert client.get("/api/lorebooks/Tiny book").json()["entries"]["0"]["myField"] == [1]
    assert client.delete("/api/lorebooks/Tiny book").json() == {"deleted": "Tiny book"}
    assert_error(client.get("/api/lorebooks/Tiny book"), 404, "Tiny book")
    r = client.post("/api/lorebooks/import", files={"file": ("mira.json", CARD)})
    assert r.json() == {"name": "Mira's notes", "entries": 4}
    client.delete("/api/lorebooks/Mira's notes")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"not json", "not valid JSON"),
        (b'{"entries": {"0": {"uid": 0, "key": "a", "position": "top"}}}', "position"),
        (b'{"spec": "chara_card_v2", "data": {"name": "x"}}', "character_book"),
        (b"\x89PNG\r\n\x1a\nxx", "PNG"),
    ],
)
def test_a_bad_lorebook_file_gets_a_4xx_and_writes_nothing(
    client: httpx.Client, data: bytes, words: str
) -> None:
    before = client.get("/api/lorebooks").json()
    assert_error(client.post("/api/lorebooks/import", files={"file": ("bad.json", data)}), 400, words)
    assert client.get("/api/lorebooks").json() == before


def test_lorebook_names_stay_in_their_folder(client: httpx.Client) -> None:
    assert client.get("/api/lorebooks/..%2F..%2Fconfig").status_code in (400, 404)
    assert_error(client.put("/api/lorebooks/.hidden", json={"entries": {}}), 400, "name")


# --- preview -----------------------------------------------------------------------------------------


def test_preview_shows_the_prompt_and_which_lore_fired_and_why(client: httpx.Client) -> None:
    system = {"role": "system", "content": "You are talking with {{user}}."}
    r = client.post("/api/chat/preview", json=body([system, *ASK], persona="Ken", lorebooks=["Eldoria"]))
    assert r.status_code == 200, r.text
    out = r.json()
    lore = {(x["book"], x["uid"]): x for x in out["lore"]}
    assert {x["why"] for x in out["lore"]} >= {"constant", "Eldoria", "secret", "recursion"}
    assert lore[("Eldoria", 1)]["why"] == "recursion" and lore[("Eldoria", 1)]["comment"] == "Highspire"
    assert lore[("Eldoria", 18)]["where"] == "at depth 0 as assistant"
    assert "You are talking with Ken." in out["messages"][0]["content"]
    assert "Ken is a sailor." in out["messages"][0]["content"]
    assert "Eldoria is a mountain kingdom" in out["prompt"] and "<|im_start|>" in out["prompt"]
    assert isinstance(out["prompt_tokens"], int) and out["prompt_tokens"] > 50
    assert out["persona"]["name"] == "Ken"


def test_preview_of_a_card_with_its_book_and_an_attached_book(client: httpx.Client) -> None:
    r = client.post("/api/presets/import", files={"file": ("mira.json", CARD)})
    preset = r.json()["name"]
    msgs = [{"role": "user", "content": "Mira, is the Queen of Eldoria kind?"}]
    out = client.post("/api/chat/preview", json=body(msgs, preset=preset, lorebooks=["Eldoria"])).json()
    books = {(x["book"], x["uid"]): x["why"] for x in out["lore"]}
    assert books[("Mira (character)", 2)] == "Mira" and books[("Mira (character)", 4)] == "Queen"
    assert books[("Eldoria", 0)] == "Eldoria"


def test_preview_generates_nothing_and_saves_nothing(client: httpx.Client) -> None:
    sid = client.post("/api/chat", json=body(session_id="new", lorebooks=["Eldoria"])).json()["session_id"]
    before = client.get(f"/api/sessions/{sid}").content
    out = client.post(
        "/api/chat/preview", json=body([{"role": "user", "content": "What is Highspire?"}], session_id=sid)
    ).json()
    assert out["messages"][-1]["content"] == "What is Highspire?"
    assert ("Eldoria", 1) in {(x["book"], x["uid"]) for x in out["lore"]}  # the session kept its book
    assert client.get(f"/api/sessions/{sid}").content == before


def test_unknown_persona_or_book_is_a_4xx_before_anything_runs(client: httpx.Client) -> None:
    assert_error(client.post("/api/chat", json=body(lorebooks=["Nope"])), 404, "Nope")
    assert_error(client.post("/api/chat/stream", json=body(persona="Nobody")), 404, "Nobody")
    assert_error(client.post("/api/chat/preview", json=body(persona={"name": ""})), 400)
    before = client.get("/api/sessions").json()
    assert_error(client.post("/api/chat", json=body(session_id="new", lorebooks=["Nope"])), 404, "Nope")
    assert client.get("/api/sessions").json() == before


# --- on the real model ------------------------------------------------------------------------------


def test_persona_name_replaces_user(client: httpx.Client) -> None:
    msgs = [
        {"role": "system", "content": "The user's name is {{user}}."},
        {"role": "user", "content": "What is my name? Answer with the name only."},
    ]
    out = client.post("/api/chat/preview", json=body(msgs, persona="Ken")).json()
    assert out["messages"][0]["content"].startswith("The user's name is Ken.")
    reply = client.post(
        "/api/chat", json=body(msgs, persona={"name": "Zoltan", "description": ""}, max_tokens=8)
    )
    assert reply.status_code == 200
    assert "{{user}}" not in reply.json()["reply"]


def test_reply_begins_with_its_prefix_and_the_session_keeps_it(client: httpx.Client) -> None:
    # the model continues the prefix: the templated prompt ends with the assistant header and the prefix
    # (the reply's first delta is the prefix itself whatever the model does, so this is the model's side)
    preview = client.post("/api/chat/preview", json=body(reply_prefix="Ahoy,")).json()
    assert preview["prompt"].endswith("<|im_start|>assistant\nAhoy,"), preview["prompt"][-80:]
    assert preview["messages"][-1] == {"role": "assistant", "content": "Ahoy,"}
    r = client.post("/api/chat", json=body(session_id="new", reply_prefix="Ahoy,"))
    assert r.status_code == 200, r.text
    assert r.json()["reply"].startswith("Ahoy,") and len(r.json()["reply"]) > len("Ahoy,")
    sid = r.json()["session_id"]
    r2 = client.post(
        "/api/chat/stream", json=body([{"role": "user", "content": "And then?"}], session_id=sid)
    )
    deltas = [d["delta"] for name, d in parse_sse(r2.text) if "delta" in d]
    assert "".join(deltas).startswith("Ahoy,")  # the session remembers the prefix
    saved = client.get(f"/api/sessions/{sid}").json()
    assert saved["reply_prefix"] == "Ahoy,"
    assert [m["content"][:5] for m in saved["messages"] if m["role"] == "assistant"] == ["Ahoy,", "Ahoy,"]
    follow_up = {"messages": [{"role": "user", "content": "More?"}], "session_id": sid}
    later = client.post("/api/chat/preview", json=follow_up).json()
    assert later["prompt"].endswith("<|im_start|>assistant\nAhoy,")  # the session's prefix, model side


def test_a_hidden_prefix_is_generated_from_but_not_kept(client: httpx.Client) -> None:
    r = client.post("/api/chat", json=body(reply_prefix="Ahoy,", show_reply_prefix=False, session_id="new"))
    reply = r.json()["reply"]
    assert reply and not reply.startswith("Ahoy,")
    saved = client.get(f"/api/sessions/{r.json()['session_id']}").json()
    assert saved["messages"][-1]["content"] == reply


def test_impersonate_streams_a_user_draft_and_saves_nothing(client: httpx.Client) -> None:
    sid = client.post("/api/chat", json=body(session_id="new", persona="Ken")).json()["session_id"]
    before = client.get(f"/api/sessions/{sid}").content
    r = client.post("/api/chat/impersonate", json=body([], session_id=sid, max_tokens=16))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    text = "".join(d["delta"] for _, d in events if "delta" in d)
    assert text.strip() and events[-1][1]["done"] is True and "session_id" not in events[-1][1]
    assert client.get(f"/api/sessions/{sid}").content == before
    stateless = client.post("/api/chat/impersonate", json=body(ASK, persona="Ken", max_tokens=8))
    assert "".join(d.get("delta", "") for _, d in parse_sse(stateless.text)).strip()


def test_openai_api_accepts_the_extras(client: httpx.Client) -> None:
    r = client.post(
        "/v1/chat/completions",
        json={
            "messages": ASK,
            "temperature": 0,
            "max_tokens": 8,
            "reply_prefix": "Ahoy,",
            "persona": "Ken",
            "lorebooks": ["Eldoria"],
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].startswith("Ahoy,")
    bad = client.post("/v1/chat/completions", json={"messages": ASK, "lorebooks": ["Nope"]})
    assert bad.status_code == 404 and "Nope" in bad.json()["error"]["message"]
