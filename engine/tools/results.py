"""What a tool call gives back to the model: text, whether it failed, and a cap on its length."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool = False
    ms: float = 0.0  # how long the call took
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"content": self.content, "is_error": self.is_error}


def cap(text: str, limit: int) -> tuple[str, bool]:
    """`text` cut to `limit` characters with a visible note that says how much was left out."""
    if len(text) <= limit:
        return text, False
    note = f"\n[truncated: {len(text) - limit:,} of {len(text):,} characters left out]"
    return text[:limit] + note, True


def error_result(message: str, ms: float = 0.0) -> ToolResult:
    return ToolResult(message, is_error=True, ms=ms)


def result_text(result: Any) -> str:
    """The text of an MCP CallToolResult's content blocks; other media are described, not inlined."""
    parts = [_block_text(block) for block in getattr(result, "content", None) or []]
    text = "\n".join(p for p in parts if p)
    structured = getattr(result, "structured_content", None)
    if not text and structured is not None:
        text = json.dumps(structured, ensure_ascii=False)
    return text


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", "")
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        size = len(getattr(block, "data", "") or "") * 3 // 4
        return f"[{kind}: {getattr(block, 'mime_type', '?')}, {size:,} bytes]"
    if kind == "resource":
        res = block.resource
        text = getattr(res, "text", None)
        return (
            str(text)
            if text is not None
            else f"[resource {res.uri}: {getattr(res, 'mime_type', None) or 'binary'}]"
        )
    if kind == "resource_link":
        return (
            f"[resource link: {block.uri}" + (f" ({block.name})" if getattr(block, "name", "") else "") + "]"
        )
    return f"[{kind or 'unknown'} content]"
