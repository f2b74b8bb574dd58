"""Avatars in the chat: the character's on its replies, the user's on theirs; they follow the character."""

from __future__ import annotations

from tests.browser.ui import ChatPage

# Each message row's avatar image, in page order: (user or bot, image URL)
AVATARS = """() => [...document.querySelectorAll('#chatbot [data-testid=user], #chatbot [data-testid=bot]')]
  .map((m) => {
    const row = m.closest('.message-row') || m.parentElement.parentElement;
    const img = row ? row.querySelector('.avatar-container img') : null;
    return [m.dataset.testid, img ? img.getAttribute('src') : null];
  })"""


def _avatars(chat: ChatPage) -> list[list[str | None]]:
    return list(chat.page.evaluate(AVATARS))


def test_character_and_user_avatars_follow_the_character(chat: ChatPage) -> None:
    friendly = chat.api("GET", "/api/presets/friendly").json()["title"]
    teacher = chat.api("GET", "/api/presets/teacher").json()["title"]
    chat.pick_character(friendly)
    chat.wait_for(lambda: len(chat.bots()) == 1, "the greeting")
    chat.send("Hello!")
    shown = chat.wait_for(lambda: [a for a in _avatars(chat) if a[1]] or None, "avatars on the messages")
    kinds = {who: src for who, src in shown}
    assert len(shown) == 3 and set(kinds) == {"user", "bot"}, shown
    assert kinds["user"] != kinds["bot"], "the user and the character share an avatar"
    bot_friendly = kinds["bot"]

    chat.pick_character(teacher)  # a new chat with the teacher's greeting and the teacher's avatar
    chat.wait_for(lambda: len(chat.bots()) == 1 and not chat.users(), "the teacher's greeting")
    chat.wait_for(
        lambda: (a := _avatars(chat)) and a[0][1] and a[0][1] != bot_friendly, "the teacher's avatar"
    )
    chat.send("Teach me one word.")
    teacher_avatar = _avatars(chat)[0][1]
    chat.reload()  # the open chat's avatars come back with the page
    chat.wait_for(lambda: len(chat.users()) == 1, "the chat after a reload")
    shown = chat.wait_for(lambda: [a for a in _avatars(chat) if a[1]] or None, "avatars after a reload")
    assert [src for who, src in shown if who == "bot"] == [teacher_avatar] * 2, shown
    assert [src for who, src in shown if who == "user"] == [kinds["user"]], shown
