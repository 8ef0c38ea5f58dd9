"""Reading whole-document JSON files (and their records' ids) with errors that name the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from retrieval_kd.errors import DataError, NotFoundError


def _text(path: Path) -> str:
    if not path.is_file():
        raise NotFoundError(f"{path}: file not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 ({e.reason} at byte {e.start})") from None


def load_json(path: str | Path) -> Any:
    """Parse a JSON document; a syntax error names the file and its line."""
    path = Path(path)
    try:
        return json.loads(_text(path))
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON ({e.msg} at column {e.colno})", e.lineno) from None


def record_id(path: Path, line: int, value: Any, expected: str) -> str:
    """A record's ``id`` (an integer, or a string not blank) as a string; anything else is an error
    saying it must be ``expected``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip():
        raise DataError(path, f"field 'id' must be {expected}, got {value!r}", line)
    return str(value)


def iter_json_array(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line where the element starts, element) for each element of a top-level JSON array."""
    path = Path(path)
    text = _text(path)
    dec = json.JSONDecoder()
    n = len(text)

    def skip(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    seen = [0, 1]  # (offset, line at offset): lines are counted once, front to back

    def line_of(i: int) -> int:
        if i < seen[0]:
            return text.count("\n", 0, i) + 1
        seen[1] += text.count("\n", seen[0], i)
        seen[0] = i
        return seen[1]

    i = skip(0)
    if i < n and text[i] == "\ufeff":
        i = skip(i + 1)
    if i >= n or text[i] != "[":
        raise DataError(path, "expected a JSON array (a list of records)", line_of(i))
    i = skip(i + 1)
    if i < n and text[i] == "]":
        return
    while True:
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise DataError(path, f"malformed JSON ({e.msg} at column {e.colno})", e.lineno) from None
        yield line_of(i), obj
        i = skip(end)
        if i < n and text[i] == ",":
            i = skip(i + 1)
            continue
        if i < n and text[i] == "]":
            if skip(i + 1) != n:
                raise DataError(path, "extra data after the JSON array", line_of(skip(i + 1)))
            return
        raise DataError(path, "malformed JSON (expected ',' or ']' after an element)", line_of(i))
