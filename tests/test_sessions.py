"""SessionStore and the session formats: round trips, foreign imports, bad input, safety of ids and files."""

from __future__ import annotations

import errno
import html
import json
import os
import re
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import InvalidInput, NotFound, StorageError, TooLarge
from engine.session_formats import EXPECTED, MAX_IMPORT_BYTES, auto_title, new_session_id, now_iso
from engine.sessions import ChatMessage, Session, SessionStore, ShrinkRefused

GOOD_ID = "s-20250101-120000-abcdef"


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    return SessionStore(tmp_path / "data")


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def rich_session(store: SessionStore) -> Session:
    reply = ChatMessage(
        role="assistant", content="first answer", time="2025-01-01T10:00:01Z", metrics={"t": 1}
    )
    reply.new_version(time="2025-01-01T10:00:05Z")
    reply.content, reply.metrics, reply.stopped = "second answer", {"t": 2}, True
    return store.create(
        model={"file": "smol.gguf", "size": 1234, "sha256_1mib": "ab" * 32},
        character={"name": "Aki", "extensions": {"x": [1, 2, {"deep": None}]}, "unknown": "kept"},
        character_name="Aki",
        params={"temperature": 0.2, "seed": 7},
        messages=[
            ChatMessage(role="assistant", content="Hello, I am Aki.", greeting=True),
            ChatMessage(role="user", content="What is 2+2? ünïcode ✓ \x00 nul", time="2025-01-01T10:00:00Z"),
            reply,
        ],
    )


# ---- schema and store basics ---------------------------------------------------------------------------


def test_create_get_and_saved_shape(store: SessionStore) -> None:
    s = rich_session(store)
    assert s.id.startswith("s-") and s.title == "What is 2+2? ünïcode ✓ nul"  # no control character
    assert store.get(s.id) == s
    doc = orjson.loads((store.folder / f"{s.id}.json").read_bytes())
    assert doc["schema_version"] == 2
    assert list(doc) == [
        "schema_version",
        *("id", "title", "created_at", "updated_at", "model", "character", "character_name"),
        *("system_prompt", "params", "persona", "lorebooks", "reply_prefix", "show_reply_prefix"),
        *("characters", "group", "messages"),
    ]
    last = doc["messages"][2]
    assert last["content"] == "second answer" and last["version"] == 1 and last["stopped"] is True
    assert last["versions"] == 2 and "versions" not in doc["messages"][0]
    assert [a["content"] for a in last["alternatives"]] == ["first answer", "second answer"]
    assert last["alternatives"][1]["metrics"] == {"t": 2}  # the shown version is mirrored on save


def test_alternatives_select_and_validation() -> None:
    m = ChatMessage(role="assistant", content="a")
    m.new_version()
    m.content = "b"
    m.select(0)
    assert (m.content, m.version, [a.content for a in m.alternatives]) == ("a", 0, ["a", "b"])
    m.select(-1)
    assert m.content == "b"
    with pytest.raises(InvalidInput):
        m.select(5)
    with pytest.raises(InvalidInput):
        ChatMessage(role="user", content="x").new_version()


def test_create_rejects_bad_fields(store: SessionStore) -> None:
    with pytest.raises(InvalidInput, match="messages"):
        store.create(messages=[{"role": "robot", "content": "x"}])
    with pytest.raises(InvalidInput, match="id"):
        store.create(id=GOOD_ID)
    with pytest.raises(InvalidInput, match="unknown field 'colour'"):
        store.create(colour="blue")
    assert files_under(store.data_dir) == []


def test_save_refuses_what_it_could_not_read_back(store: SessionStore) -> None:
    s = store.create(messages=[ChatMessage(role="user", content="hi")])
    on_disk = store.export_bytes(s.id)
    s.messages[0].role = "bot"  # type: ignore[assignment]
    with pytest.raises(InvalidInput, match="Not saved: .*messages.0.role"):
        store.save(s)
    s.messages[0].role = "user"
    s.messages[0].metrics = {"x": {1, 2}}  # a set is not JSON
    with pytest.raises(InvalidInput, match="cannot be stored as JSON"):
        store.save(s)
    assert store.export_bytes(s.id) == on_disk


