"""Arrow-backed corpora: a BEIR ``corpus.jsonl`` or a ``docid<TAB>text`` collection (MS MARCO's
``collection.tsv``) too large for Python objects, read from a memory-mapped Arrow IPC copy built
once.

The copy lives in ``$RKD_CACHE/corpora/<sha256 of the file>/`` (``corpus.arrow``: columns
``_id``, ``title``, ``text`` in file order; ``meta.json``: the source's sha256, the document count
and the corpus fingerprint, the same :attr:`Corpus.fingerprint <retrieval_kd.data.types.Corpus>`
the in-memory reader computes, so index manifests and stage keys do not change with the
reader). It is built in one streaming pass that checks every line as the in-memory reader does
(the same errors, by file and line), into a temporary folder renamed into place; a later load
finds it by the file's size and modification time (a stat stamp) without hashing the file again.

:class:`ArrowCorpus` is a :class:`~retrieval_kd.data.types.Corpus`: ``texts()`` is a lazy
sequence whose slices read only their rows (the chunked encoder takes one chunk at a time),
``docs`` a lazy mapping (an id -> row table is made on the first lookup by id). Pages of the
mapped file are the operating system's to evict, so a corpus larger than memory can be
encoded and indexed. :func:`wants_arrow`: a corpus file of at least
``$RKD_ARROW_CORPUS_MB`` MiB (default 256; 0: every corpus) is read this way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import sha256_file, sha256_records
from retrieval_kd.data.readers import read_jsonl, require_str
from retrieval_kd.data.types import Corpus, Document
from retrieval_kd.errors import DataError
from retrieval_kd.settings import cache_home

ARROW_ENV = "RKD_ARROW_CORPUS_MB"
DEFAULT_MB = 256
FORMAT = 1
"""The cache layout's version (part of the cache key)."""
DATA, META = "corpus.arrow", "meta.json"
BATCH = 65_536
"""Rows per Arrow record batch (and per read when iterating)."""


def threshold_bytes() -> int:
    raw = os.environ.get(ARROW_ENV, "")
    try:
        mb = float(raw) if raw.strip() else DEFAULT_MB
    except ValueError:
        raise DataError(Path(f"${ARROW_ENV}"), f"'{raw}' is not a size in MiB") from None
    return int(mb * 2**20)


def wants_arrow(path: str | Path) -> bool:
    """Whether the corpus file at ``path`` is read through the Arrow copy (by its size)."""
    return Path(path).stat().st_size >= threshold_bytes()


def corpora_home() -> Path:
    return cache_home() / "corpora"


def _stamp(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino]).encode()
                          ).hexdigest()[:32]


def content_key(path: Path) -> str:
    """sha256 of the file's bytes (and the layout version), remembered by its stat stamp."""
    stamps = corpora_home() / "stamps"
    stamp = stamps / _stamp(path)
    if stamp.is_file():
        return stamp.read_text().strip()
    key = hashlib.sha256(f"{FORMAT}:{sha256_file(path)}".encode()).hexdigest()
    stamps.mkdir(parents=True, exist_ok=True)
    tmp = stamps / f".{stamp.name}.tmp-{os.getpid()}"
    tmp.write_text(key)
    os.replace(tmp, stamp)
    return key


def open_arrow_corpus(path: str | Path) -> ArrowCorpus:
    """The Arrow copy of the corpus file at ``path`` (BEIR ``corpus.jsonl`` or a ``docid<TAB>text``
    ``.tsv`` collection), built first if there is none yet."""
    path = Path(path)
    folder = corpora_home() / content_key(path)[:32]
    if not (folder / META).is_file():
        build_arrow_corpus(path, folder)
    return ArrowCorpus(folder)


