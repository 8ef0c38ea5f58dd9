"""Token vectors kept on disk while a token table is built, so memory holds one text's at a time.

Building the corpus token targets (:mod:`retrieval_kd.train.token_embed`) takes two passes over
every text's teacher token vectors (principal axes, then the projection): about 1 GB of float32
for SciFact's 5,183 abstracts at 128 tokens and 384 dimensions. :class:`TokenSpill` appends each
text's vectors to a file in a scratch folder as the teacher produces them and reads them back by
number (``pread``: the page cache holds them, not the process's heap), so the values read are
exactly those written. Without a folder it keeps them in memory (a stage outside a pipeline).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class TokenSpill:
    """Float32 row blocks of one width, appended and read back by number."""

    def __init__(self, folder: Path | None = None) -> None:
        self._fd = os.open(folder / "tokens.f32", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600) if folder else None
        self._held: list[np.ndarray] = []
        self._where: list[tuple[int, int]] = []  # (byte offset, rows) of each block in the file
        self._end = 0
        self.dim: int | None = None

    def add(self, rows: np.ndarray) -> int:
        """Keep ``rows`` (``(n, dim)`` float32) and return its number."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if self.dim is None:
            self.dim = int(rows.shape[1])
        elif rows.shape[1] != self.dim:
            raise ValueError(f"a block of width {rows.shape[1]} in a spill of width {self.dim}")
        if self._fd is None:
            self._held.append(rows)
            return len(self._held) - 1
        data = rows.tobytes()
        if os.pwrite(self._fd, data, self._end) != len(data):
            raise OSError(f"short write to the token spill file (block {len(self._where)})")
        self._where.append((self._end, len(rows)))
        self._end += len(data)
        return len(self._where) - 1

    def rows(self, i: int) -> int:
        return len(self._held[i]) if self._fd is None else self._where[i][1]

    def get(self, i: int) -> np.ndarray:
        """Block ``i``, as it was added."""
        if self._fd is None:
            return self._held[i]
        off, n = self._where[i]
        size = n * 4 * (self.dim or 0)
        data = os.pread(self._fd, size, off)
        if len(data) != size:
            raise OSError(f"the token spill file is shorter than its block {i}")
        return np.frombuffer(data, dtype=np.float32).reshape(n, self.dim or 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._held.clear()

    def __enter__(self) -> TokenSpill:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
