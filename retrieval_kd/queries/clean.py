"""Cleaning a generated query: the first real line, without preamble, quotes or markup.

The rules, in order:

1. Lines are stripped and empty ones dropped. A leading line that only announces the answer
   ("Here is a search query:", "Query:", "Sure!") is skipped when another line follows.
2. Preambles are cut from the front of the line: "Sure, here is a search query for this
   passage:", "Search query:", "Query 1 -", "Q:", list markers ("1.", "-", "*"), repeatedly.
3. Wrapping quotes, backticks and markdown emphasis are stripped, whitespace is collapsed.
4. A query that talks about the prompt instead of the passage's content ("What is this
   passage about?", "... the search query ...") is ``meta``. One cut off by the token limit
   (``finish == "length"`` and the kept line is the generation's last) is ``truncated``.
5. Length bounds: fewer than ``min_words`` words is ``too_short``, more than ``max_words``
   words or ``max_chars`` characters is ``too_long`` (rejected, not cut: a query that long is
   the passage copied out). Nothing left is ``empty``.

Duplicates (the same text once case, whitespace and trailing punctuation are ignored) are
found across passages by :class:`Deduper`; the first passage keeps the query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REASONS = ("empty", "meta", "truncated", "too_short", "too_long", "duplicate")
"""Why a generation is rejected (the manifest counts each)."""

_QUOTES = "\"'`\u201c\u201d\u2018\u2019*_ \t"
_ANNOUNCE = re.compile(
    r"^(?:sure|certainly|okay|ok|of course)?[,.!]?\s*"
    r"(?:(?:here(?:'s| is| are)|this is|the following is)\s+)?"
    r"(?:(?:a|an|the|one|my)\s+)?(?:possible\s+|short\s+|suitable\s+|relevant\s+)*"
    r"(?:search\s+)?(?:query|queries|question)"
    r"(?:\s+(?:that|which|for|from|based on|to)\b[^:]*)?\s*(?:is)?\s*:\s*",
    re.IGNORECASE)
_LABEL = re.compile(r"^(?:(?:search\s+)?query\s*\d*|q\d*|question|answer|output)\s*[:\-\u2013]\s*",
                    re.IGNORECASE)
_INTERJECTION = re.compile(r"^(?:sure|certainly|okay|ok|of course)\b[,.!]*\s*", re.IGNORECASE)
_LIST = re.compile(r"^(?:\d{1,2}[.)]|[-*\u2022>#]+)\s+")
_ONLY_ANNOUNCE = re.compile(
    r"^(?:(?:sure|certainly|okay|ok|of course)[,.!]*\s*)+$|.*:\s*$", re.IGNORECASE)
_META = re.compile(
    r"\b(?:the|this|that|above|following|given) (?:passage|text|abstract|article|document|paragraph)s?\b"
    r"|^(?:what|which) (?:is|was) the (?:question|answer|query)\b|\bsearch query\b"
    r"|\bthe user (?:typed|asked|wants)\b|\banswer to (?:the|this) question\b",
    re.IGNORECASE)
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class CleanRules:
    min_words: int = 3
    max_words: int = 32
    max_chars: int = 256


def _strip_front(line: str) -> str:
    prev = None
    while line != prev:
        prev = line
        line = line.strip().strip(_QUOTES)
        for pat in (_INTERJECTION, _ANNOUNCE, _LABEL, _LIST):
            line = pat.sub("", line, count=1)
    return line


def clean_query(raw: str, rules: CleanRules = CleanRules(),
                finish: str | None = None) -> tuple[str | None, str | None]:
    """``(query, None)`` for a usable generation, ``(None, reason)`` otherwise. ``finish``
    is the generator's finish reason (``"length"``: it hit the token limit)."""
    lines = [ln.strip() for ln in (raw or "").splitlines() if ln.strip()]
    while len(lines) > 1 and _ONLY_ANNOUNCE.match(lines[0]):
        lines.pop(0)
    text = _strip_front(lines[0]) if lines else ""
    text = _SPACE.sub(" ", text).strip().strip(_QUOTES).strip()
    if not text or not any(ch.isalnum() for ch in text):
        return None, "empty"
    if _META.search(text):
        return None, "meta"
    if finish == "length" and len(lines) == 1:
        return None, "truncated"
    words = len(text.split())
    if words < rules.min_words:
        return None, "too_short"
    if words > rules.max_words or len(text) > rules.max_chars:
        return None, "too_long"
    return text, None


def dedup_key(query: str) -> str:
    return _SPACE.sub(" ", query.casefold()).strip().rstrip("?.!;:, ")


class Deduper:
    """Remembers kept queries; ``seen(q)`` is True for a repeat of an earlier one."""

    def __init__(self) -> None:
        self._keys: set[str] = set()

    def seen(self, query: str) -> bool:
        key = dedup_key(query)
        if key in self._keys:
            return True
        self._keys.add(key)
        return False
