"""Text that is shown as a name or a title: one line, no control characters, no bidi overrides.

A title from an imported chat or card could hold ESC sequences (which retitle or clear a terminal),
other control characters, or U+202E and its kin, which make a name read backwards ("txt.exe" shown as
"exe.txt"). Those are dropped when a title or name is saved.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the bidi embeddings, overrides, isolates and marks
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_BREAKS = re.compile(r"[\t\n\r\v\f\u2028\u2029]+")


def clean_line(text: str) -> str:
    """`text` on one line, without control characters or bidi controls, spaces collapsed."""
    return " ".join(_UNSAFE.sub("", _BREAKS.sub(" ", text)).split())
