"""Resumable chunked encoding: a corpus is encoded into numbered chunk folders on disk.

Each chunk (``chunk-000012/``, the documents ``[12*size, 13*size)``) holds one or more
``.npy`` arrays. A chunk is written into a temporary folder and renamed into place only
when all its arrays are on disk, so a killed encode leaves only whole chunks behind and
the next run starts at the first missing one. ``state.json`` pins what the chunks were
computed from (model, corpus, encoding parameters, chunk size): a work folder made for
anything else is emptied instead of being mixed in. Only a folder this tool made is ever
used or emptied (:mod:`retrieval_kd.workdirs`): any other folder at the work path is refused. Chunk boundaries are fixed by the
chunk size, so a resumed encode feeds the encoder exactly the batches an uninterrupted
one would, and its chunks are byte-identical. Each chunk records its arrays' sizes and
sha256 (``files.json``); a resumed encode checks them and encodes a damaged chunk again.

Only one chunk's output is in memory at a time; readers open chunks memory-mapped.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval_kd.artifacts import fsync_dir, read_json, save_arrays, sha256_json, write_json
from retrieval_kd.digests import FILES, file_digests, verify_files
from retrieval_kd.progress import console
from retrieval_kd.workdirs import MARKER, claim, clear, only_names

STATE = "state.json"
CHUNK_FILES = "files.json"
"""Each chunk's file sizes and sha256, checked before a resumed build reuses the chunk."""
EncodeFn = Callable[[list[str]], dict[str, np.ndarray]]
_LEGACY = re.compile(r"^(state\.json|chunk-\d{6}|\.chunk-.*|\.state\.json\.tmp-.*)$")


def _legacy_work(path: Path) -> bool:
    """A chunk folder written before work folders were marked: state.json and chunks only."""
    return (path / STATE).is_file() and only_names(path, lambda n: bool(_LEGACY.match(n)))


class ChunkStore:
    """Numbered chunks of arrays under ``root``, valid for one ``spec`` and item count."""

    def __init__(self, root: str | Path, spec: dict[str, Any], n_items: int, chunk_size: int) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.root = Path(root)
        self.spec, self.n_items, self.chunk_size = spec, n_items, chunk_size
        self.fingerprint = sha256_json({"spec": spec, "n_items": n_items, "chunk_size": chunk_size})
        self.discarded = False
        """True when an existing work folder was for different inputs and was wiped."""
        self._open()

    # -- layout -----------------------------------------------------------------------------
    @property
    def n_chunks(self) -> int:
        return -(-self.n_items // self.chunk_size)

    def chunk_dir(self, i: int) -> Path:
        return self.root / f"chunk-{i:06d}"

    def bounds(self, i: int) -> tuple[int, int]:
        return i * self.chunk_size, min((i + 1) * self.chunk_size, self.n_items)

    def _open(self) -> None:
        state = self.root / STATE
        claim(self.root, "encoded-chunk", legacy=_legacy_work, option="--work-dir")  # never a user's folder
        try:
            ok = state.is_file() and read_json(state).get("fingerprint") == self.fingerprint
        except (OSError, ValueError, AttributeError):
            ok = False
        if not ok:
            self.discarded = any(p.name != MARKER for p in self.root.iterdir())
            clear(self.root)
        for stale in self.root.glob(".chunk-*"):  # temporary folders of a killed writer
            shutil.rmtree(stale, ignore_errors=True)
        if not state.is_file():
            write_json(state, {"fingerprint": self.fingerprint, "n_items": self.n_items,
                               "chunk_size": self.chunk_size, "spec": self.spec})

    # -- state --------------------------------------------------------------------------------
    def is_done(self, i: int) -> bool:
        return self.chunk_dir(i).is_dir()

    def done_chunks(self) -> list[int]:
        return [i for i in range(self.n_chunks) if self.is_done(i)]

    @property
    def complete(self) -> bool:
        return all(self.is_done(i) for i in range(self.n_chunks))

    # -- writing ------------------------------------------------------------------------------
    def write_chunk(self, i: int, arrays: dict[str, np.ndarray]) -> None:
        """Write chunk ``i`` atomically (temporary folder, fsync, rename)."""
        tmp = self.root / f".chunk-{i:06d}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            save_arrays(tmp, arrays)
            write_json(tmp / CHUNK_FILES, {FILES: file_digests(tmp, remember=False)})
            fsync_dir(tmp)
            os.replace(tmp, self.chunk_dir(i))
            fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def damage(self, i: int) -> str | None:
        """What is wrong with finished chunk ``i`` (None: its files match their recorded sha256;
        a chunk written before digests were recorded is trusted as it was)."""
        d = self.chunk_dir(i)
        if not (d / CHUNK_FILES).is_file():
            return None
        try:
            recorded = read_json(d / CHUNK_FILES)[FILES]
        except (OSError, ValueError, KeyError, TypeError):
            return f"{CHUNK_FILES}: not readable"
        problems = verify_files(d, recorded, use_cache=False, remember=False)
        return str(problems[0]) if problems else None

    # -- reading ------------------------------------------------------------------------------
    def load(self, i: int, name: str, mmap: bool = True) -> np.ndarray:
        return np.load(self.chunk_dir(i) / f"{name}.npy", mmap_mode="r" if mmap else None,
                       allow_pickle=False)

    def iter_arrays(self, name: str, mmap: bool = True) -> Iterator[np.ndarray]:
        for i in range(self.n_chunks):
            yield self.load(i, name, mmap)

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*.npy"))


def encode_chunked(store: ChunkStore, texts: Sequence[str], encode: EncodeFn,
                   on_progress: Callable[[int], None] | None = None,
                   after_chunk: Callable[[int], None] | None = None) -> dict[str, int]:
    """Encode every missing chunk of ``texts`` into ``store``; return what was resumed/encoded.

    ``encode`` maps a list of texts to named arrays (one chunk's worth). Finished chunks are
    skipped (their documents are reported to ``on_progress`` at once).
    """
    if len(texts) != store.n_items:
        raise ValueError(f"store holds {store.n_items} items, got {len(texts)} texts")
    resumed = encoded = redone = 0
    for i in range(store.n_chunks):
        lo, hi = store.bounds(i)
        damage = store.damage(i) if store.is_done(i) else None
        if damage:  # a damaged chunk is encoded again, never read into an index
            console.log(f"{store.chunk_dir(i)}: {damage}; encoding it again")
            shutil.rmtree(store.chunk_dir(i))
            redone += 1
        if store.is_done(i):
            resumed += 1
        else:
            store.write_chunk(i, encode(list(texts[lo:hi])))
            encoded += 1
            if after_chunk:
                after_chunk(i)
        if on_progress:
            on_progress(hi - lo)
    info = {"chunks": store.n_chunks, "chunks_resumed": resumed, "chunks_encoded": encoded}
    return {**info, "chunks_damaged": redone} if redone else info


def concat_to_npy(arrays: Iterator[np.ndarray], path: str | Path, rows: int, dim: int,
                  dtype: Any) -> None:
    """Stream row blocks into one ``.npy`` file (memory-mapped; nothing larger than a block in RAM).

    The file's blocks are allocated first: on a full disk that fails as an ``OSError`` (ENOSPC)
    instead of a SIGBUS when a page of the mapping is written."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(rows, dim))
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):  # no fallocate there
                del out
                raise
    pos = 0
    for a in arrays:
        out[pos:pos + len(a)] = a
        pos += len(a)
    if pos != rows:
        raise ValueError(f"expected {rows} rows, wrote {pos}")
    out.flush()
    del out