def test_auto_title_truncates() -> None:
    msgs = [ChatMessage(role="system", content="sys"), ChatMessage(role="user", content="word " * 40)]
    title = auto_title(msgs)
    assert len(title) <= 61 and title.endswith("…") and "\n" not in title
    assert auto_title([ChatMessage(role="user", content="  short\nline ")]) == "short line"


def test_save_bumps_updated_at_and_keeps_bak(store: SessionStore) -> None:
    s = store.create(messages=[ChatMessage(role="user", content="one")])
    path = store.folder / f"{s.id}.json"
    first = path.read_bytes()
    before = s.updated_at
    s.messages.append(ChatMessage(role="assistant", content="two"))
    store.save(s)
    assert s.updated_at >= before
    assert path.with_name(path.name + ".bak").read_bytes() == first
    assert store.get(s.id).messages[-1].content == "two"


def test_no_shrink_rule(store: SessionStore) -> None:
    s = store.create(messages=[ChatMessage(role="user", content=str(i)) for i in range(4)])
    short = store.get(s.id)
    short.messages = short.messages[:2]
    with pytest.raises(ShrinkRefused, match="from 4 to 2") as info:
        store.save(short)
    assert isinstance(info.value, InvalidInput) and info.value.status == 409
    assert len(store.get(s.id).messages) == 4
    store.save(short, allow_shrink=True)
    assert len(store.get(s.id).messages) == 2


def test_fast_enough_for_long_sessions(store: SessionStore) -> None:
    import time

    s = store.create(messages=[ChatMessage(role="user", content="x" * 1000) for _ in range(200)])
    start = time.perf_counter()
    for _ in range(10):
        s.messages[-1].content += "y"
        store.save(s)
    assert (time.perf_counter() - start) / 10 < 0.1


def test_concurrent_saves(store: SessionStore) -> None:
    sessions = [store.create(messages=[ChatMessage(role="user", content="hi")]) for _ in range(3)]
    errors: list[BaseException] = []

    def work(s: Session) -> None:
        try:
            for i in range(15):
                s.messages.append(ChatMessage(role="assistant", content=str(i)))
                store.save(s)
                store.list()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [len(store.get(s.id).messages) for s in sessions] == [16, 16, 16]


# ---- list, search, rename, duplicate, delete, markdown ---------------------------------------------------


def test_list_newest_first_and_search(store: SessionStore) -> None:
    a = store.create(messages=[ChatMessage(role="user", content="Tell me about Kyoto temples")])
    b = store.create(title="Cooking", messages=[ChatMessage(role="user", content="A RISOTTO recipe please")])
    c = store.create(messages=[])
    assert [x.id for x in store.list()] == [c.id, b.id, a.id]
    store.save(a)  # touched: now newest
    assert store.list()[0].id == a.id
    assert [x.id for x in store.list("kyoto")] == [a.id]
    assert [x.id for x in store.list("risotto recipe")] == [b.id]
    assert [x.id for x in store.list("cooking")] == [b.id]  # titles too
    assert store.list("kyoto risotto") == []
    assert store.list("  ")[0].model_dump() == {
        "id": a.id,
        "title": "Tell me about Kyoto temples",
        "updated_at": a.updated_at,
        "messages": 1,
    }


def test_rename(store: SessionStore) -> None:
    s = store.create(messages=[ChatMessage(role="user", content="hi")])
    assert store.rename(s.id, "  New\nname ").title == "New name"
    assert store.get(s.id).title == "New name"
    with pytest.raises(InvalidInput):
        store.rename(s.id, "   ")


def test_duplicate_branches(store: SessionStore) -> None:
    s = rich_session(store)
    branch = store.duplicate(s.id, 2)
    assert branch.id != s.id and branch.title.endswith("(copy)")
    assert branch.messages == s.messages[:2]
    assert store.get(branch.id).messages == s.messages[:2]
    assert len(store.duplicate(s.id).messages) == 3
    branch.messages[0].content = "changed"  # a real copy
    assert store.get(s.id).messages[0].content == "Hello, I am Aki."
    for bad in (-1, 4):
        with pytest.raises(InvalidInput):
            store.duplicate(s.id, bad)


