"""Branches: every edit or regeneration of any message makes a new version, and what followed stays with
the old one. Hypothesis drives sequences of send, edit, regenerate, select and delete against a plain model
of the tree; the visible path always matches the model, no message is ever lost, and the file round-trips.
Then the migration of version 1 files, and the HTTP routes on a scripted backend."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine import ChatMessage, InvalidInput, Runtime, Session
from engine.conversation import branch_at, select_version
from engine.session_formats import encode, session_from_doc
from engine.sessions import SessionStore
from tests.scripted import ScriptedBackend, scripted_client, scripted_runtime

V1 = Path(__file__).parent / "fixtures" / "sessions_v1"


# ---- a plain model of the tree ------------------------------------------------------------------------


@dataclass
class Node:
    role: str
    versions: list[tuple[str, Node | None]]  # (content, the message that follows this version)
    shown: int = 0

    def tail(self) -> Node | None:
        return self.versions[self.shown][1]

    def set_tail(self, node: Node | None) -> None:
        content, _ = self.versions[self.shown]
        self.versions[self.shown] = (content, node)


@dataclass
class Tree:
    first: Node | None = None
    texts: int = 0
    deleted: list[str] = field(default_factory=list)

    def path(self) -> list[Node]:
        out, node = [], self.first
        while node is not None:
            out.append(node)
            node = node.tail()
        return out

    def visible(self) -> list[tuple[str, str]]:
        return [(n.role, n.versions[n.shown][0]) for n in self.path()]

    def all_texts(self, node: Node | None = None, top: bool = True) -> list[str]:
        node = self.first if top else node
        if node is None:
            return []
        out = []
        for content, after in node.versions:
            out.append(content)
            out += self.all_texts(after, top=False)
        return out


def session_texts(messages: list[ChatMessage]) -> list[str]:
    out = []
    for m in messages:
        if m.alternatives:
            for i, alt in enumerate(m.alternatives):
                if i == m.version:
                    out.append(m.content)  # the shown version is the message itself
                else:
                    out += [alt.content, *session_texts(alt.after)]
        else:
            out.append(m.content)
    return out


class BranchMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tree = Tree()
        self.session = Session(
            id="s-20260101-000000-abcdef",
            created_at="2026-01-01T00:00:00Z",
            updated_at="2026-01-01T00:00:00Z",
        )

    def text(self) -> str:
        self.tree.texts += 1
        return f"t{self.tree.texts}"

    @rule()
    def send(self) -> None:
        user, reply = self.text(), self.text()
        node = Node("user", [(user, Node("assistant", [(reply, None)]))])
        path = self.tree.path()
        if path:
            path[-1].set_tail(node)
        else:
            self.tree.first = node
        self.session.messages += [
            ChatMessage(role="user", content=user),
            ChatMessage(role="assistant", content=reply),
        ]

    @precondition(lambda self: bool(self.tree.path()))
    @rule(data=st.data())
    def edit(self, data: st.DataObject) -> None:
        k = data.draw(st.integers(0, len(self.tree.path()) - 1))
        content = self.text()
        node = self.tree.path()[k]
        node.versions.append((content, None))
        node.shown = len(node.versions) - 1
        branch_at(self.session, k, content)

    @precondition(lambda self: any(n.role == "assistant" for n in self.tree.path()))
    @rule(data=st.data())
    def regenerate(self, data: st.DataObject) -> None:
        replies = [i for i, n in enumerate(self.tree.path()) if n.role == "assistant"]
        k = data.draw(st.sampled_from(replies))
        content = self.text()
        node = self.tree.path()[k]
        node.versions.append((content, None))
        node.shown = len(node.versions) - 1
        message = self.session.messages[k]
        message.new_version(after=self.session.messages[k + 1 :])
        del self.session.messages[k + 1 :]
        message.content = content

    @precondition(lambda self: any(len(n.versions) > 1 for n in self.tree.path()))
    @rule(data=st.data())
    def select(self, data: st.DataObject) -> None:
        k = data.draw(st.sampled_from([i for i, n in enumerate(self.tree.path()) if len(n.versions) > 1]))
        node = self.tree.path()[k]
        v = data.draw(st.integers(0, len(node.versions) - 1))
        node.shown = v
        select_version(self.session, k, v)

    @precondition(lambda self: bool(self.tree.path()))
    @rule()
    def delete_last(self) -> None:
        path = self.tree.path()
        self.tree.deleted += self.tree.all_texts(path[-1], top=False)
        if len(path) == 1:
            self.tree.first = None
        else:
            path[-2].set_tail(None)
        self.session.messages.pop()

    @invariant()
    def the_visible_path_is_the_models(self) -> None:
        assert [(m.role, m.content) for m in self.session.messages] == self.tree.visible()

    @invariant()
    def nothing_is_lost_but_what_was_deleted(self) -> None:
        kept = sorted(session_texts(self.session.messages))
        assert kept == sorted(self.tree.all_texts())
        assert sorted(kept + self.tree.deleted) == sorted(f"t{i}" for i in range(1, self.tree.texts + 1))

    @invariant()
    def the_file_round_trips(self) -> None:
        data = encode(self.session)
        again = session_from_doc(orjson.loads(data), self.session.id)
        assert encode(again) == data


TestBranchMachine = BranchMachine.TestCase
TestBranchMachine.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)


# ---- migration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["regenerated", "greeting"])
def test_a_version_1_file_loads_and_is_saved_as_version_2_with_its_original_kept(
    tmp_path: Path, name: str
) -> None:
    original = (V1 / f"{name}.json").read_bytes()
    doc = orjson.loads(original)
    folder = tmp_path / "sessions"
    folder.mkdir()
    shutil.copy(V1 / f"{name}.json", folder / f"{doc['id']}.json")
    store = SessionStore(tmp_path)
    session = store.get(doc["id"])
    assert [(m.role, m.content) for m in session.messages] == [
        (m["role"], m["content"]) for m in doc["messages"]
    ]
    for new, old in zip(session.messages, doc["messages"], strict=True):
        assert new.version == old["selected"] and [a.content for a in new.alternatives] == [
            a["content"] for a in old["alternatives"]
        ]
    stored = orjson.loads((folder / f"{doc['id']}.json").read_bytes())
    assert stored["schema_version"] == 2
    assert (folder / f"{doc['id']}.json.v1.bak").read_bytes() == original
    assert [s.id for s in store.list()] == [doc["id"]]  # the .bak is not a second chat
    store.delete(doc["id"])
    assert not list(folder.iterdir())  # the backups go to the trash with the chat


def test_a_file_from_a_newer_version_is_refused_clearly(tmp_path: Path) -> None:
    doc = orjson.loads((V1 / "greeting.json").read_bytes())
    with pytest.raises(InvalidInput, match="newer version"):
        session_from_doc({**doc, "schema_version": 3}, doc["id"])


def test_a_user_message_can_have_versions_and_a_shown_version_has_no_hidden_tail() -> None:
    m = ChatMessage(role="user", content="a")
    m.branch("b")
    assert (m.content, m.version, [a.content for a in m.alternatives]) == ("b", 1, ["a", "b"])
    doc = m.model_dump()
    doc["alternatives"][1]["after"] = [{"role": "assistant", "content": "x"}]
    with pytest.raises(ValueError, match="shown version"):
        ChatMessage.model_validate(doc)


# ---- over HTTP -----------------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Runtime, ScriptedBackend]]:
    backend = ScriptedBackend()
    rt = scripted_runtime(tmp_path / "data", backend)
    with scripted_client(rt) as client:
        yield client, rt, backend


def four_message_chat(client: TestClient, backend: ScriptedBackend) -> str:
    backend.enqueue("Tea is a drink.")
    sid = client.post(
        "/api/chat", json={"messages": [{"role": "user", "content": "What is tea?"}], "session_id": "new"}
    ).json()["session_id"]
    backend.enqueue("Coffee is too.")
    client.post(
        "/api/chat", json={"messages": [{"role": "user", "content": "And coffee?"}], "session_id": sid}
    )
    return sid


def test_editing_a_user_message_branches_and_the_old_continuation_is_kept(
    api: tuple[TestClient, Runtime, ScriptedBackend],
) -> None:
    client, _rt, backend = api
    sid = four_message_chat(client, backend)
    backend.enqueue("Green tea is ", "a kind of tea.")
    r = client.post(f"/api/sessions/{sid}/edit", json={"index": 0, "content": "What is green tea?"})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert b'"delta":"Green tea is "' in r.content and b'"done":true' in r.content
    doc = client.get(f"/api/sessions/{sid}").json()
    assert [m["content"] for m in doc["messages"]] == ["What is green tea?", "Green tea is a kind of tea."]
    assert (doc["messages"][0]["versions"], doc["messages"][0]["version"]) == (2, 1)
    assert "versions" not in doc["messages"][1]
    back = client.post(f"/api/sessions/{sid}/select", json={"index": 0, "version": 0}).json()
    assert [m["content"] for m in back["messages"]] == [
        "What is tea?",
        "Tea is a drink.",
        "And coffee?",
        "Coffee is too.",
    ]
    again = client.post(f"/api/sessions/{sid}/select", json={"index": 0, "version": 1}).json()
    assert [m["content"] for m in again["messages"]] == ["What is green tea?", "Green tea is a kind of tea."]


def test_regenerating_an_earlier_reply_and_editing_a_reply(
    api: tuple[TestClient, Runtime, ScriptedBackend],
) -> None:
    client, _rt, backend = api
    sid = four_message_chat(client, backend)
    backend.enqueue("Tea is made from leaves.")
    r = client.post(f"/api/sessions/{sid}/regenerate", json={"index": 1})
    assert b"made from leaves" in r.content
    doc = client.get(f"/api/sessions/{sid}").json()
    assert [m["content"] for m in doc["messages"]] == ["What is tea?", "Tea is made from leaves."]
    prompt = backend.prompts[-1]
    assert prompt[-1] == {"role": "user", "content": "What is tea?"}  # the visible path up to that reply
    assert all("coffee" not in m["content"] for m in prompt)
    edited = client.post(f"/api/sessions/{sid}/edit", json={"index": 1, "content": "Tea: a drink."})
    assert edited.headers["content-type"].startswith("application/json")
    assert edited.json()["messages"][1]["content"] == "Tea: a drink."
    assert edited.json()["messages"][1]["versions"] == 3
    first = client.post(f"/api/sessions/{sid}/select", json={"index": 1, "version": 0}).json()
    assert [m["content"] for m in first["messages"]][2:] == ["And coffee?", "Coffee is too."]


@pytest.mark.parametrize(
    ("route", "body", "says"),
    [
        ("edit", {"index": 9, "content": "x"}, "no message 9"),
        ("edit", {"index": 0, "content": "   "}, "empty"),
        ("select", {"index": 0, "version": 5}, "no version 6"),
        ("select", {"index": 7, "version": 0}, "no message 7"),
        ("regenerate", {"index": 0}, "user's, not the assistant's"),
    ],
)
def test_bad_branch_requests_say_what_is_wrong(
    api: tuple[TestClient, Runtime, ScriptedBackend], route: str, body: dict, says: str
) -> None:
    client, rt, backend = api
    sid = four_message_chat(client, backend)
    before = rt.sessions.export_bytes(sid)
    r = client.post(f"/api/sessions/{sid}/{route}", json=body)
    assert r.status_code == 400, r.text
    assert says in r.json()["error"]["message"]
    assert rt.sessions.export_bytes(sid) == before


def test_the_openai_and_markdown_exports_take_the_visible_path(
    api: tuple[TestClient, Runtime, ScriptedBackend],
) -> None:
    client, _rt, backend = api
    sid = four_message_chat(client, backend)
    backend.enqueue("Tea is made from leaves.")
    client.post(f"/api/sessions/{sid}/regenerate", json={"index": 1})  # coffee stays with version 1
    visible = [
        {"role": "user", "content": "What is tea?"},
        {"role": "assistant", "content": "Tea is made from leaves."},
    ]
    r = client.get(f"/api/sessions/{sid}/openai.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.headers["content-disposition"] == f'attachment; filename="{sid}.openai.json"'
    assert r.json() == visible
    md = client.get(f"/api/sessions/{sid}/markdown").text
    assert "Tea is made from leaves." in md and "version 2 of 2" in md
    assert "Tea is a drink." not in md and "offee" not in md
    # the export reads back as a chat of the visible path; the tree is still whole in the session
    copy = client.post(
        "/api/sessions/import", content=r.content, headers={"content-type": "application/json"}
    )
    assert copy.status_code == 200, copy.text
    doc = client.get(f"/api/sessions/{copy.json()['id']}").json()
    assert [{"role": m["role"], "content": m["content"]} for m in doc["messages"]] == visible
    back = client.post(f"/api/sessions/{sid}/select", json={"index": 1, "version": 0}).json()
    assert [m["content"] for m in back["messages"]][2:] == ["And coffee?", "Coffee is too."]
    assert client.get(f"/api/sessions/{sid}/openai.json").json()[3]["content"] == "Coffee is too."
    assert client.get("/api/sessions/s-20250101-000000-abcdef/openai.json").status_code == 404
