"""A reply's reasoning in the session file: versions keep their own, imports carry it, the prompt omits it."""

from __future__ import annotations

import orjson

from engine.session_formats import ChatMessage, encode, new_session_id, parse_import, to_markdown


def test_each_version_keeps_its_own_reasoning() -> None:
    m = ChatMessage(role="assistant", content="first", reasoning="thought one")
    m.new_version()
    assert m.reasoning == "" and m.alternatives[0].reasoning == "thought one"
    m.content, m.reasoning = "second", "thought two"
    m.select(0)
    assert (m.content, m.reasoning) == ("first", "thought one")
    m.select(1)
    assert (m.content, m.reasoning) == ("second", "thought two")


def test_openai_import_keeps_reasoning_content_and_the_file_round_trips() -> None:
    doc = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "reasoning_content": "Greet back."},
    ]
    session = parse_import(orjson.dumps(doc), new_session_id())
    assert session.messages[-1].reasoning == "Greet back." and session.messages[-1].content == "Hello!"
    again = parse_import(encode(session), new_session_id())
    assert again.messages[-1].reasoning == "Greet back."
    assert "Greet back." in to_markdown(session)


def test_webui_import_splits_think_tags() -> None:
    doc = {"internal": [["Hi", "<think>Say hello.</think>\n\nHello!"], ["Bye", "Bye!"]]}
    session = parse_import(orjson.dumps(doc), new_session_id())
    assert [(m.content, m.reasoning) for m in session.messages if m.role == "assistant"] == [
        ("Hello!", "Say hello."),
        ("Bye!", ""),
    ]