def test_delete_moves_to_trash(store: SessionStore) -> None:
    s = store.create(messages=[ChatMessage(role="user", content="bye")])
    store.save(s)  # now a .bak exists too
    store.delete(s.id)
    assert sorted(p.name for p in (store.data_dir / "trash").iterdir()) == [
        f"{s.id}.json",
        f"{s.id}.json.bak",
    ]
    assert list(store.folder.iterdir()) == []
    with pytest.raises(NotFound):
        store.get(s.id)
    with pytest.raises(NotFound):
        store.delete(s.id)
    with pytest.raises(NotFound, match="deleted"):
        store.save(s)  # a stream that ends after the delete does not bring it back
    assert store.list() == []


def test_markdown(store: SessionStore) -> None:
    s = rich_session(store)
    s.system_prompt = "Be brief.\nBe kind."
    md = store.to_markdown(s)
    assert md.startswith(f"# {s.title}\n")
    assert "- Model: smol.gguf" in md and "- Character: Aki" in md
    assert "> Be brief.\n> Be kind." in md
    assert "**User** · 2025-01-01T10:00:00.000Z\n\nWhat is 2+2?" in md
    assert "**Aki** · 2025-01-01T10:00:05.000Z · version 2 of 2\n\nsecond answer" in md
    assert "_(stopped)_" in md and "greeting" in md


# ---- export and import ----------------------------------------------------------------------------------


def test_export_import_export_round_trip(store: SessionStore) -> None:
    s = rich_session(store)
    exported = store.export_bytes(s.id)
    assert exported == (store.folder / f"{s.id}.json").read_bytes()
    copy = store.import_bytes(exported)
    assert copy.id != s.id
    again = orjson.loads(store.export_bytes(copy.id))
    first = orjson.loads(exported)
    assert again["messages"] == first["messages"]
    for key in ("title", "created_at", "model", "character", "character_name", "params", "system_prompt"):
        assert again[key] == first[key]
    assert store.get(s.id) == s  # the original is untouched


def test_import_never_overwrites(store: SessionStore) -> None:
    s = store.create(messages=[ChatMessage(role="user", content="x")])
    data = store.export_bytes(s.id)
    ids = {store.import_bytes(data).id for _ in range(3)}
    assert len(ids) == 3 and s.id not in ids
    assert len(store.list()) == 4


def test_import_forgiving_minimal_own_document(store: SessionStore) -> None:
    doc = {"schema_version": 1, "id": "../../not-used", "messages": [{"role": "user", "content": "hi"}]}
    s = store.import_bytes(orjson.dumps(doc))
    assert s.id != doc["id"] and s.title == "hi" and s.messages[0].time == ""


def test_import_openai_list(store: SessionStore) -> None:
    body = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello.", "name": "bot"},
    ]
    s = store.import_bytes(orjson.dumps(body))
    assert s.system_prompt == "You are terse."
    assert [(m.role, m.content) for m in s.messages] == [("user", "Hi"), ("assistant", "Hello.")]
    assert s.title == "Hi"
    assert store.get(s.id) == s


def test_import_openai_object_with_parts(store: SessionStore) -> None:
    body = {
        "model": "gpt-x",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Rules."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {"url": "data:..."}},
                    {"type": "text", "text": "what is it?"},
                ],
            },
        ],
    }
    s = store.import_bytes(orjson.dumps(body).decode())  # str bodies work too
    assert s.system_prompt == "Rules."
    assert [(m.role, m.content) for m in s.messages] == [("user", "Look:\nwhat is it?")]


def test_import_webui_internal_with_greeting(store: SessionStore) -> None:
    body = {
        "internal": [["<|BEGIN-VISIBLE-CHAT|>", "Hi! I'm Aki."], ["1 < 2 & 'x'", "Yes <b>"], ["last", ""]],
        "visible": [
            ["", "Hi! I&#x27;m Aki."],
            ["1 &lt; 2 &amp; &#x27;x&#x27;", "Yes &lt;b&gt;"],
            ["last", ""],
        ],
    }
    s = store.import_bytes(orjson.dumps(body))
    assert [(m.role, m.content, m.greeting) for m in s.messages] == [
        ("assistant", "Hi! I'm Aki.", True),
        ("user", "1 < 2 & 'x'", False),
        ("assistant", "Yes <b>", False),
        ("user", "last", False),
    ]
    assert s.title == "1 < 2 & 'x'"


