"""Group chats through the API (create_app, scripted backend): starting one, who answers (natural with a
mention, list, manual, forced), each reply's speaker, the prompt's group parts, lore per speaker, the
exports, and SillyTavern JSONL in and out. The speaker logic itself is tested in test_group_chat; the real
model runs in test_group_real."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from engine import EngineError, Runtime
from engine.st_chat import parse_st_jsonl
from tests.scripted import ScriptedBackend, scripted_client, scripted_runtime

FIXTURES = Path(__file__).parent / "fixtures"
PAIR = ["friendly", "teacher"]  # "Friendly Assistant" and "Patient Teacher"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Runtime, ScriptedBackend]]:
    backend = ScriptedBackend()
    rt = scripted_runtime(tmp_path / "data", backend)
    with scripted_client(rt) as client:
        yield client, rt, backend


def start(client: TestClient, text: str, **extra: object) -> dict:
    body = {"messages": [{"role": "user", "content": text}], "session_id": "new", "characters": PAIR, **extra}
    r = client.post("/api/chat", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def say(client: TestClient, sid: str, text: str, **extra: object) -> dict:
    r = client.post(
        "/api/chat", json={"messages": [{"role": "user", "content": text}], "session_id": sid, **extra}
    )
    assert r.status_code == 200, r.text
    return r.json()


def names(client: TestClient, sid: str) -> list[str | None]:
    doc = client.get(f"/api/sessions/{sid}").json()
    return [m.get("name") for m in doc["messages"] if m["role"] == "assistant"]


def test_a_named_character_answers_and_each_reply_records_its_speaker(
    api: tuple[TestClient, Runtime, ScriptedBackend],
) -> None:
    client, _rt, backend = api
    backend.enqueue("Patient Teacher: Gladly.")  # the model echoes the name as the history reads
    sid = start(client, "Patient Teacher, can you explain fractions?")["session_id"]
    doc = client.get(f"/api/sessions/{sid}").json()
    assert [c["name"] for c in doc["characters"]] == PAIR and doc["group"]["order"] == "natural"
    assert doc["messages"][-1] == {**doc["messages"][-1], "name": "Patient Teacher", "content": "Gladly."}
    system = backend.prompts[-1][0]["content"]
    assert "Friendly Assistant" in system and "Patient Teacher" in system  # both cards (join)
    assert system.rstrip().endswith("Write the next reply only as Patient Teacher.")
    say(client, sid, "Thanks! And you, Friendly Assistant?")
    assert names(client, sid) == ["Patient Teacher", "Friendly Assistant"]
    history = backend.prompts[-1][1:]
    assert {"role": "assistant", "content": "Patient Teacher: Gladly."} in history  # past speakers named


def test_join_keeps_the_prompt_prefix_whoever_speaks(
    api: tuple[TestClient, Runtime, ScriptedBackend],
) -> None:
    client, _rt, backend = api
    sid = start(client, "Hello both.", speaker="friendly")["session_id"]
    say(client, sid, "Go on.", speaker="teacher")
    first, second = (p[0]["content"] for p in backend.prompts)
    assert first.rsplit("\n", 1)[0] == second.rsplit("\n", 1)[0] and first != second


def test_list_order_takes_turns_and_manual_order_needs_a_speaker(
    api: tuple[TestClient, Runtime, ScriptedBackend],
) -> None:
    client, _rt, _backend = api
    sid = start(client, "Hi.", group={"order": "list"})["session_id"]
    for text in ("One.", "Two.", "Three."):
        say(client, sid, text)
    spoken = names(client, sid)
    assert len(spoken) == 4 and set(spoken) == {"Friendly Assistant", "Patient Teacher"}
    assert all(a != b for a, b in zip(spoken, spoken[1:], strict=False))  # in turn
    manual = client.post(
        "/api/chat",
        json={
            "messages": [{"role": "user", "content": "x"}],
            "session_id": "new",
            "characters": PAIR,
            "group": {"order": "manual"},
        },
    )
    assert manual.status_code == 400 and "name one" in manual.json()["error"]["message"]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"speaker": "nobody"}, "its members are"),
        ({"preset": "friendly"}, "not both"),
        ({"group": {"order": "loud"}}, "group.order"),
        ({"group": {"muted": ["ghost"]}}, "not a member"),
        ({"characters": ["friendly", "nobody"]}, "nobody"),
    ],
)
def test_bad_group_requests_are_refused_and_nothing_is_saved(
    api: tuple[TestClient, Runtime, ScriptedBackend], extra: dict, says: str
) -> None:
    client, rt, _backend = api
    body = {"messages": [{"role": "user", "content": "x"}], "session_id": "new", "characters": PAIR, **extra}
    r = client.post("/api/chat", json=body)
    assert r.status_code in (400, 404), r.text
    assert says in r.json()["error"]["message"]
    assert rt.sessions.list() == []


def test_a_muted_member_speaks_only_when_forced(api: tuple[TestClient, Runtime, ScriptedBackend]) -> None:
    client, _rt, _backend = api
    sid = start(client, "Patient Teacher?", group={"muted": ["teacher"]})["session_id"]
    say(client, sid, "Patient Teacher, please?")
    assert names(client, sid) == ["Friendly Assistant", "Friendly Assistant"]
    say(client, sid, "Now you.", speaker="teacher")
    assert names(client, sid)[-1] == "Patient Teacher"


def test_a_stateless_group_turn_sends_what_a_saved_one_would(
    api: tuple[TestClient, Runtime, ScriptedBackend],
) -> None:
    client, _rt, backend = api
    chat = [{"role": "user", "content": "Hello, Patient Teacher."}]
    client.post("/api/chat", json={"messages": chat, "characters": PAIR})
    start(client, "Hello, Patient Teacher.")
    v1 = client.post("/v1/chat/completions", json={"model": "x", "messages": chat, "characters": PAIR})
    assert v1.status_code == 200, v1.text
    assert backend.prompts[0] == backend.prompts[1] == backend.prompts[2]


def test_sillytavern_group_chat_imports_and_exports(api: tuple[TestClient, Runtime, ScriptedBackend]) -> None:
    client, rt, backend = api
    data = (FIXTURES / "st_group_chat.jsonl").read_bytes()
    r = client.post("/api/sessions/import", content=data, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    sid = r.json()["id"]
    doc = client.get(f"/api/sessions/{sid}").json()
    original = parse_st_jsonl(data)
    assert [m["content"] for m in doc["messages"]] == [m["content"] for m in original["messages"]]
    assert {c["title"] for c in doc["characters"]} >= {"Alice", "Bob"}
    assert any(m.get("name") == "Bob" for m in doc["messages"])
    exported = client.get(f"/api/sessions/{sid}/sillytavern.jsonl")
    assert exported.status_code == 200
    again = parse_st_jsonl(exported.content)
    assert [(m["role"], m["content"], m.get("name")) for m in again["messages"]] == [
        (m["role"], m["content"], m.get("name")) for m in original["messages"]
    ]
    backend.enqueue("Bob: On it.")
    say(client, sid, "Bob, fix it please.")
    assert names(client, sid)[-1] == "Bob"
    assert rt.sessions.get(sid).messages[-1].content == "On it."


def test_a_sillytavern_single_chat_imports_with_its_character(
    api: tuple[TestClient, Runtime, ScriptedBackend],
) -> None:
    client, _rt, _backend = api
    data = (FIXTURES / "st_single_chat.jsonl").read_bytes()
    r = client.post("/api/sessions/import", content=data, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    doc = client.get(f"/api/sessions/{r.json()['id']}").json()
    assert doc["character"] is not None and not doc["characters"]
    header = orjson.loads(data.split(b"\n", 1)[0])
    assert doc["character"]["title"] == header["character_name"]


def test_speak_now_adds_a_reply_after_the_last_message_without_user_text(
    api: tuple[TestClient, Runtime, ScriptedBackend],
) -> None:
    """ "Speak now": a send with no user text, in a group chat, appends the forced member's reply; the
    prompt ends with a turn naming the speaker (or the backend would continue the last reply)."""
    client, rt, backend = api
    sid = start(client, "Hello both.", speaker="friendly")["session_id"]
    backend.enqueue("Patient Teacher: And hello from me.")
    text = rt.turn(session=sid, speaker="teacher").text()
    assert text == "Patient Teacher: And hello from me."
    doc = client.get(f"/api/sessions/{sid}").json()
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant", "assistant"]
    assert doc["messages"][-1]["name"] == "Patient Teacher"
    assert doc["messages"][-1]["content"] == "And hello from me."
    prompt = backend.prompts[-1]
    assert prompt[-1]["content"] == "[Write the next reply only as Patient Teacher.]"
    assert prompt[-2]["role"] == "assistant" and prompt[-2]["content"].startswith("Friendly Assistant: ")
    single = rt.turn([{"role": "user", "content": "Hi."}], session="new", preset="friendly")
    single.text()
    with pytest.raises(EngineError, match="empty"):
        rt.turn(session=single.session_id)  # a one-character chat needs the user's message


def test_group_exports_name_each_reply_by_its_speaker(
    api: tuple[TestClient, Runtime, ScriptedBackend],
) -> None:
    client, _rt, backend = api
    backend.enqueue("Hello from the friendly one.")
    sid = start(client, "Hello both.", speaker="friendly")["session_id"]
    backend.enqueue("Hello from the teacher.")
    say(client, sid, "And you?", speaker="teacher")
    md = client.get(f"/api/sessions/{sid}/markdown").text
    assert "- Characters: Friendly Assistant, Patient Teacher" in md
    heads = [line.split(" · ")[0] for line in md.splitlines() if line.startswith("**")]
    assert heads == ["**User**", "**Friendly Assistant**", "**User**", "**Patient Teacher**"]
    messages = client.get(f"/api/sessions/{sid}/openai.json").json()
    assert [m["content"] for m in messages] == [
        "Hello both.",
        "Hello from the friendly one.",
        "And you?",
        "Hello from the teacher.",
    ]


@pytest.mark.parametrize("kind", ["application/jsonl", "application/x-ndjson", "application/x-jsonlines"])
def test_sillytavern_jsonl_imports_with_a_json_lines_content_type(
    api: tuple[TestClient, Runtime, ScriptedBackend], kind: str
) -> None:
    client, _rt, _backend = api
    data = (FIXTURES / "st_group_chat.jsonl").read_bytes()
    r = client.post("/api/sessions/import", content=data, headers={"content-type": kind})
    assert r.status_code == 200, r.text
    doc = client.get(f"/api/sessions/{r.json()['id']}").json()
    assert [m["content"] for m in doc["messages"]] == [m["content"] for m in parse_st_jsonl(data)["messages"]]
    # only the import takes JSON Lines, and a CORS-simple type is still refused there
    body = orjson.dumps({"messages": [{"role": "user", "content": "hi"}]})
    assert client.post("/api/chat", content=body, headers={"content-type": kind}).status_code == 415
    plain = client.post("/api/sessions/import", content=data, headers={"content-type": "text/plain"})
    assert plain.status_code == 415 and "application/jsonl" in plain.json()["error"]["message"]


def card(name: str, key: str, lore: str) -> bytes:
    """A V2 character card whose character_book has one entry: `lore` when `key` is mentioned."""
    book = {"name": f"{name}'s book", "entries": [{"id": 1, "keys": [key], "content": lore, "enabled": True}]}
    data = {"name": name, "description": f"{name} lives here.", "first_mes": "", "character_book": book}
    return orjson.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": data})


def prompt_text(backend: ScriptedBackend) -> str:
    return "\n".join(str(m["content"]) for m in backend.prompts[-1])


def test_each_speaker_brings_their_own_character_book(
    api: tuple[TestClient, Runtime, ScriptedBackend],
) -> None:
    """Lore applies per speaker: the speaker's own character_book, not another member's (unless that book is
    attached to the chat as a lorebook)."""
    client, rt, backend = api
    alice = rt.presets.import_bytes("alice.json", card("Alice", "dragon", "ALICE-LORE")).name
    bob = rt.presets.import_bytes("bob.json", card("Bob", "dragon", "BOB-LORE")).name
    sid = start(client, "Tell me of the dragon.", characters=[alice, bob], speaker=alice)["session_id"]
    assert "ALICE-LORE" in prompt_text(backend) and "BOB-LORE" not in prompt_text(backend)
    say(client, sid, "The dragon, Bob?", speaker=bob)
    assert "BOB-LORE" in prompt_text(backend) and "ALICE-LORE" not in prompt_text(backend)
    rt.lorebooks.put("bobs-book", orjson.loads(card("Bob", "dragon", "BOB-LORE")))
    say(client, sid, "The dragon again, Alice.", speaker=alice, lorebooks=["bobs-book"])
    assert "ALICE-LORE" in prompt_text(backend) and "BOB-LORE" in prompt_text(backend)


def test_the_lore_scan_names_each_reply_by_its_own_speaker(
    api: tuple[TestClient, Runtime, ScriptedBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: every past reply was scanned as "<current speaker>: text", so an entry keyed on who said
    something matched the wrong member."""
    import engine.chat_prompt as chat_prompt

    scans: list[list[tuple[str, str]]] = []
    real = chat_prompt.activate

    def spy(sources: Any, scan: Any, *rest: Any) -> Any:
        scans.append(list(scan.messages))
        return real(sources, scan, *rest)

    monkeypatch.setattr(chat_prompt, "activate", spy)
    client, rt, backend = api
    alice = rt.presets.import_bytes("alice.json", card("Alice", "dragon", "ALICE-LORE")).name
    bob = rt.presets.import_bytes("bob.json", card("Bob", "dragon", "BOB-LORE")).name
    backend.enqueue("I am Alice.")
    sid = start(client, "Who is there?", characters=[alice, bob], speaker=alice)["session_id"]
    backend.enqueue("And I am Bob.")
    say(client, sid, "Anyone else?", speaker=bob)
    say(client, sid, "Thanks.", speaker=alice)
    assert scans[-1] == [
        ("User", "Who is there?"),
        ("Alice", "I am Alice."),
        ("User", "Anyone else?"),
        ("Bob", "And I am Bob."),
        ("User", "Thanks."),
    ]


