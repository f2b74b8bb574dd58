"""SillyTavern chat JSONL: import (single, group, Chub, old headerless group files), export, round trips
and malformed files."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import EngineError, InvalidInput, TooLarge
from engine.session_formats import MAX_IMPORT_BYTES, session_from_doc
from engine.st_chat import humanized, is_st_jsonl, parse_st_jsonl, parse_time, to_st_jsonl

FIXTURES = Path(__file__).parent / "fixtures"
SINGLE = (FIXTURES / "st_single_chat.jsonl").read_bytes()
GROUP = (FIXTURES / "st_group_chat.jsonl").read_bytes()
SID = "s-20250101-120000-abcdef"


def jsonl(*objs: Any) -> bytes:
    return b"\n".join(orjson.dumps(o) for o in objs)


def as_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without the fields that schema 2 adds (per-message `name`, `characters`), so that
    today's schema can check everything else."""
    messages = [{k: v for k, v in m.items() if k != "name"} for m in doc["messages"]]
    rest = {k: v for k, v in doc.items() if k != "characters"}
    return {**rest, "messages": messages, "schema_version": 1}


# ---- import -----------------------------------------------------------------------------------------


def test_a_single_chat_imports_with_its_swipes_names_and_times() -> None:
    doc = parse_st_jsonl(SINGLE)
    assert doc["character_name"] == "Seraphina" and "characters" not in doc
    assert doc["persona"] == {"name": "Mika", "description": ""}
    assert doc["created_at"] == "2025-03-14T18:02:11.000Z"
    assert doc["title"] == "Where am I? The last thing I remember is the forest..."
    m = doc["messages"]
    assert [x["role"] for x in m] == ["assistant", "user", "assistant", "system", "user", "assistant"]
    assert all("name" not in x for x in m)  # one character: no speaker names needed
    greeting = m[0]
    assert greeting["greeting"] is True and greeting["selected"] == 0
    assert greeting["time"] == "2025-03-14T18:02:00.000Z"  # "March 14, 2025 6:02pm"
    assert greeting["alternatives"][1]["content"].startswith("*A soft voice")
    reply = m[2]
    assert reply["selected"] == 1 and len(reply["alternatives"]) == 3
    assert reply["content"] == reply["alternatives"][1]["content"]
    assert reply["reasoning"] == "The user is confused; reassure them first."
    assert reply["alternatives"][0] == {
        "content": "You are safe now. Rest.",
        "time": "2025-03-14T18:03:31.000Z",
        "reasoning": "",
    }
    assert reply["alternatives"][2]["time"] == "2025-03-14T18:03:50.000Z"  # epoch milliseconds
    assert m[3] == {
        "role": "system",
        "content": "(OOC: this note is hidden from the prompt)",
        "time": "2025-03-14T18:04:02.000Z",
    }
    assert "alternatives" not in m[5]  # one swipe is no version
    assert m[5]["content"] == "I am the guardian of this forest.\n\nAnd you, it seems, are my guest."
    session = session_from_doc(as_v1(doc), SID, imported=True)
    assert session.messages[2].alternatives[1].content == reply["content"]
    assert session.persona == {"name": "Mika", "description": ""}


def test_a_group_chat_imports_with_each_speaker() -> None:
    doc = parse_st_jsonl(GROUP)
    assert doc["characters"] == ["Alice", "Bob", "Carol"] and "character_name" not in doc
    assert doc["persona"] == {"name": "Sam", "description": ""}  # from the messages: the header says "unused"
    m = doc["messages"]
    assert [(x["role"], x.get("name")) for x in m] == [
        ("assistant", "Alice"),
        ("assistant", "Bob"),
        ("user", None),
        ("assistant", "Bob"),
        ("assistant", "Carol"),
        ("system", None),  # a narrator message (/sys)
    ]
    assert [x.get("greeting", False) for x in m] == [True, True, False, False, False, False]
    assert m[3]["selected"] == 1 and m[3]["alternatives"][0]["content"] == "I plead the fifth."
    assert doc["created_at"] == "2025-04-02T09:15:00.000Z"  # no create_date: the first message's time
    session_from_doc(as_v1(doc), SID, imported=True)