def test_import_webui_visible_only_is_unescaped(store: SessionStore) -> None:
    body = {"visible": [["", "Hello &amp; welcome"], [html.escape("a <tag> 'q'"), "ok"]]}
    s = store.import_bytes(orjson.dumps(body))
    assert [(m.role, m.content, m.greeting) for m in s.messages] == [
        ("assistant", "Hello & welcome", True),
        ("user", "a <tag> 'q'", False),
        ("assistant", "ok", False),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid UTF-8 JSON"),
        (b"{not json", "not valid UTF-8 JSON"),
        (b'[{"role": "user", "content": "\xff"}]', "not valid UTF-8 JSON"),
        (b"42", EXPECTED),
        (b'{"hello": "world"}', EXPECTED),
        (b"[]", "no chat messages"),
        (b'{"messages": {}}', "must be a list"),
        (b'[{"role": "tool", "content": "x"}]', "role must be one of"),
        (b'[{"role": "user", "content": 5}]', "content must be a string"),
        (b'[{"role": "user", "content": [{"type": "text"}]}]', "text part"),
        (b'["hi"]', "must be an object"),
        (b'{"internal": [["only one"]]}', "string pairs"),
        (b'{"internal": [["", ""]]}', "no chat messages"),
        (b'{"schema_version": 3, "messages": []}', "newer version"),
        (b'{"schema_version": "1", "messages": []}', "schema_version"),
        (b'{"schema_version": 1, "messages": [], "extra": 1}', "unknown field 'extra'"),
        (b'{"schema_version": 1, "messages": [{"role": "user", "content": "x", "selected": 2}]}', "version"),
        (b'{"schema_version": 2, "messages": [{"role": "user", "content": "x", "version": 1}]}', "version"),
        (b'{"schema_version": 1, "created_at": "yesterday", "messages": []}', "created_at"),
    ],
)
def test_import_rejects_with_clear_message(store: SessionStore, body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        store.import_bytes(body)
    assert message in info.value.message
    assert files_under(store.data_dir) == []


def test_import_too_large(store: SessionStore) -> None:
    body = b'[{"role": "user", "content": "' + b"x" * MAX_IMPORT_BYTES + b'"}]'
    with pytest.raises(TooLarge, match="10 MB"):
        store.import_bytes(body)
    assert files_under(store.data_dir) == []


def test_import_too_deep_to_store(store: SessionStore) -> None:
    deep: dict[str, Any] = {}
    for _ in range(400):
        deep = {"a": deep}
    body = json.dumps({"schema_version": 1, "character": deep, "messages": []}).encode()
    with pytest.raises(InvalidInput):
        store.import_bytes(body)
    assert files_under(store.data_dir) == []


# ---- generated bad bodies --------------------------------------------------------------------------------

ROLES = {"user", "assistant", "system", "developer"}
leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
# Keys from an alphabet that cannot spell role/content/messages/internal/...: every value here is invalid.
keys = st.text(alphabet="XYZ019 _-", max_size=8)
any_json = st.recursive(
    leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(keys, c, max_size=4), max_leaves=12
)
not_str = any_json.filter(lambda v: not isinstance(v, str))
not_dict = any_json.filter(lambda v: not isinstance(v, dict))
bad_role = st.text(max_size=12).filter(lambda r: r not in ROLES) | not_str


def _bad_iso_text(v: str) -> bool:
    try:
        datetime.fromisoformat(v)
        return False
    except ValueError:
        return True


bad_time = st.text(max_size=20).filter(_bad_iso_text) | not_str
OWN_FIELDS = {"schema_version", "id", "title", "created_at", "updated_at", "model", "character"}
OWN_FIELDS |= {"character_name", "system_prompt", "params", "messages"}


@st.composite
def bad_own(draw: st.DrawFn) -> Any:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "title": "t",
        "created_at": "2025-01-01T00:00:00Z",
        "params": {},
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
    }
    msg = doc["messages"][draw(st.integers(0, 1))]
    kind = draw(st.integers(0, 9))
    if kind == 0:
        version = st.integers() | not_str | st.text()
        doc["schema_version"] = draw(version.filter(lambda v: not (type(v) is int and v in (1, 2))))
    elif kind == 1:
        doc["messages"] = draw(not_dict.filter(lambda v: not isinstance(v, list)) | st.just({}))
    elif kind == 2:
        msg["role"] = draw(bad_role)
    elif kind == 3:
        msg["content"] = draw(not_str)
    elif kind == 4:
        msg[draw(st.text(max_size=10).filter(lambda k: k not in {*ChatMessage.model_fields, "versions"}))] = (
            draw(any_json)
        )
    elif kind == 5:
        doc[draw(st.text(max_size=10).filter(lambda k: k not in OWN_FIELDS))] = draw(any_json)
    elif kind == 6:
        doc[draw(st.sampled_from(["created_at", "updated_at"]))] = draw(bad_time)
    elif kind == 7:
        msg["version"] = draw(st.integers().filter(lambda v: v != 0) | st.floats() | st.text())
    elif kind == 8:
        doc["params"] = draw(not_dict)
    else:
        doc[draw(st.sampled_from(["character", "model", "title"]))] = draw(
            st.integers() | st.lists(st.integers(), min_size=1) | st.booleans()
        )
    return doc