def build_arrow_corpus(path: Path, folder: Path) -> dict[str, Any]:
    """Write the Arrow copy of ``path`` to ``folder`` (atomically); returns its meta."""
    import pyarrow as pa

    schema = pa.schema([("_id", pa.string()), ("title", pa.string()), ("text", pa.string())])
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with pa.OSFile(str(tmp / DATA), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            n, fingerprint = _write_records(path, writer, schema)
        meta = {"format": FORMAT, "source": str(path), "source_sha256": sha256_file(path), "n_docs": n,
                "corpus_sha256": fingerprint, "pyarrow": pa.__version__}
        (tmp / META).write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process built it first: theirs is the same content
            if not (folder / META).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _jsonl_documents(path: Path) -> Iterator[tuple[int, str, str, str]]:
    """(line, id, title, text) of a BEIR ``corpus.jsonl``, fields checked as its loader does."""
    for lineno, obj in read_jsonl(path):
        did = require_str(path, lineno, obj, "_id", required=True)
        text = require_str(path, lineno, obj, "text", required=True)
        title = require_str(path, lineno, obj, "title", required=False)
        yield lineno, did, title, text


def _tsv_documents(path: Path) -> Iterator[tuple[int, str, str, str]]:
    """(line, id, "", text) of a ``docid<TAB>text`` collection (MS MARCO's ``collection.tsv``),
    as :func:`~retrieval_kd.data.trec.load_corpus_tsv` reads it."""
    from retrieval_kd.data.trec import corpus_tsv_lines

    for lineno, did, text in corpus_tsv_lines(path):
        yield lineno, did, "", text


def _write_records(path: Path, writer, schema) -> tuple[int, str]:
    """Stream ``path``'s documents (a ``.tsv`` collection or a BEIR ``.jsonl``) into ``writer`` in
    batches; (count, fingerprint). Checks as the in-memory loaders do (duplicate ids, empty
    documents)."""
    import pyarrow as pa

    seen: set[str] = set()
    cols: tuple[list[str], list[str], list[str]] = ([], [], [])
    count = [0]
    documents = _tsv_documents if path.suffix == ".tsv" else _jsonl_documents

    def flush() -> None:
        if cols[0]:
            writer.write_batch(pa.record_batch([pa.array(c, pa.string()) for c in cols], schema=schema))
            for c in cols:
                c.clear()

    def records() -> Iterator[tuple[str, str, str]]:
        for lineno, did, title, text in documents(path):
            if not did.strip():
                raise DataError(path, "empty document id", lineno)
            if did in seen:
                raise DataError(path, f"duplicate document id '{did}'", lineno)
            if not (title + text).strip():
                raise DataError(path, f"document '{did}' has empty title and text", lineno)
            seen.add(did)
            for c, v in zip(cols, (did, title, text)):
                c.append(v)
            if len(cols[0]) >= BATCH:
                flush()
            count[0] += 1
            yield did, title, text

    fingerprint = sha256_records(records())  # the in-memory Corpus's: (id, title, text) in order
    flush()
    if not count[0]:
        raise DataError(path, "no documents")
    return count[0], fingerprint


def _joined(titles: list[str], texts: list[str], sep: str) -> list[str]:
    return [f"{ti}{sep}{tx}" if ti else tx for ti, tx in zip(titles, texts)]


class ArrowTexts(Sequence[str]):
    """The corpus's passages (title ``sep`` text), read from the mapped table on access."""

    def __init__(self, table, sep: str) -> None:
        self.table, self.sep = table, sep

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, i):
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                return [self[j] for j in range(lo, hi, step)]
            part = self.table.slice(lo, max(hi - lo, 0))
            return _joined(part.column("title").to_pylist(), part.column("text").to_pylist(), self.sep)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        return self[i % n:i % n + 1][0]

    def __iter__(self) -> Iterator[str]:
        for lo in range(0, len(self), BATCH):
            yield from self[lo:lo + BATCH]


class ArrowDocs(Mapping[str, Document]):
    """id -> :class:`Document` over the mapped table; the id -> row table is built on first use."""

    def __init__(self, table) -> None:
        self.table = table
        self._rows: dict[str, int] | None = None

    def _index(self) -> dict[str, int]:
        if self._rows is None:
            self._rows = {d: r for r, d in enumerate(self.table.column("_id").to_pylist())}
        return self._rows

    def row(self, r: int) -> Document:
        part = self.table.slice(r, 1)
        return Document(text=part.column("text")[0].as_py(), title=part.column("title")[0].as_py())

    def __getitem__(self, did: str) -> Document:
        return self.row(self._index()[did])

    def __contains__(self, did: object) -> bool:
        return did in self._index()

    def __len__(self) -> int:
        return self.table.num_rows

    def __iter__(self) -> Iterator[str]:
        for lo in range(0, len(self), BATCH):
            yield from self.table.slice(lo, BATCH).column("_id").to_pylist()

    def items(self) -> Iterator[tuple[str, Document]]:  # type: ignore[override] - streamed
        for lo in range(0, len(self), BATCH):
            part = self.table.slice(lo, BATCH)
            for did, title, text in zip(*(part.column(c).to_pylist() for c in ("_id", "title", "text"))):
                yield did, Document(text=text, title=title)

    def values(self) -> Iterator[Document]:  # type: ignore[override]
        return (d for _, d in self.items())


class ArrowCorpus(Corpus):
    """A :class:`Corpus` read from an Arrow copy (see the module doc); pickles as its folder."""

    def __init__(self, folder: str | Path) -> None:  # noqa: D107 - a Corpus without its dict
        import pyarrow as pa

        self.folder = Path(folder)
        self.meta = json.loads((self.folder / META).read_text())
        self.table = pa.ipc.open_file(pa.memory_map(str(self.folder / DATA), "r")).read_all()
        if self.table.num_rows != self.meta["n_docs"]:
            raise DataError(self.folder / DATA, f"holds {self.table.num_rows:,} documents, its meta "
                                                f"{self.meta['n_docs']:,}: delete the folder to rebuild it")
        self.docs = ArrowDocs(self.table)  # type: ignore[assignment]
        self.__dict__["fingerprint"] = self.meta["corpus_sha256"]  # the cached_property's value

    def __reduce__(self):
        return (ArrowCorpus, (str(self.folder),))

    def __repr__(self) -> str:
        return f"ArrowCorpus({self.folder}, {len(self):,} documents)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Corpus) and len(other) == len(self) and other.fingerprint == self.fingerprint

    __hash__ = None  # type: ignore[assignment] - as the dataclass

    def __len__(self) -> int:
        return self.table.num_rows

    def ids(self) -> list[str]:
        return self.table.column("_id").to_pylist()

    def texts(self, sep: str = " ") -> ArrowTexts:  # type: ignore[override] - a lazy sequence
        return ArrowTexts(self.table, sep)

    def absent(self, ids: Iterable[str]) -> set[str]:
        import pyarrow as pa
        import pyarrow.compute as pc

        want = set(ids)
        if not want:
            return set()
        col = self.table.column("_id")
        present = pc.filter(col, pc.is_in(col, value_set=pa.array(sorted(want), pa.string())))
        return want - set(present.to_pylist())