def test_a_group_preview_shows_the_chosen_speakers_turn(
    api: tuple[TestClient, Runtime, ScriptedBackend],
) -> None:
    """Before: /api/chat/preview dropped `characters`, `speaker` and `group`, so a group body previewed as
    a plain chat. Now it shows the prompt the group turn sends, for the speaker asked for."""
    client, _rt, backend = api
    chat = [{"role": "user", "content": "Hello both."}]
    persona = {"name": "Ken", "description": "{{user}} is a sailor."}
    for speaker, title in (("teacher", "Patient Teacher"), ("friendly", "Friendly Assistant")):
        body = {"messages": chat, "characters": PAIR, "speaker": speaker, "persona": persona}
        r = client.post("/api/chat/preview", json=body)
        assert r.status_code == 200, r.text
        system = r.json()["messages"][0]["content"]
        assert system.rstrip().endswith(f"Write the next reply only as {title}.")
        assert "Friendly Assistant" in system and "Patient Teacher" in system  # both cards (join)
        assert "Ken is a sailor." in system and r.json()["persona"]["name"] == "Ken"
        assert f"only as {title}." in r.json()["prompt"]
        client.post("/api/chat", json=body)
        assert backend.prompts[-1] == r.json()["messages"]  # the preview is what the turn sends
    bad = client.post("/api/chat/preview", json={"messages": chat, "characters": PAIR, "speaker": "nobody"})
    assert bad.status_code == 400 and "its members are" in bad.json()["error"]["message"]
    both = client.post("/api/chat/preview", json={"messages": chat, "characters": PAIR, "preset": "friendly"})
    assert both.status_code == 400 and "not both" in both.json()["error"]["message"]