@st.composite
def bad_openai(draw: st.DrawFn) -> Any:
    msgs: list[Any] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    i = draw(st.integers(0, 1))
    kind = draw(st.integers(0, 4))
    if kind == 0:
        msgs[i]["role"] = draw(bad_role)
    elif kind == 1:
        msgs[i]["content"] = draw(not_str.filter(lambda v: not isinstance(v, list)))
    elif kind == 2:
        msgs[i]["content"] = draw(st.lists(not_dict, min_size=1))
    elif kind == 3:
        msgs[i] = draw(not_dict)
    else:
        return {"messages": draw(not_dict.filter(lambda v: not isinstance(v, list)))}
    return {"messages": msgs} if draw(st.booleans()) else msgs


@st.composite
def bad_webui(draw: st.DrawFn) -> Any:
    wrong_length = st.lists(st.text(max_size=5), max_size=4).filter(lambda p: len(p) != 2)
    pair = wrong_length | st.lists(not_str, min_size=2, max_size=2)
    key = draw(st.sampled_from(["internal", "visible"]))
    pairs: list[Any] = draw(st.lists(st.lists(st.text(max_size=5), min_size=2, max_size=2), max_size=3))
    if draw(st.booleans()):
        pairs.insert(draw(st.integers(0, len(pairs))), draw(pair))
        return {key: pairs}
    return {key: draw(not_dict.filter(lambda v: not isinstance(v, list)))}


def _dump(doc: Any) -> bytes:
    return json.dumps(doc).encode()  # unlike orjson, writes ints beyond 64 bits too