def test_an_old_group_chat_without_a_header_and_chub_messages() -> None:
    data = jsonl(
        {"name": "Alice", "is_user": False, "mes": "Hi", "send_date": 1700000000000},
        {"name": "Me", "is_user": True, "mes": {"message": "hello"}},
        {"name": "Bob", "is_user": False, "mes": {"message": "yo"}, "swipes": [{"message": "yo"}, "sup"]},
    )
    doc = parse_st_jsonl(data)
    assert doc["characters"] == ["Alice", "Bob"]
    assert doc["persona"]["name"] == "Me"
    assert [x["content"] for x in doc["messages"]] == ["Hi", "hello", "yo"]
    assert [a["content"] for a in doc["messages"][2]["alternatives"]] == ["yo", "sup"]
    assert doc["messages"][0]["time"] == "2023-11-14T22:13:20.000Z"


def test_lenient_where_sillytavern_is() -> None:
    data = (
        "\ufeff"
        + json.dumps({"user_name": "User", "character_name": "Eve", "chat_metadata": {}})
        + "\r\n\r\n"
        + json.dumps(
            {"name": "Eve", "mes": None, "is_user": 0, "swipe_id": 9, "swipes": ["a", "b"], "send_date": "?"}
        )
        + "\n"
        + json.dumps({"name": "Eve", "mes": "b", "swipe_id": True, "swipes": ["a", "b"], "swipe_info": "x"})
        + "\n"
    ).encode()
    doc = parse_st_jsonl(data)
    assert doc["character_name"] == "Eve" and "persona" not in doc  # "User" is the default persona
    first, second = doc["messages"]
    assert first["content"] == "" and first["selected"] == 0 and first["time"] == ""  # swipe_id clamped
    assert second["selected"] == 0 and second["alternatives"][0]["content"] == "b"  # mes wins
    assert doc["title"] == "" and "created_at" not in doc
    nameless = parse_st_jsonl(jsonl({"chat_metadata": {}}, {"mes": "hi", "is_user": True}))
    assert nameless["character_name"] is None and nameless["messages"][0]["role"] == "user"


@pytest.mark.parametrize(
    ("value", "iso"),
    [
        (1741975430000, "2025-03-14T18:03:50.000Z"),
        ("1741975430000", "2025-03-14T18:03:50.000Z"),
        ("2025-03-14@18h04m02s", "2025-03-14T18:04:02.000Z"),
        ("2025-03-14@18h04m02s7ms", "2025-03-14T18:04:02.007Z"),
        ("March 14, 2025 6:02pm", "2025-03-14T18:02:00.000Z"),
        ("May 2, 2024 11:15 AM", "2024-05-02T11:15:00.000Z"),
        ("2025-03-14T18:03:40.512+02:00", "2025-03-14T16:03:40.512Z"),
        ("2025-03-14T18:03:40", "2025-03-14T18:03:40.000Z"),
        ("yesterday", ""),
        ("", ""),
        (None, ""),
        (True, ""),
        (1e30, ""),
        (float("nan"), ""),
        ([], ""),
    ],
)
def test_sillytavern_dates(value: Any, iso: str) -> None:
    assert parse_time(value) == iso


# ---- malformed files --------------------------------------------------------------------------------

