"""Personas, lore placement and "start reply with" in the assembled prompt (no model: the runtime is built
without loading one, and lore budgets use the estimate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.characters import Character
from engine.chat_prompt import ChatOptions, build_prompt, check_options, resolve_persona
from engine.config import Settings
from engine.conversation import new_session, session_options, stateless_plan, update_options
from engine.errors import InvalidInput, NotFound
from engine.lore_scan import Fired
from engine.personas import Persona, PersonaStore
from engine.prompt import inject_at_depth, place
from engine.runtime import Runtime

DATA = Path(__file__).parent / "data" / "lore"


@pytest.fixture()
def rt(tmp_path: Path) -> Runtime:
    runtime = Runtime(Settings(data_dir=str(tmp_path / "data")), load=False)
    runtime.lorebooks.import_bytes("Eldoria.json", (DATA / "eldoria_world_info.json").read_bytes())
    return runtime


def fired(uid: int, position: int, order: float = 100, depth: int = 4, role: str = "system") -> Fired:
    return Fired("b", uid, "", "k", "", f"lore {uid}", position, depth, role, order)


# --- personas ---------------------------------------------------------------------------------------


def test_persona_store_default_and_atomic_file(tmp_path: Path) -> None:
    store = PersonaStore(tmp_path)
    store.save(Persona(name="Ken", description="{{user}} is a sailor."))
    store.save(Persona(name="けん", description="船乗り"))
    assert store.default_name() == "Ken"  # the first one becomes the default
    store.save(Persona(name="けん", description="船乗り"), make_default=True)
    assert store.default_name() == "けん" and [p.name for p in store.list()] == ["Ken", "けん"]
    store.delete("けん")
    assert store.default_name() is None
    assert (tmp_path / "personas" / "personas.json.bak").is_file()
    with pytest.raises(NotFound):
        store.get("けん")


def test_a_corrupt_persona_file_is_set_aside_not_overwritten(tmp_path: Path) -> None:
    store = PersonaStore(tmp_path)
    store.folder.mkdir(parents=True)
    store.path.write_text("{not json")
    assert store.list() == [] and store.problems
    assert (tmp_path / "personas" / "corrupt" / "personas.json").read_text() == "{not json"


@pytest.mark.parametrize("bad", ["", " Ken", "a\nb", "x" * 101])
def test_persona_names_are_checked(bad: str) -> None:
    with pytest.raises(InvalidInput):
        Persona.from_dict({"name": bad})


def test_persona_replaces_user_everywhere_and_its_description_goes_into_the_system_prompt(
    rt: Runtime,
) -> None:
    rt.personas.save(Persona(name="Ken", description="{{user}} is a sailor who fears {{char}}."))
    char = Character(name="mira", title="Mira", description="{{char}} waits for {{user}}.")
    plan = build_prompt(rt, char, [{"role": "user", "content": "hi"}], ChatOptions(persona="Ken"))
    system = plan.messages[0]["content"]
    assert "Mira waits for Ken." in system and "Ken is a sailor who fears Mira." in system
    assert system.index("Mira waits") < system.index("Ken is a sailor")  # after the character
    assert "{{user}}" not in system and plan.persona.name == "Ken"


def test_persona_resolution_falls_back_to_default_then_user_name(rt: Runtime) -> None:
    assert resolve_persona(rt, None).name == "User"
    rt.personas.save(Persona(name="Ken"))
    assert resolve_persona(rt, None).name == "Ken"  # the default
    assert resolve_persona(rt, "gone").name == "Ken"
    assert resolve_persona(rt, {"name": "Ann", "description": "x"}).name == "Ann"


def test_persona_at_depth(rt: Runtime) -> None:
    rt.settings.persona.position = "depth"
    rt.settings.persona.depth = 1
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    plan = build_prompt(rt, None, history, ChatOptions(persona={"name": "Ken", "description": "Ken sails."}))
    assert [m["role"] for m in plan.messages] == ["system", "user", "system", "assistant"]
    assert plan.messages[2]["content"] == "Ken sails."


# --- lore placement -----------------------------------------------------------------------------------


def test_place_sorts_each_position_by_order() -> None:
    placed = place(
        [fired(1, 0, 50), fired(2, 0, 10), fired(3, 1), fired(4, 5, 1), fired(5, 5, 2), fired(6, 6)]
    )
    assert placed.before == ["lore 2", "lore 1"] and placed.after == ["lore 3"]
    assert placed.examples_top == ["lore 5", "lore 4"] and placed.examples_bottom == ["lore 6"]


def test_author_note_positions_go_to_depth_4_before_lore_of_that_depth() -> None:
    placed = place([fired(1, 4, depth=4), fired(2, 3), fired(3, 2)])
    assert placed.depth[(4, "system")] == ["lore 3\nlore 2", "lore 1"]


def test_inject_at_depth_like_sillytavern() -> None:
    hist = [{"role": r, "content": c} for r, c in [("user", "u1"), ("assistant", "a1"), ("user", "u2")]]
    depth = {(0, "system"): ["s0"], (1, "user"): ["u@1"], (1, "system"): ["s1"], (9, "system"): ["far"]}
    out = [m["content"] for m in inject_at_depth(hist, depth)]
    assert out == ["far", "u1", "a1", "u@1", "s1", "u2", "s0"]
    cont = [m["content"] for m in inject_at_depth(hist, {(0, "system"): ["s0"]}, continuing=True)]
    assert cont == ["u1", "a1", "s0", "u2"]


def test_real_book_in_the_prompt(rt: Runtime) -> None:
    history = [
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "A secret, then."},
        {"role": "user", "content": "We ride to Eldoria. Tell me a riddle. The curfew?"},
    ]
    plan = build_prompt(rt, None, history, ChatOptions(lorebooks=["Eldoria"]))
    whys = {f["uid"]: f["why"] for f in plan.lore}
    assert whys == {5: "constant", 0: "Eldoria", 16: "riddle", 18: "secret", 17: "curfew", 1: "recursion"}
    system = plan.messages[0]["content"]
    assert system.index("Magic is rare") < system.index("Eldoria is a mountain")  # before, by order
    assert "Highspire is a city" in system  # after the character definitions
    assert "What walks on four legs?" in system  # example dialogue from the book
    roles = [(m["role"], m["content"][:12]) for m in plan.messages[1:]]
    # AN-position lore at depth 4 is above the first message; the secret (depth 0, as the assistant) just
    # above the last message, so that the prompt does not end with it
    assert roles[0] == ("system", "The city has") and roles[-2] == ("assistant", "Assistant ke")
    assert roles[-1] == ("user", "We ride to E")


def test_reply_prefix_is_a_trailing_assistant_message(rt: Runtime) -> None:
    char = Character(name="mira", title="Mira", post_history_instructions="Stay in character.")
    plan = build_prompt(
        rt, char, [{"role": "user", "content": "hi"}], ChatOptions(reply_prefix="*{{char}} smiles*")
    )
    assert plan.messages[-1] == {"role": "assistant", "content": "*Mira smiles*"}
    assert plan.messages[-2] == {"role": "system", "content": "Stay in character."}
    assert plan.prefill == "*Mira smiles*"


def test_continue_keeps_the_reply_last_even_with_a_post_history_note(rt: Runtime) -> None:
    char = Character(name="mira", title="Mira", post_history_instructions="Stay in character.")
    hist = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Well"}]
    plan = build_prompt(rt, char, hist, ChatOptions(reply_prefix="ignored"), mode="continue")
    assert plan.messages[-1] == {"role": "assistant", "content": "Well"} and plan.prefill == ""


def test_impersonate_ends_with_the_instruction_in_the_users_name(rt: Runtime) -> None:
    plan = build_prompt(
        rt,
        None,
        [{"role": "user", "content": "hi"}],
        ChatOptions(persona={"name": "Ken"}),
        mode="impersonate",
    )
    assert plan.messages[-1]["role"] == "system" and "Ken" in plan.messages[-1]["content"]


def test_options_are_checked(rt: Runtime) -> None:
    with pytest.raises(NotFound, match="no lorebook"):
        check_options(rt, ChatOptions(lorebooks=["Nope"]))
    with pytest.raises(NotFound, match="no persona"):
        check_options(rt, ChatOptions(persona="Nobody"))
    with pytest.raises(InvalidInput):
        check_options(rt, ChatOptions(lorebooks=["../etc"]))


def test_a_session_remembers_its_options(rt: Runtime) -> None:
    from tests.scripted import ScriptedBackend

    rt.engine.replace_backend(ScriptedBackend())  # a chat is only made while a model is loaded
    rt.personas.save(Persona(name="Ken"))
    session = new_session(rt, options=ChatOptions(persona="Ken", lorebooks=["Eldoria"], reply_prefix="Ah,"))
    stored = rt.sessions.get(session.id)
    assert session_options(stored) == ChatOptions(persona="Ken", lorebooks=["Eldoria"], reply_prefix="Ah,")
    update_options(rt, stored, {"reply_prefix": ""})
    assert stored.reply_prefix == "" and stored.lorebooks == ["Eldoria"]
    doc = json.loads(rt.sessions.export_bytes(session.id))
    assert doc["persona"] == "Ken" and doc["lorebooks"] == ["Eldoria"]


def test_stateless_messages_pass_through_untouched_without_options(rt: Runtime) -> None:
    msgs = [{"role": "user", "content": "hi {{user}}"}]
    plan, out, _ = stateless_plan(rt, msgs)
    assert plan is None and out == msgs
    plan, out, _ = stateless_plan(rt, msgs, options={"persona": {"name": "Ken"}})
    assert plan is not None and out[-1] == {
        "role": "user",
        "content": "hi {{user}}",
    }  # history is not rendered


def test_an_assistant_message_alone_at_depth_0_goes_above_the_last_message() -> None:
    hist = [
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
    ]
    out = [m["content"] for m in inject_at_depth(hist, {(0, "assistant"): ["lore"]})]
    assert out == ["u1", "a1", "lore", "u2"]
    both = [m["content"] for m in inject_at_depth(hist, {(0, "assistant"): ["lore"], (0, "system"): ["s"]})]
    assert both == ["u1", "a1", "u2", "lore", "s"]  # a system message after it ends the prompt


def test_the_session_prompt_view_keeps_a_finished_reply_last(rt: Runtime) -> None:
    hist = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert build_prompt(rt, None, hist, ChatOptions()).messages[-1] == {
        "role": "assistant",
        "content": "hello",
    }


def test_the_reply_continues_its_prefix_and_a_hidden_prefix_leaves_no_leading_space(rt: Runtime) -> None:
    from tests.scripted import ScriptedBackend

    backend = ScriptedBackend()
    rt.engine.replace_backend(backend)
    ask = [{"role": "user", "content": "hi"}]
    backend.enqueue(" me", " hearties")
    shown = rt.turn(ask, options={"reply_prefix": "Ahoy,"})
    assert shown.text() == "Ahoy, me hearties"
    backend.enqueue(" me", " hearties")
    hidden = rt.turn(ask, options={"reply_prefix": "Ahoy,", "show_reply_prefix": False}, session="new")
    assert hidden.text() == "me hearties"
    assert hidden.session_id is not None
    assert rt.sessions.get(hidden.session_id).messages[-1].content == "me hearties"