@st.composite
def bad_utf8(draw: st.DrawFn) -> bytes:
    junk = draw(
        st.sampled_from(
            [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"]
        )
    )
    text = draw(st.text(max_size=10)).encode()
    return b'[{"role": "user", "content": "' + text + junk + b'"}]'


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    good = orjson.dumps([{"role": "user", "content": draw(st.text(max_size=20))}], option=orjson.OPT_INDENT_2)
    return good[: draw(st.integers(0, len(good) - 1))]


bad_bodies = st.one_of(
    st.binary(max_size=200),
    any_json.map(_dump),
    bad_own().map(_dump),
    bad_openai().map(_dump),
    bad_webui().map(_dump),
    bad_utf8(),
    truncated(),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bad_bodies)
def test_generated_bad_bodies_are_refused(store: SessionStore, body: bytes) -> None:
    with pytest.raises((InvalidInput, TooLarge)):
        store.import_bytes(body)
    assert files_under(store.data_dir) == []


# ---- ids, damaged files, failing disks ------------------------------------------------------------------

BAD_IDS = [
    "../secret",
    "../../etc/passwd",
    "/etc/passwd",
    f"{GOOD_ID}\x00",
    "%2e%2e%2fsecret",
    "..%2F..%2Fsecret",
    f"{GOOD_ID}/../../secret",
    f"..\\{GOOD_ID}",
    f"{GOOD_ID}\n",
    f"{GOOD_ID}.json",
    GOOD_ID.upper(),
    "s-" + "1" * 5000,
    "..",
    "",
    None,
    5,
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=lambda v: repr(v)[:30])
def test_bad_ids_never_touch_the_filesystem(tmp_path: Path, bad: Any) -> None:
    data = tmp_path / "data"
    store = SessionStore(data)
    s = store.create(messages=[ChatMessage(role="user", content="hi")])
    secret = tmp_path / "secret.json"
    secret.write_bytes(store.export_bytes(s.id))
    before = files_under(tmp_path)
    calls = [
        lambda: store.get(bad),
        lambda: store.export_bytes(bad),
        lambda: store.delete(bad),
        lambda: store.rename(bad, "x"),
        lambda: store.duplicate(bad, 0),
    ]
    for call in calls:
        with pytest.raises((NotFound, InvalidInput)):
            call()
    s.id = bad  # a caller that mutates the id cannot write elsewhere either
    with pytest.raises((NotFound, InvalidInput)):
        store.save(s)
    assert files_under(tmp_path) == before


def test_ids_are_safe_and_unique() -> None:
    ids = {new_session_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == len(GOOD_ID) and i.startswith("s-") for i in ids)
    now = now_iso()
    for bad in (f"x/{GOOD_ID}", f"{GOOD_ID}\n", f"{GOOD_ID}/.."):
        with pytest.raises(ValueError):  # pydantic's ValidationError
            Session(id=bad, created_at=now, updated_at=now)


def test_corrupt_file_is_moved_aside(store: SessionStore) -> None:
    good = store.create(messages=[ChatMessage(role="user", content="fine")])
    bad1 = store.folder / "s-20250101-000000-000001.json"
    bad1.write_bytes(b'{"schema_version": 1, "messa')
    bad2 = store.folder / "s-20250101-000000-000002.json"
    bad2.write_bytes(orjson.dumps({"schema_version": 1, "messages": [{"role": "bot"}]}))
    bad3 = store.folder / "s-20250101-000000-000003.json"
    bad3.write_bytes(b"[1, 2]")
    assert [x.id for x in store.list()] == [good.id]
    corrupt = store.data_dir / "corrupt"
    assert sorted(p.name for p in corrupt.iterdir()) == sorted([bad1.name, bad2.name, bad3.name])
    assert len(store.problems) == 3 and all("damaged" in p for p in store.problems)
    assert any(bad1.name in p for p in store.problems)
    assert store.pop_problems() and store.problems == []
    bad1.write_bytes(b"garbage")
    with pytest.raises(NotFound, match="damaged"):
        store.get(bad1.stem)
    assert (corrupt / "s-20250101-000000-000001.1.json").exists()  # never overwrites an earlier one


def test_newer_version_file_is_skipped_not_moved(store: SessionStore) -> None:
    store.create(messages=[])
    newer = store.folder / "s-20250101-000000-00000a.json"
    newer.write_bytes(orjson.dumps({"schema_version": 99, "future": True}))
    assert len(store.list()) == 1
    assert newer.exists() and any("newer version" in p for p in store.problems)


def test_stray_file_names_are_reported_once(store: SessionStore) -> None:
    store.create(messages=[])
    (store.folder / "my chat.json").write_text("{}")
    store.list()
    store.list()
    assert [p for p in store.problems if "my chat.json" in p] == [
        "Ignored sessions/my chat.json: not a chat file name. Use Import to add a chat."
    ]


def test_unwritable_sessions_folder(tmp_path: Path) -> None:
    (tmp_path / "sessions").write_text("I am a file, not a folder")
    store = SessionStore(tmp_path)
    assert store.list() == []
    with pytest.raises(StorageError, match="Could not save"):
        store.create(messages=[ChatMessage(role="user", content="hi")])
    now = now_iso()
    s = Session(
        id=GOOD_ID, created_at=now, updated_at=now, messages=[ChatMessage(role="user", content="keep")]
    )
    snapshot = s.model_dump()
    with pytest.raises(StorageError, match="Could not save"):
        store.save(s)
    assert s.model_dump() == snapshot
    with pytest.raises(StorageError, match="Could not save"):
        store.import_bytes(b'[{"role": "user", "content": "x"}]')


def test_disk_full_keeps_memory_and_file(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    s = store.create(messages=[ChatMessage(role="user", content="one")])
    path = store.folder / f"{s.id}.json"
    on_disk = path.read_bytes()
    s.messages.append(ChatMessage(role="assistant", content="two"))
    s.title = ""
    snapshot = s.model_dump()

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StorageError, match="Could not save"):
        store.save(s)
    assert s.model_dump() == snapshot
    assert path.read_bytes() == on_disk
    assert [p.name for p in store.folder.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.undo()
    store.save(s)
    assert len(store.get(s.id).messages) == 2


# ---- no lost updates: revisions, merged titles, one turn at a time ----------------------------------------


def test_a_rename_while_a_reply_streams_is_kept(store: SessionStore) -> None:
    """Before: the reply's next save wrote the title it had read, and the rename was silently undone."""
    s = store.create(messages=[ChatMessage(role="user", content="hi")])
    turn = store.get(s.id)  # what a turn holds while it streams
    turn.messages.append(ChatMessage(role="assistant", content="partial"))
    store.save(turn)
    store.rename(s.id, "Renamed meanwhile")
    turn.messages[-1].content = "partial, then more"
    store.save(turn)
    saved = store.get(s.id)
    assert saved.title == "Renamed meanwhile" and turn.title == "Renamed meanwhile"
    assert saved.messages[-1].content == "partial, then more"
    turn.title = "Chosen by the writer"  # a writer's own change still wins
    store.save(turn)
    assert store.get(s.id).title == "Chosen by the writer"


def test_refresh_brings_a_stale_copy_up_to_date_in_place(store: SessionStore) -> None:
    s = store.create(messages=[ChatMessage(role="user", content="one")])
    first, second = store.get(s.id), store.get(s.id)
    assert store.refresh(second) is False  # nothing changed since it was read
    first.messages.append(ChatMessage(role="assistant", content="two"))
    store.save(first)
    assert store.refresh(second) is True
    assert [m.content for m in second.messages] == ["one", "two"]
    second.messages.append(ChatMessage(role="user", content="three"))
    store.save(second)  # not refused as a shorter history, and nothing lost
    assert [m.content for m in store.get(s.id).messages] == ["one", "two", "three"]


def test_one_turn_lock_per_session(store: SessionStore) -> None:
    a = store.create(messages=[ChatMessage(role="user", content="a")])
    b = store.create(messages=[ChatMessage(role="user", content="b")])
    assert store.turn_lock(a.id) is store.turn_lock(a.id)
    assert store.turn_lock(a.id) is not store.turn_lock(b.id)


@pytest.mark.parametrize(
    "title",
    [
        "\x1b]0;pwned\x07Quarterly \x1b[2Jnotes",
        "Invoice \u202egnp.exe",
        "tab\tand\nnewline\r\x00nul\x7f\x85",
        "\u2066isolated\u2069 \u200emarks\u200f",
    ],
)
def test_titles_lose_control_characters_and_bidi_overrides(store: SessionStore, title: str) -> None:
    bad = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
    renamed = store.rename(store.create(messages=[ChatMessage(role="user", content="x")]).id, title)
    imported = store.import_bytes(orjson.dumps([{"role": "user", "content": title}]))
    created = store.create(title=title)
    for s in (renamed, imported, created, store.get(renamed.id), store.get(imported.id)):
        assert s.title.strip() and not bad.search(s.title), repr(s.title)
    assert not any(bad.search(x.title) for x in store.list())