def test_a_saved_group_chats_preview_and_impersonate_take_the_speaker(
    api: tuple[TestClient, Runtime, ScriptedBackend],
) -> None:
    client, _rt, backend = api
    sid = start(client, "Hello both.", speaker="friendly")["session_id"]
    before = client.get(f"/api/sessions/{sid}").content
    out = client.post(
        "/api/chat/preview",
        json={"messages": [{"role": "user", "content": "Go on."}], "session_id": sid, "speaker": "teacher"},
    ).json()
    assert out["messages"][0]["content"].rstrip().endswith("only as Patient Teacher.")
    assert out["messages"][-1] == {"role": "user", "content": "Go on."}
    r = client.post("/api/chat/impersonate", json={"session_id": sid, "speaker": "teacher"})
    assert r.status_code == 200 and "data:" in r.text
    assert backend.prompts[-1][0]["content"].rstrip().endswith("only as Patient Teacher.")
    draft_ask = backend.prompts[-1][-1]
    assert draft_ask["role"] == "system" and "User's next message" in draft_ask["content"]
    assert "not as Patient Teacher" in draft_ask["content"]  # {{char}} is the speaker asked for
    r = client.post(
        "/api/chat/impersonate",
        json={"messages": [{"role": "user", "content": "Hi."}], "characters": PAIR, "speaker": "teacher"},
    )
    assert r.status_code == 200 and "data:" in r.text
    stateless = backend.prompts[-1]
    assert stateless[0]["content"].rstrip().endswith("only as Patient Teacher.")
    assert stateless[-1]["role"] == "system" and stateless[-2]["content"].endswith("Hi.")
    assert client.get(f"/api/sessions/{sid}").content == before  # nothing saved
