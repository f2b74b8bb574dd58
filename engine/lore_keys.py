"""Matching one lorebook key against the scanned text, as SillyTavern matches it.

A key written `/pattern/flags` is a JavaScript-style regex, and so is any key of a V3 entry with
`use_regex` (written bare); any other key is plain text, compared without case unless the entry says
otherwise, and as a whole word when it is one word. "Whole word" uses JavaScript's ASCII `\\W` as the
boundary, as SillyTavern does, so a key next to Japanese text still matches.
Regex keys come from files people download, so each search runs with a time limit (the `regex` module's
`timeout`): a pathological pattern costs a fraction of a second, never the server.
"""

from __future__ import annotations

import functools
from typing import Any

import regex

_REGEX_KEY = regex.compile(r"^/([\w\W]+?)/([gimsuy]*)$")
_UNESCAPED_SLASH = regex.compile(r"(^|[^\\])/")
_WORD_SPLIT = regex.compile(r"\s+")


class KeyTimeout(Exception):
    """A regex key ran past its time limit."""


@functools.lru_cache(maxsize=4096)
def parse_regex_key(key: str) -> tuple[Any, bool] | None:
    """(compiled pattern, sticky) for a `/pattern/flags` key, or None when the key is plain text."""
    m = _REGEX_KEY.match(key)
    if not m:
        return None
    pattern, flags = m.group(1), m.group(2)
    if _UNESCAPED_SLASH.search(pattern):
        return None  # an unescaped delimiter inside: not a regex key
    opts = regex.V0
    if "i" in flags:
        opts |= regex.IGNORECASE
    if "m" in flags:
        opts |= regex.MULTILINE
    if "s" in flags:
        opts |= regex.DOTALL
    if "u" not in flags:
        opts |= regex.ASCII  # JavaScript's \w, \d and \b are ASCII unless the u flag is set
    try:
        return regex.compile(pattern, opts), "y" in flags
    except (regex.error, ValueError, OverflowError, RecursionError):
        return None  # not valid syntax: SillyTavern then treats the key as plain text


@functools.lru_cache(maxsize=4096)
def plain_regex(pattern: str, case_sensitive: bool) -> Any | None:
    """A key written as a bare regular expression (a Character Card V3 entry with `use_regex`), compiled;
    None when it is not valid syntax (the key is then plain text)."""
    try:
        return regex.compile(pattern, regex.V0 | (0 if case_sensitive else regex.IGNORECASE))
    except (regex.error, ValueError, OverflowError, RecursionError):
        return None


@functools.lru_cache(maxsize=4096)
def _word_pattern(word: str) -> Any:
    return regex.compile(r"(?:^|\W)(" + regex.escape(word) + r")(?:$|\W)", regex.ASCII)


def match_key(
    haystack: str,
    key: str,
    *,
    case_sensitive: bool,
    whole_words: bool,
    timeout: float = 0.25,
    as_regex: bool = False,
) -> bool:
    """Whether `key` occurs in `haystack`. `as_regex`: the key is a regular expression even without the
    `/.../` delimiters (V3 `use_regex`). Raises KeyTimeout for a regex key that runs too long."""
    parsed = parse_regex_key(key)
    if parsed is None and as_regex:
        compiled = plain_regex(key, case_sensitive)
        parsed = (compiled, False) if compiled is not None else None
    if parsed is not None:
        pattern, sticky = parsed
        try:
            found = (pattern.match if sticky else pattern.search)(haystack, timeout=timeout)
        except TimeoutError:
            raise KeyTimeout(key) from None
        return found is not None
    if not case_sensitive:
        haystack, key = haystack.lower(), key.lower()
    if whole_words and len(_WORD_SPLIT.split(key)) == 1:
        return _word_pattern(key).search(haystack) is not None
    return key in haystack