HEADER = {"user_name": "U", "character_name": "C", "chat_metadata": {}}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (jsonl(HEADER, {"name": "C", "mes": "ok"}) + b"\n{broken", "line 3 is not valid JSON"),
        (jsonl(HEADER, {"name": "C", "is_user": False}), "line 2 has no 'mes'"),
        (jsonl(HEADER, [1, 2]), "line 2 must be a JSON object"),
        (jsonl(HEADER, {"mes": 5}), "line 2: 'mes' must be text"),
        (jsonl(HEADER, {"mes": "x", "swipes": ["a", 3]}), "line 2: swipes[1] must be text"),
        (jsonl(HEADER, {"mes": "x", "is_user": "yes"}), "line 2: 'is_user' must be true or false"),
        (jsonl({"foo": 1}, {"mes": "x"}), "line 1 is neither a chat header"),
        (jsonl(HEADER), "a header but no messages"),
        (b"", "the file is empty"),
        (b"\n \n", "the file is empty"),
        (jsonl(HEADER) + b"\n\xff\xfe", "not UTF-8 text (a bad byte at offset"),
        (b"[]", "line 1 must be a JSON object"),
    ],
)
def test_malformed_files_say_what_is_wrong(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_st_jsonl(data)
    assert needle in err.value.message
    assert err.value.message.startswith("SillyTavern chat: ")


def test_too_large_and_not_bytes() -> None:
    with pytest.raises(TooLarge, match="10 MB"):
        parse_st_jsonl(b" " * (MAX_IMPORT_BYTES + 1))
    with pytest.raises(InvalidInput, match="bytes"):
        parse_st_jsonl("text")  # type: ignore[arg-type]


ST_KEYS = ["mes", "name", "is_user", "is_system", "swipes", "swipe_id", "swipe_info", "extra", "send_date"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(ST_KEYS), inner, max_size=3),
    max_leaves=8,
)
st_message = st.fixed_dictionaries(
    {"mes": st.text(max_size=10) | json_values},
    optional={k: st.booleans() if k.startswith("is_") else json_values for k in ST_KEYS[1:]},
)
st_lines = st.tuples(
    st.fixed_dictionaries(
        {"chat_metadata": json_values}, optional={"user_name": json_values, "character_name": json_values}
    ),
    st.lists(st_message, min_size=1, max_size=4),
).map(lambda t: "\n".join(json.dumps(o) for o in (t[0], *t[1])).encode())
any_bytes = st.binary(max_size=300) | st.lists(st.text(max_size=30), max_size=5).map(
    lambda x: "\n".join(x).encode()
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st_lines | any_bytes)
def test_any_bytes_give_a_document_or_a_clear_error(data: bytes) -> None:
    try:
        doc = parse_st_jsonl(data)
    except EngineError as exc:
        assert exc.message and "Traceback" not in exc.message
    else:
        assert doc["messages"]
        session_from_doc(as_v1(doc), SID, imported=True)  # whatever imports is a valid session


def test_the_format_is_recognised() -> None:
    assert is_st_jsonl(SINGLE) and is_st_jsonl(GROUP)
    assert is_st_jsonl(jsonl({"name": "A", "is_user": False, "mes": "hi"}))  # old group file
    assert is_st_jsonl(b"\n\n" + jsonl(HEADER))
    ours = {"schema_version": 1, "id": SID, "messages": []}
    assert not is_st_jsonl(orjson.dumps(ours, option=orjson.OPT_INDENT_2))
    assert not is_st_jsonl(orjson.dumps(ours))
    assert not is_st_jsonl(b'[{"role": "user", "content": "hi"}]')
    assert not is_st_jsonl(b'{"internal": [], "visible": []}')
    assert not is_st_jsonl(b"\xff\xfe garbage") and not is_st_jsonl(b"")


# ---- export -----------------------------------------------------------------------------------------


def lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().split("\n")]


def test_a_single_chat_exports_as_sillytavern_writes_one() -> None:
    out = lines(to_st_jsonl(parse_st_jsonl(SINGLE)))
    assert out[0] == {
        "user_name": "Mika",
        "character_name": "Seraphina",
        "create_date": "2025-03-14@18h02m11s000ms",
        "chat_metadata": {},
    }
    reply = out[3]
    assert reply["name"] == "Seraphina" and reply["is_user"] is False and reply["is_system"] is False
    assert reply["swipe_id"] == 1 and reply["swipes"][1] == reply["mes"] and len(reply["swipes"]) == 3
    assert reply["extra"] == {"reasoning": "The user is confused; reassure them first."}
    assert reply["swipe_info"][0] == {"send_date": "2025-03-14T18:03:31.000Z", "extra": {}}
    assert out[2] == {
        "name": "Mika",
        "is_user": True,
        "is_system": False,
        "send_date": "2025-03-14T18:03:00.000Z",
        "mes": "Where am I? The last thing I remember is the forest...",
        "extra": {},
    }
    assert out[4]["is_system"] is True and out[4]["name"] == "System"
    assert out[6]["swipes"] == [out[6]["mes"]] and out[6]["swipe_id"] == 0


def test_a_group_chat_exports_each_speaker_and_its_members() -> None:
    out = lines(to_st_jsonl(parse_st_jsonl(GROUP)))
    assert out[0]["character_name"] == "unused" and out[0]["user_name"] == "Sam"
    assert out[0]["chat_metadata"] == {"local_llm_chat": {"characters": ["Alice", "Bob", "Carol"]}}
    assert [o["name"] for o in out[1:]] == ["Alice", "Bob", "Sam", "Bob", "Carol", "System"]


