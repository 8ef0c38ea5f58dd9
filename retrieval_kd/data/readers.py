"""Line-oriented readers that report malformed input by file and line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from retrieval_kd.errors import DataError, NotFoundError

V = TypeVar("V")


def _open(path: Path):
    """A text file, read as UTF-8; a ``.gz`` one through gzip."""
    if not path.is_file():
        raise NotFoundError(f"{path}: file not found")
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL file (``.jsonl.gz`` too)."""
    path = Path(path)
    with _open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, f"malformed JSON ({e.msg} at column {e.colno})", lineno)
            if not isinstance(obj, dict):
                raise DataError(path, f"expected a JSON object, got {type(obj).__name__}", lineno)
            yield lineno, obj


def read_tsv(
    path: str | Path, ncols: int | tuple[int, ...], *, sep: str | None = "\t"
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) for each non-blank line; the column count is checked.

    ``sep=None`` splits on any whitespace (TREC qrels and runs).
    """
    path = Path(path)
    allowed = (ncols,) if isinstance(ncols, int) else ncols
    with _open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(sep) if sep is not None else line.split()
            if len(fields) not in allowed:
                want = " or ".join(map(str, allowed))
                raise DataError(path, f"expected {want} columns, found {len(fields)}", lineno)
            yield lineno, fields


def require_str(path: Path, lineno: int, obj: dict[str, Any], key: str, *, required: bool) -> str:
    """Fetch a string field from a JSON object, with a located error if it is missing or typed wrong."""
    if key not in obj or obj[key] is None:
        if required:
            raise DataError(path, f"missing field '{key}'", lineno)
        return ""
    val = obj[key]
    if isinstance(val, (int, float)) and not isinstance(val, bool) and key == "_id":
        return str(val)
    if not isinstance(val, str):
        raise DataError(path, f"field '{key}' must be a string, got {type(val).__name__}", lineno)
    return val


def parse_relevance(path: Path, lineno: int, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        try:
            f = float(raw)
        except ValueError:
            raise DataError(path, f"relevance '{raw}' is not a number", lineno) from None
        if not f.is_integer():
            raise DataError(path, f"relevance '{raw}' is not an integer grade", lineno)
        return int(f)


def read_qrels(path: Path, rows: Iterable[tuple[int, str, str, str]]) -> dict[str, dict[str, int]]:
    """Qrels from (line number, query id, document id, relevance) rows; an empty id, a repeated
    (query, document) pair or no judgement at all is an error."""
    qrels: dict[str, dict[str, int]] = {}
    for lineno, qid, did, rel in rows:
        if not qid or not did:
            raise DataError(path, "empty query or document id", lineno)
        judged = qrels.setdefault(qid, {})
        if did in judged:
            raise DataError(path, f"duplicate judgement for query '{qid}', document '{did}'", lineno)
        judged[did] = parse_relevance(path, lineno, rel)
    if not qrels:
        raise DataError(path, "no judgements")
    return qrels


class Entries(Generic[V]):
    """The entries a loader reads from ``path``, keyed by id in file order; ``what`` names one
    (``document``) in the errors, which name the line. With ``blank_ids=False`` a blank id is one."""

    def __init__(self, path: Path, what: str, *, blank_ids: bool = True) -> None:
        self.path, self.what, self.blank_ids = path, what, blank_ids
        self.by_id: dict[str, V] = {}

    def add(self, lineno: int, eid: str, value: V, text: str, empty: str = "text") -> None:
        """``value`` under ``eid``; a repeated id, or a blank ``text`` (``empty``: what it is), is an error."""
        if not self.blank_ids and not eid.strip():
            raise DataError(self.path, f"empty {self.what} id", lineno)
        if eid in self.by_id:
            raise DataError(self.path, f"duplicate {self.what} id '{eid}'", lineno)
        if not text.strip():
            raise DataError(self.path, f"{self.what} '{eid}' has empty {empty}", lineno)
        self.by_id[eid] = value

    def done(self, plural: str) -> dict[str, V]:
        """The entries; none at all is an error (``no <plural>``)."""
        if not self.by_id:
            raise DataError(self.path, f"no {plural}")
        return self.by_id
