"""Resumable chunked encoding: a corpus is encoded into numbered chunk folders on disk.

Each chunk (``chunk-000012/``, the documents ``[12*size, 13*size)``) holds one or more
``.npy`` arrays. A chunk is written into a temporary folder and renamed into place only
when all its arrays are on disk, so a killed encode leaves only whole chunks behind and
the next run starts at the first missing one. ``state.json`` pins what the chunks were
computed from (model, corpus, encoding parameters, chunk size): a work folder made for
anything else is discarded instead of being mixed in. Chunk boundaries are fixed by the
chunk size, so a resumed encode feeds the encoder exactly the batches an uninterrupted
one would, and its chunks are byte-identical.

Only one chunk's output is in memory at a time; readers open chunks memory-mapped.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval_kd.artifacts import read_json, sha256_json, write_json

STATE = "state.json"
EncodeFn = Callable[[list[str]], dict[str, np.ndarray]]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
        if self.root.exists():
            ok = state.is_file() and read_json(state).get("fingerprint") == self.fingerprint
            if not ok:
                self.discarded = any(self.root.iterdir())
                shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
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
            for name, arr in arrays.items():
                with open(tmp / f"{name}.npy", "wb") as f:
                    np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
            _fsync_dir(tmp)
            os.replace(tmp, self.chunk_dir(i))
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

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
    resumed = encoded = 0
    for i in range(store.n_chunks):
        lo, hi = store.bounds(i)
        if store.is_done(i):
            resumed += 1
        else:
            store.write_chunk(i, encode(list(texts[lo:hi])))
            encoded += 1
            if after_chunk:
                after_chunk(i)
        if on_progress:
            on_progress(hi - lo)
    return {"chunks": store.n_chunks, "chunks_resumed": resumed, "chunks_encoded": encoded}


def concat_to_npy(arrays: Iterator[np.ndarray], path: str | Path, rows: int, dim: int,
                  dtype: Any) -> None:
    """Stream row blocks into one ``.npy`` file (memory-mapped; nothing larger than a block in RAM)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(rows, dim))
    pos = 0
    for a in arrays:
        out[pos:pos + len(a)] = a
        pos += len(a)
    if pos != rows:
        raise ValueError(f"expected {rows} rows, wrote {pos}")
    out.flush()
    del out
