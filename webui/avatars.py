"""Avatars: the character's image (or a coloured letter square) on its replies, the user's on theirs.

Gradio's Chatbot takes one pair of avatar images, so the chat tab sends the pair again whenever the open
chat's character changes. Placeholders are PNG files written once into a temp folder Gradio may serve.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from engine import EngineError

AVATAR_DIR = Path(tempfile.mkdtemp(prefix="llmchat-avatars-"))


@lru_cache(maxsize=256)
def placeholder(name: str) -> Image.Image:
    """A coloured square with the name's first letter, for characters (and users) without an avatar."""
    digest = hashlib.sha256(name.encode()).digest()
    color = (64 + digest[0] % 128, 64 + digest[1] % 128, 64 + digest[2] % 128)
    img = Image.new("RGB", (256, 256), color)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=140)
    draw.text((128, 128), name[:1].upper(), fill="white", font=font, anchor="mm")
    return img


@lru_cache(maxsize=256)
def placeholder_file(name: str) -> str:
    """The placeholder as a small PNG file (the chatbot takes file paths); written once per name."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    path = AVATAR_DIR / f"letter-{digest}.png"
    if not path.is_file():
        with tempfile.NamedTemporaryFile(dir=AVATAR_DIR, suffix=".tmp", delete=False) as tmp:
            placeholder(name).resize((96, 96)).save(tmp, format="PNG")
        os.replace(tmp.name, path)  # whole or not there: a reader never gets half a file
    return str(path)


def character_avatar(rt: Any, name: str | None, title: str | None = None) -> str:
    """The avatar file of preset `name`, or a placeholder with the first letter of its title (or of the
    assistant's name for chats without a character)."""
    if name:
        try:
            path = rt.presets.avatar_path(name)
            if path is not None:
                return str(path)
            title = title or rt.presets.get(name).display_name
        except EngineError:  # deleted since: the snapshot's title
            pass
    return placeholder_file(title or name or rt.settings.chat.assistant_name)


def user_avatar(rt: Any) -> str:
    """The user's avatar: a placeholder with the first letter of chat.user_name (a persona's image later)."""
    return placeholder_file(rt.settings.chat.user_name)


def avatar_pair(rt: Any, name: str | None, title: str | None = None) -> tuple[str, str]:
    """(user, character) in the order gr.Chatbot's avatar_images takes them."""
    return user_avatar(rt), character_avatar(rt, name, title)


def avatar_data_uri(path: str, size: int = 48) -> str:
    """A small PNG thumbnail of the image at `path` as a data: URI, for an avatar inside a message (a group
    chat shows each reply's speaker; the chatbot's own avatar pair is one character's). Cached per file
    version; an unreadable image gives the placeholder's."""
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        stamp = 0
    return _thumbnail(path, stamp, size)


@lru_cache(maxsize=256)
def _thumbnail(path: str, stamp: int, size: int) -> str:
    try:
        with Image.open(path) as img:
            thumb = img.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError):
        thumb = placeholder(Path(path).stem).convert("RGBA")
    thumb.thumbnail((size, size))
    png = io.BytesIO()
    thumb.save(png, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(png.getvalue()).decode("ascii")
