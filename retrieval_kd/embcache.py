"""A persistent, content-keyed cache of document embeddings: a corpus is encoded once per encoder.

``ROOT/<sha256 of the encoder's identity>/`` holds one encoder's document vectors. The identity
(:func:`doc_identity`: the model's location and weight sha256, backend / variant, dtype, max
length, normalisation, document prompt, dense or sparse) names the folder; in it each vector is
keyed by the sha256 of the exact text the model saw (its prompt included). Bi-encoder and SPLADE
teachers, the dense and SPLADE index encoders and the dense retrieve stage share these folders,
so a teacher, a first-stage run and several index kinds over one model encode a document once.
Queries are never cached, and neither are ColBERT token matrices.

A folder holds ``identity.json`` (for people), its ``.lock`` and append-only shards
``shard-<ns>-<pid>-<hex>/``: ``keys.npy`` (the sorted sha256 digests, ``S32``), the vectors
(dense: ``emb.npy``, float32 rows; sparse: CSR pieces ``indptr.npy`` / ``indices.npy`` /
``data.npy``) and ``shard.json`` (rows, width, every file's size and sha256 as in
:mod:`retrieval_kd.digests`). A shard is written into a temporary folder and renamed into place
under the folder's lock (:mod:`retrieval_kd.locks`), after the writer has read the shards others
added meanwhile: two processes never store a text twice, and no reader sees half a shard. A
shard is checked when first opened (sizes always, sha256 once per file state); a damaged one is
ignored with one warning line, its texts are encoded again, and the next writer removes it.
Vectors are memory-mapped, read as ``.npy`` without pickle; a failed write (a full disk) is
one warning line too, and the work goes on without the cache.

The cache changes no identity, store id, stage key or index fingerprint: it only skips
computations whose inputs are identical. A cached vector may differ from a fresh one by float
rounding noise only (it was batched with other texts, hence other padding, or on another
device), about 1e-6 at float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import numpy as np

from retrieval_kd.artifacts import read_json, save_arrays, sha256_json, write_json
from retrieval_kd.digests import FILES, file_digests, verify_files
from retrieval_kd.progress import console

Kind = Literal["dense", "sparse"]
EncodeFn = Callable[[list[str]], Any]
"""Texts -> a float32 matrix (dense) or a SciPy CSR matrix (sparse), one row per text."""
FORMAT = 1
SHARD_RECORD = "shard.json"
IDENTITY_FILE = "identity.json"
FLUSH_ROWS = 16384
"""Vectors held in memory before they are written as a shard (and texts encoded per call of ``fn``)."""
LOCK_WAIT_S = 600.0
"""A writer holds the lock only while it writes one shard: wait for it rather than fail."""
_ARRAYS = {"dense": ("keys", "emb"), "sparse": ("keys", "indptr", "indices", "data")}
_ROOT: ContextVar[Path | None] = ContextVar("rkd_embedding_cache", default=None)
_OPEN: weakref.WeakSet[EmbeddingCache] = weakref.WeakSet()


def doc_identity(kind: Kind, ref: Any, max_length: int | None, backend: dict[str, str],
                 **settings: Any) -> dict[str, Any] | None:
    """What determines a document vector, the same dict for a teacher and an index encoder of one
    model (``settings``: normalize, doc_prompt, dtype for dense ones). None (nothing is cached)
    when the weights have no sha256: a hub id not on disk has no content identity."""
    if not getattr(ref, "sha256", None):
        return None
    model = {k: v for k, v in ref.provenance().items() if k != "ref"}  # what the user typed does not count
    return {"vectors": kind, "model": model, "max_length": max_length, **settings, **backend}


def open_cache(root: str | Path | None, identity: dict[str, Any] | None, kind: Kind) -> EmbeddingCache | None:
    """The cache folder of ``identity`` under ``root`` (None when either is None); a ``root`` that
    is an existing file is one clear error, before any encoding."""
    if root is not None and Path(root).exists() and not Path(root).is_dir():
        from retrieval_kd.errors import RkdError

        raise RkdError(f"{root}: the embedding cache must be a folder, and this is a file")
    return EmbeddingCache(root, identity, kind) if root is not None and identity is not None else None


@contextlib.contextmanager
def use_root(root: str | Path | None) -> Iterator[None]:
    """Make ``root`` the :func:`current_root` for the ``with`` body (``rkd run``: its run root's)."""
    token = _ROOT.set(Path(root) if root is not None else None)
    try:
        yield
    finally:
        _ROOT.reset(token)


def current_root() -> Path | None:
    """The cache root a pipeline stage should use (None outside :func:`use_root`)."""
    return _ROOT.get()


def flush_all() -> None:
    """Write every open cache's pending vectors (the runner calls this after each stage)."""
    for cache in list(_OPEN):
        cache.flush()


class _Damaged(Exception):
    def __init__(self, what: str, remove: bool = True) -> None:
        super().__init__(what)
        self.remove = remove


class _Shard:
    """One shard, checked, its arrays memory-mapped."""

    def __init__(self, path: Path, kind: Kind, *, verify: bool = True) -> None:
        self.path = path
        names = _ARRAYS[kind]
        try:
            rec = read_json(path / SHARD_RECORD)
            files, rows, self.width = rec[FILES], int(rec["rows"]), int(rec["width"])
            fmt, rec_kind = rec.get("format"), rec.get("kind")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise _Damaged(f"{SHARD_RECORD} is missing or not readable") from None
        if fmt != FORMAT or rec_kind != kind:
            raise _Damaged(f"format {fmt} of {rec_kind} vectors, not format {FORMAT} of {kind}", remove=False)
        if not isinstance(files, dict) or set(files) != {f"{n}.npy" for n in names}:
            raise _Damaged(f"{SHARD_RECORD} does not record the shard's files")
        if verify and (problems := verify_files(path, files)):
            raise _Damaged(str(problems[0]))
        try:
            a = {n: np.load(path / f"{n}.npy", mmap_mode="r", allow_pickle=False) for n in names}
        except (OSError, ValueError) as e:
            raise _Damaged(f"unreadable array ({e})") from None
        ok = a["keys"].dtype == np.dtype("S32") and a["keys"].shape == (rows,) and rows > 0
        if kind == "dense":
            ok = ok and a["emb"].dtype == np.float32 and a["emb"].shape == (rows, self.width)
        else:
            ok = (ok and a["indptr"].shape == (rows + 1,) and a["indices"].shape == a["data"].shape
                  and a["data"].dtype == np.float32 and a["indices"].dtype == np.int32
                  and int(a["indptr"][0]) == 0 and int(a["indptr"][-1]) == len(a["data"]))
        if not ok:
            raise _Damaged("its arrays do not have the recorded shapes")
        self.keys, self.arrays = a["keys"], a

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hit mask, row) of each key."""
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[pos] == keys, pos

    def sparse_row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.arrays["indptr"][r]), int(self.arrays["indptr"][r + 1])
        return np.array(self.arrays["indices"][a:b]), np.array(self.arrays["data"][a:b])


def _digests(texts: list[str], prompt: str) -> list[bytes]:
    return [hashlib.sha256((prompt + t).encode("utf-8")).digest() for t in texts]


def _canonical(m: Any) -> Any:
    """A CSR matrix with sorted indices and no stored zeros, int32 / float32."""
    import scipy.sparse as sp

    m = sp.csr_matrix(m, dtype=np.float32)
    m.eliminate_zeros()
    m.sort_indices()
    return m


class EmbeddingCache:
    """One identity's folder of document vectors under ``root`` (see the module docstring).

    :meth:`encode` returns every text's vector, from the cache where it holds it, encoding the
    rest with ``fn``; new vectors are written as a shard every :data:`FLUSH_ROWS` and by
    :meth:`flush` / :meth:`close`. ``cached`` / ``encoded`` count texts served / encoded.
    """

    def __init__(self, root: str | Path, identity: dict[str, Any], kind: Kind, *,
                 flush_rows: int = FLUSH_ROWS) -> None:
        self.identity, self.kind, self.flush_rows = identity, kind, flush_rows
        self.folder = Path(root) / sha256_json(identity)
        self.cached = self.encoded = 0
        self._shards: list[_Shard] | None = None  # read on first use
        self._seen: set[str] = set()
        self._bad: dict[str, bool] = {}  # damaged shard -> to be removed
        self._pending: dict[bytes, Any] = {}
        self._width: int | None = None
        self._broken = False
        self._mutex = threading.RLock()
        _OPEN.add(self)

    # -- reading ----------------------------------------------------------------------------
    def _scan(self) -> list[_Shard]:
        """Open the shards not seen yet (all of them on first use)."""
        if self._shards is None:
            self._shards = []
        if not self.folder.is_dir():
            return self._shards
        for p in sorted(self.folder.glob("shard-*")):
            if p.name in self._seen or not p.is_dir():
                continue
            self._seen.add(p.name)
            try:
                self._shards.append(_Shard(p, self.kind))
            except _Damaged as e:
                console.log(f"embedding cache: {p}: {e}; ignored, its texts are encoded again")
                self._bad[p.name] = e.remove
        return self._shards

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard number or -1, row) of each key."""
        where, rows = np.full(len(keys), -1, np.int64), np.zeros(len(keys), np.int64)
        for s, shard in enumerate(self._shards or []):
            todo = np.flatnonzero(where < 0)
            if not len(todo):
                break
            hit, pos = shard.find(keys[todo])
            where[todo[hit]], rows[todo[hit]] = s, pos[hit]
        return where, rows

    def encode(self, texts: list[str], fn: EncodeFn, prompt: str = "") -> Any:
        """Vectors of ``texts`` in order (float32 rows, or a CSR matrix for sparse vectors); ``fn``
        encodes the texts the cache lacks. ``prompt``: what the model sees before each text."""
        if not texts:
            return fn(texts)
        parts = []
        for i in range(0, len(texts), self.flush_rows):
            with self._mutex:
                parts.append(self._encode(texts[i:i + self.flush_rows], fn, prompt))
                if len(self._pending) >= self.flush_rows:
                    self.flush()
        if len(parts) == 1:
            return parts[0]
        if self.kind == "dense":
            return np.concatenate(parts)
        import scipy.sparse as sp

        return sp.vstack(parts, format="csr")

    def _encode(self, texts: list[str], fn: EncodeFn, prompt: str) -> Any:
        raw = _digests(texts, prompt)
        keys = np.array(raw, dtype="S32")
        if self._shards is None:
            self._scan()
        where, rows = self._find(keys)
        missing: dict[bytes, str] = {}
        for i in np.flatnonzero(where < 0):
            if raw[i] not in self._pending:
                missing.setdefault(raw[i], texts[i])
        self.cached += len(texts) - sum(raw[i] in missing for i in range(len(texts)))
        if missing:
            fresh = fn(list(missing.values()))
            self.encoded += len(missing)
            if self.kind == "sparse":
                fresh = _canonical(fresh)
                self._width = fresh.shape[1]
                for u, k in enumerate(missing):
                    a, b = fresh.indptr[u], fresh.indptr[u + 1]
                    self._pending[k] = (fresh.indices[a:b].astype(np.int32), fresh.data[a:b].copy())
            else:
                fresh = np.asarray(fresh, dtype=np.float32)
                self._width = fresh.shape[1]
                self._pending.update((k, fresh[u].copy()) for u, k in enumerate(missing))
        shards = self._shards or []
        if self._width is None:  # nothing encoded yet (or pending): every text is in a shard
            self._width = shards[int(where[0])].width
        if self.kind == "dense":
            out = np.empty((len(texts), self._width), np.float32)
            for s in np.unique(where[where >= 0]):
                idx = np.flatnonzero(where == s)
                out[idx] = shards[s].arrays["emb"][rows[idx]]
            for i in np.flatnonzero(where < 0):
                out[i] = self._pending[raw[i]]
            return out
        pieces = [shards[s].sparse_row(int(r)) if s >= 0 else self._pending[k]
                  for s, r, k in zip(where, rows, raw)]
        return self._csr(pieces)

    def _csr(self, pieces: list[tuple[np.ndarray, np.ndarray]]) -> Any:
        import scipy.sparse as sp

        indptr = np.zeros(len(pieces) + 1, np.int64)
        np.cumsum([len(i) for i, _ in pieces], out=indptr[1:])
        indices = np.concatenate([i for i, _ in pieces]).astype(np.int32)
        data = np.concatenate([d for _, d in pieces]).astype(np.float32)
        return sp.csr_matrix((data, indices, indptr), shape=(len(pieces), self._width))

    # -- writing ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Write the pending vectors as one shard (those another process stored meanwhile are
        left out). A failure is one warning line: the cache is then only read, never written."""
        from retrieval_kd.locks import hold
        from retrieval_kd.storage import writing

        with self._mutex:
            if not self._pending or self._broken:
                self._pending.clear()
                return
            try:
                with writing(self.folder), hold(self.folder / ".lock", f"{self.folder}: another process "
                                                "is writing this embedding cache", wait=LOCK_WAIT_S):
                    self._scan()  # shards others wrote since
                    self._tidy()
                    keys = np.array(list(self._pending), dtype="S32")
                    where, _ = self._find(keys)
                    new = [k for k, s in zip(self._pending, where) if s < 0]
                    if new:
                        self._write(new)
            except Exception as e:  # a full disk, a lock held too long: the work goes on without it
                self._broken = True
                console.log(f"embedding cache {self.folder}: not written ({e}); going on without writing it")
            finally:
                self._pending.clear()

    def close(self) -> None:
        self.flush()

    def _tidy(self) -> None:
        """Under the lock: remove damaged shards and the temporary folders of killed writers."""
        for name, remove in list(self._bad.items()):
            if remove:
                shutil.rmtree(self.folder / name, ignore_errors=True)
                del self._bad[name]
        for p in self.folder.glob(".shard-*"):
            if f"-{os.getpid()}-" not in p.name:  # this process's own writer may be another cache object
                shutil.rmtree(p, ignore_errors=True)
        if not (self.folder / IDENTITY_FILE).is_file():
            write_json(self.folder / IDENTITY_FILE, {"format": FORMAT, "kind": self.kind, "identity": self.identity})

    def _write(self, new: list[bytes]) -> None:
        keys = np.array(new, dtype="S32")
        order = np.argsort(keys, kind="stable")
        rows = [self._pending[new[i]] for i in order]
        if self.kind == "dense":
            arrays = {"emb": np.stack(rows).astype(np.float32)}
            width = arrays["emb"].shape[1]
        else:
            indptr = np.zeros(len(rows) + 1, np.int64)
            np.cumsum([len(i) for i, _ in rows], out=indptr[1:])
            arrays = {"indptr": indptr, "indices": np.concatenate([i for i, _ in rows]).astype(np.int32),
                      "data": np.concatenate([d for _, d in rows]).astype(np.float32)}
            width = int(self._width)
        arrays = {"keys": keys[order], **arrays}
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp, final = self.folder / f".{name}.tmp", self.folder / name
        tmp.mkdir()
        try:
            save_arrays(tmp, arrays)
            files = file_digests(tmp, exclude=(SHARD_RECORD,), remember=False)
            write_json(tmp / SHARD_RECORD, {"format": FORMAT, "kind": self.kind, "rows": len(new),
                                            "width": width, FILES: files})
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._seen.add(name)
        assert self._shards is not None
        self._shards.append(_Shard(final, self.kind, verify=False))  # just written: no need to hash it