def test_a_member_who_has_not_spoken_survives_the_round_trip() -> None:
    doc = {
        "characters": ["Alice", "Bob"],
        "created_at": "2025-01-01T00:00:00.000Z",
        "messages": [{"role": "assistant", "content": "Hi", "name": "Alice", "time": ""}],
    }
    back = parse_st_jsonl(to_st_jsonl(doc))
    assert back["characters"] == ["Alice", "Bob"] and back["messages"][0]["name"] == "Alice"


def test_export_takes_names_from_the_session() -> None:
    doc: dict[str, Any] = {
        "character": {"name": "sera", "title": "Seraphina"},
        "character_name": "sera",
        "persona": "mika",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "b", "alternatives": [{"content": "a"}, {}], "selected": 1},
        ],
    }
    out = lines(to_st_jsonl(doc))
    assert out[0]["character_name"] == "Seraphina" and out[0]["user_name"] == "mika"
    assert out[0]["create_date"] == ""
    assert out[2]["swipes"] == ["a", "b"] and out[2]["swipe_info"][0]["send_date"] == ""
    assert lines(to_st_jsonl({"messages": []}))[0]["character_name"] == "Assistant"
    bad = {"messages": [{"role": "assistant", "content": "x", "alternatives": [{}, {}], "selected": "1"}]}
    assert lines(to_st_jsonl(bad))[1]["swipes"] == ["x"]


def test_humanized_dates() -> None:
    assert humanized("2025-03-14T18:02:11.045Z") == "2025-03-14@18h02m11s045ms"
    assert parse_time(humanized("2025-03-14T18:02:11.045Z")) == "2025-03-14T18:02:11.045Z"
    assert humanized("") == ""


# ---- round trips ------------------------------------------------------------------------------------

times = st.one_of(
    st.just(""),
    st.datetimes(min_value=datetime(1971, 1, 1)).map(lambda d: d.isoformat(timespec="milliseconds") + "Z"),
)
names = st.text(min_size=1, max_size=12).map(str.strip).filter(lambda s: s not in ("", "unused", "User"))
texts = st.text(max_size=40)


@st.composite
def reply(draw: st.DrawFn, speakers: list[str]) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": draw(texts), "time": draw(times)}
    msg["reasoning"] = draw(st.just("") | texts)
    if speakers:
        msg["name"] = draw(st.sampled_from(speakers))
    n = draw(st.integers(0, 3))
    if n >= 2:
        alts = [{"content": draw(texts), "time": draw(times), "reasoning": draw(texts)} for _ in range(n)]
        selected = draw(st.integers(0, n - 1))
        alts[selected] = {"content": msg["content"], "time": msg["time"], "reasoning": msg["reasoning"]}
        msg["alternatives"], msg["selected"] = alts, selected
    return msg


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    group = draw(st.booleans())
    speakers = draw(st.lists(names, min_size=2, max_size=4, unique=True)) if group else []
    other = st.builds(
        lambda role, content, time: {"role": role, "content": content, "time": time},
        st.sampled_from(["user", "system"]),
        texts,
        times,
    )
    messages = draw(st.lists(reply(speakers) | other, min_size=1, max_size=8))
    for msg in messages:
        if msg["role"] != "assistant":
            break
        msg["greeting"] = True
    doc: dict[str, Any] = {"messages": messages, "created_at": draw(times.filter(bool))}
    if group:
        doc["characters"] = speakers
    else:
        doc["character_name"] = draw(names)
    if draw(st.booleans()):
        doc["persona"] = {"name": draw(names), "description": ""}
    return doc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_documents_survive_a_round_trip(doc: dict[str, Any]) -> None:
    data = to_st_jsonl(doc)
    back = parse_st_jsonl(data)
    title = back.pop("title")
    first = next((m["content"] for m in doc["messages"] if m["role"] == "user" and m["content"].strip()), "")
    assert (title == "") == (first.strip() == "")
    assert back == doc
    assert to_st_jsonl(back) == data
    session_from_doc(as_v1({**back, "title": title}), SID, imported=True)  # valid in our schema too


@pytest.mark.parametrize("fixture", [SINGLE, GROUP])
def test_the_fixtures_survive_a_round_trip(fixture: bytes) -> None:
    doc = parse_st_jsonl(fixture)
    assert parse_st_jsonl(to_st_jsonl(doc)) == doc
