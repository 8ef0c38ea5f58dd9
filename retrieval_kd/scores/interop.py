"""Import and export teacher scores in the file formats other tools use.

=====================  =====================================================================
``st-pickle``          sentence-transformers' cross-encoder scores: pickled ``{qid: {pid: score}}``
                       (gzipped when the name ends with ``.gz``)
``margin-mse-tsv``     Hofstaetter's Margin-MSE triples: ``pos_score neg_score qid pid_pos pid_neg``
``flagembedding-jsonl``  FlagEmbedding: ``{"query", "pos", "neg", "pos_scores", "neg_scores"}``
                       per query; holds *texts*, so both directions need a dataset
``pylate``             PyLate knowledge distillation: ``{"query_id", "document_ids", "scores"}``
                       per query; Parquet when the name ends with ``.parquet``, else JSONL
``trec``               TREC run: ``qid Q0 docid rank score tag``
=====================  =====================================================================

Scores survive a round trip bit for bit: text formats write ``repr(float)``. Positives are
rows with ``label > 0``; imports of the pair formats give positives label 1, others null.
Every file is written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import math
import numbers
import pickle
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from retrieval_kd.artifacts import atomic_open
from retrieval_kd.data.readers import read_jsonl, read_tsv, require_str
from retrieval_kd.data.trec import load_trec_run, trec_lines
from retrieval_kd.data.types import Dataset
from retrieval_kd.errors import DataError, NotFoundError, RkdError
from retrieval_kd.scores.schema import make_table

FORMATS = ("st-pickle", "margin-mse-tsv", "flagembedding-jsonl", "pylate", "trec")
_NEEDS_DATASET = ("flagembedding-jsonl",)
_CANONICAL_INT = re.compile(r"0|[1-9][0-9]*")
_TSV_BAD = re.compile(r"[\t\r\n]")

log = logging.getLogger(__name__)

Hit = tuple[str, float, int | None]
"""(docid, score, label) of one row."""
Groups = dict[str, list[Hit]]
"""qid -> its rows, in table order."""


# ---------------------------------------------------------------------------------------- API

def export_scores(table: pa.Table, fmt: str, path: str | Path, *, dataset: Dataset | None = None,
                  tag: str = "rkd") -> int:
    """Write ``table`` (in :data:`~retrieval_kd.scores.schema.SCHEMA`) to ``path`` as ``fmt``.

    Returns the number of records written: scores for ``st-pickle``, lines (rows) otherwise.
    """
    ds = _check(fmt, dataset)
    path, groups = Path(path), _groups(table)
    if fmt == "st-pickle":
        return _export_st_pickle(groups, path)
    if fmt == "pylate" and path.suffix == ".parquet":
        return _export_pylate_parquet(groups, path)
    lines = {
        "margin-mse-tsv": lambda: _margin_lines(groups),
        "flagembedding-jsonl": lambda: _flag_lines(groups, ds),
        "pylate": lambda: _pylate_lines(groups),
        "trec": lambda: _trec_lines(groups, tag),
    }[fmt]()
    return _write_lines(path, lines)


def import_scores(fmt: str, path: str | Path, *, dataset: Dataset | None = None) -> pa.Table:
    """Read ``path`` written in ``fmt`` into a table in :data:`~retrieval_kd.scores.schema.SCHEMA`.

    Rows have no rank; a (qid, docid) pair given twice must carry the same score.
    """
    ds = _check(fmt, dataset)
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: file not found")
    if fmt == "st-pickle":
        rows = _import_st_pickle(path)
    elif fmt == "margin-mse-tsv":
        rows = _import_margin(path)
    elif fmt == "flagembedding-jsonl":
        rows = _import_flag(path, ds)
    elif fmt == "pylate":
        rows = _import_pylate(path)
    else:
        rows = _Rows(path)
        for qid, hits in load_trec_run(path).items():
            for did, score in hits.items():
                rows.add(qid, did, score, None)
    return rows.table()


def _check(fmt: str, dataset: Dataset | None) -> Dataset | None:
    if fmt not in FORMATS:
        raise RkdError(f"unknown score format '{fmt}'; known formats: {', '.join(FORMATS)}")
    if fmt in _NEEDS_DATASET and dataset is None:
        raise RkdError(f"format '{fmt}' holds texts, not ids: it needs a dataset (--dataset)")
    return dataset


# ------------------------------------------------------------------------------------ helpers

def _groups(table: pa.Table) -> Groups:
    """Rows grouped by query; a repeated (qid, docid) is an error."""
    n = table.num_rows
    cols = table.column_names
    labels = table.column("label").to_pylist() if "label" in cols else [None] * n
    groups: Groups = {}
    seen: set[tuple[str, str]] = set()
    for q, d, s, lab in zip(table.column("qid").to_pylist(), table.column("docid").to_pylist(),
                            table.column("score").to_pylist(), labels):
        if (q, d) in seen:
            raise RkdError(f"the table lists query '{q}', document '{d}' twice")
        seen.add((q, d))
        groups.setdefault(q, []).append((d, float(s), lab))
    return groups


def _split(hits: list[Hit]) -> tuple[list[Hit], list[Hit]]:
    """(positives: label > 0, negatives: label <= 0 or null)."""
    return ([h for h in hits if h[2] is not None and h[2] > 0],
            [h for h in hits if h[2] is None or h[2] <= 0])


def _require_labels(groups: Groups, fmt: str) -> None:
    if not any(h[2] is not None for hits in groups.values() for h in hits):
        raise RkdError(f"{fmt} export needs relevance labels to tell positives from negatives, "
                       "but the table has none (score candidates of a split that has qrels)")


def _warn_skipped(fmt: str, skipped: int, total: int) -> None:
    if skipped:
        log.warning("%s: skipped %d of %d queries without a positive (label > 0)", fmt, skipped, total)


def _write_lines(path: Path, lines: Iterable[str], chunk: int = 8192) -> int:
    n, buf = 0, []
    with atomic_open(path) as f:
        for line in lines:
            buf.append(line)
            n += 1
            if len(buf) >= chunk:
                f.write(("\n".join(buf) + "\n").encode("utf-8"))
                buf.clear()
        if buf:
            f.write(("\n".join(buf) + "\n").encode("utf-8"))
    return n


def _plain_ids(ids: Iterable[str], fmt: str, bad: re.Pattern[str]) -> None:
    for i in ids:
        if not i or bad.search(i):
            raise RkdError(f"{fmt}: id {i!r} is empty or holds a separator character")


def _number(path: Path, where: int | None, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(path, f"{what} {value!r} is not a number", where)
    return float(value)


def _parse_float(path: Path, lineno: int, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise DataError(path, f"score '{raw}' is not a number", lineno) from None


def _as_id(path: Path, where: int | None, value: Any, what: str) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    raise DataError(path, f"{what} {value!r} is not a string or integer id", where)


class _Rows:
    """Collects imported (qid, docid) -> score; a second, different score is an error."""

    def __init__(self, path: Path, unit: str = "line") -> None:
        self.path, self.unit = path, unit
        self.scores: dict[tuple[str, str], tuple[float, int | None]] = {}
        self.positives: set[tuple[str, str]] = set()

    def add(self, qid: str, did: str, score: float, where: int | None, positive: bool = False) -> None:
        key = (qid, did)
        old = self.scores.setdefault(key, (score, where))
        if not (old[0] == score or (math.isnan(old[0]) and math.isnan(score))):
            first = f" on {self.unit} {old[1]}" if old[1] is not None else ""
            problem = (f"query '{qid}', document '{did}' has score {score!r} here "
                       f"but {old[0]!r}{first}")
            if self.unit == "line":
                raise DataError(self.path, problem, where)
            raise DataError(self.path, f"{self.unit} {where}: {problem}")
        if positive:
            self.positives.add(key)

    def table(self) -> pa.Table:
        if not self.scores:
            raise DataError(self.path, "no scores found")
        keys = list(self.scores)
        labels = [1 if k in self.positives else None for k in keys] if self.positives else None
        return make_table([k[0] for k in keys], [k[1] for k in keys],
                          [self.scores[k][0] for k in keys], labels=labels)


# ----------------------------------------------------------------------------------- st-pickle

class _PlainUnpickler(pickle.Unpickler):
    """Refuses every global except numpy scalars, so loading cannot run arbitrary code."""

    _ALLOWED = frozenset({("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                          ("numpy._core.multiarray", "scalar")})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: expected plain dicts of numbers")


def _export_st_pickle(groups: Groups, path: Path) -> int:
    ids = [q for q in groups] + [h[0] for hits in groups.values() for h in hits]
    key = int if all(_CANONICAL_INT.fullmatch(i) for i in ids) else str
    data = {key(q): {key(d): s for d, s, _ in hits} for q, hits in groups.items()}
    gz = path.name.endswith(".gz")
    with atomic_open(path) as raw:
        out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if gz else contextlib.nullcontext(raw)
        with out as f:
            pickle.dump(data, f, protocol=4)
    return sum(len(v) for v in data.values())


def _import_st_pickle(path: Path) -> _Rows:
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            data = _PlainUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, ArithmeticError) as e:  # what a corrupt or foreign pickle raises
        raise DataError(path, f"not a readable score pickle ({e})") from None
    if not isinstance(data, dict):
        raise DataError(path, f"expected a dict qid -> {{pid: score}}, got {type(data).__name__}")
    rows = _Rows(path)
    seen_q: set[str] = set()
    for q, hits in data.items():
        qid = _as_id(path, None, q, "query id")
        if qid in seen_q:
            raise DataError(path, f"query id '{qid}' appears twice (as int and str)")
        seen_q.add(qid)
        if not isinstance(hits, dict):
            raise DataError(path, f"query '{qid}': expected a dict pid -> score, got {type(hits).__name__}")
        seen_d: set[str] = set()
        for d, s in hits.items():
            did = _as_id(path, None, d, f"query '{qid}': passage id")
            if did in seen_d:
                raise DataError(path, f"query '{qid}': passage id '{did}' appears twice (as int and str)")
            seen_d.add(did)
            rows.add(qid, did, _number(path, None, s, f"query '{qid}', passage '{did}': score"), None)
    return rows


# ------------------------------------------------------------------------------ margin-mse-tsv

def _margin_lines(groups: Groups) -> Iterator[str]:
    _require_labels(groups, "margin-mse-tsv")
    _plain_ids([*groups, *(h[0] for hits in groups.values() for h in hits)], "margin-mse-tsv", _TSV_BAD)
    skipped = 0
    for qid, hits in groups.items():
        pos, neg = _split(hits)
        if not pos:
            skipped += 1
            continue
        for p, ps, _ in pos:
            for n, ns, _ in neg:
                yield f"{ps!r}\t{ns!r}\t{qid}\t{p}\t{n}"
    _warn_skipped("margin-mse-tsv", skipped, len(groups))


def _import_margin(path: Path) -> _Rows:
    rows = _Rows(path)
    for lineno, (ps, ns, qid, p, n) in read_tsv(path, 5):
        if not (qid and p and n):
            raise DataError(path, "empty query or passage id", lineno)
        rows.add(qid, p, _parse_float(path, lineno, ps), lineno, positive=True)
        rows.add(qid, n, _parse_float(path, lineno, ns), lineno)
    return rows


# ------------------------------------------------------------------------- flagembedding-jsonl

def _flag_lines(groups: Groups, ds: Dataset) -> Iterator[str]:
    _require_labels(groups, "flagembedding-jsonl")
    queries, docs = ds.queries.texts, ds.corpus.docs
    skipped = 0
    for qid, hits in groups.items():
        if qid not in queries:
            raise RkdError(f"query '{qid}' is not in the dataset {ds.name}/{ds.split}")
        pos, neg = _split(hits)
        if not pos:
            skipped += 1
            continue
        for d, _, _ in hits:
            if d not in docs:
                raise RkdError(f"document '{d}' is not in the corpus of {ds.name}")
        yield json.dumps({
            "query": queries[qid],
            "pos": [docs[d].joined() for d, _, _ in pos],
            "neg": [docs[d].joined() for d, _, _ in neg],
            "pos_scores": [s for _, s, _ in pos],
            "neg_scores": [s for _, s, _ in neg],
        }, ensure_ascii=False)
    _warn_skipped("flagembedding-jsonl", skipped, len(groups))


def _text_list(path: Path, lineno: int, obj: dict[str, Any], key: str) -> list[str]:
    val = obj.get(key, [])
    if not isinstance(val, list) or not all(isinstance(t, str) for t in val):
        raise DataError(path, f"field '{key}' must be a list of strings", lineno)
    return val


def _reverse(items: Iterable[tuple[str, str]], wanted: set[str]) -> dict[str, list[str]]:
    """text -> every id having it, for the texts in ``wanted`` only."""
    out: dict[str, list[str]] = {}
    for i, text in items:
        if text in wanted:
            out.setdefault(text, []).append(i)
    return out


def _resolve(path: Path, lineno: int, index: dict[str, list[str]], text: str, what: str) -> str:
    ids = index.get(text)
    if not ids:
        raise DataError(path, f"{what} text not found in the dataset: {text[:80]!r}", lineno)
    if len(ids) > 1:
        raise DataError(path, f"{what} text is ambiguous (ids {', '.join(ids[:5])}): {text[:80]!r}", lineno)
    return ids[0]


def _import_flag(path: Path, ds: Dataset) -> _Rows:
    records = []
    for lineno, obj in read_jsonl(path):
        query = require_str(path, lineno, obj, "query", required=True)
        sides = []
        for side in ("pos", "neg"):
            texts = _text_list(path, lineno, obj, side)
            scores = obj.get(f"{side}_scores", [] if not texts else None)
            if not isinstance(scores, list):
                raise DataError(path, f"field '{side}_scores' must be a list of numbers", lineno)
            if len(scores) != len(texts):
                raise DataError(path, f"'{side}' has {len(texts)} passages but '{side}_scores' "
                                      f"has {len(scores)} scores", lineno)
            sides.append([(t, _number(path, lineno, s, f"'{side}_scores' value")) for t, s in zip(texts, scores)])
        records.append((lineno, query, sides[0], sides[1]))
    q_index = _reverse(ds.queries.texts.items(), {r[1] for r in records})
    wanted = {t for r in records for side in r[2:] for t, _ in side}
    d_index = _reverse(((i, d.joined()) for i, d in ds.corpus.docs.items()), wanted)
    rows = _Rows(path)
    for lineno, query, pos, neg in records:
        qid = _resolve(path, lineno, q_index, query, "query")
        for positive, side in ((True, pos), (False, neg)):
            for text, score in side:
                rows.add(qid, _resolve(path, lineno, d_index, text, "passage"), score, lineno, positive)
    return rows


# -------------------------------------------------------------------------------------- pylate

def _pylate_rows(groups: Groups) -> Iterator[dict[str, Any]]:
    for qid, hits in groups.items():
        yield {"query_id": qid, "document_ids": [h[0] for h in hits], "scores": [h[1] for h in hits]}


def _pylate_lines(groups: Groups) -> Iterator[str]:
    return (json.dumps(r, ensure_ascii=False) for r in _pylate_rows(groups))


def _export_pylate_parquet(groups: Groups, path: Path) -> int:
    schema = pa.schema([("query_id", pa.string()), ("document_ids", pa.list_(pa.string())),
                        ("scores", pa.list_(pa.float64()))])
    table = pa.Table.from_pylist(list(_pylate_rows(groups)), schema=schema)
    with atomic_open(path) as f:
        pq.write_table(table, f)
    return table.num_rows


def _import_pylate(path: Path) -> _Rows:
    if path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            raise DataError(path, f"not a readable Parquet file ({e})") from None
        missing = {"query_id", "document_ids", "scores"} - set(table.column_names)
        if missing:
            raise DataError(path, f"missing column(s) {', '.join(sorted(missing))}")
        records: Iterable[tuple[int, dict[str, Any]]] = enumerate(table.to_pylist(), 1)
        rows = _Rows(path, unit="row")
    else:
        records, rows = read_jsonl(path), _Rows(path)
    for n, obj in records:
        where = n if rows.unit == "line" else None
        at = "" if rows.unit == "line" else f"row {n}: "
        qid = _as_id(path, where, obj.get("query_id"), f"{at}query_id")
        dids, scores = obj.get("document_ids"), obj.get("scores")
        if not isinstance(dids, list) or not isinstance(scores, list) or len(dids) != len(scores):
            raise DataError(path, f"{at}'document_ids' and 'scores' must be lists of the same length",
                            where)
        for d, s in zip(dids, scores):
            rows.add(qid, _as_id(path, where, d, f"{at}document id"), _number(path, where, s, f"{at}score"), n)
    return rows


# ---------------------------------------------------------------------------------------- trec

def _trec_lines(groups: Groups, tag: str) -> Iterator[str]:
    ws = re.compile(r"\s")
    _plain_ids([tag, *groups, *(h[0] for hits in groups.values() for h in hits)], "trec", ws)
    yield from trec_lines({qid: {did: score for did, score, _ in hits} for qid, hits in groups.items()}, tag)
