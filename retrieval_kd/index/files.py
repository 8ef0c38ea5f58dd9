"""Reading an index's files so that a damaged one is one error line naming it, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from retrieval_kd.errors import IntegrityError


def damaged(path: str | Path, problem: str) -> IntegrityError:
    """The one-line error for an index file that cannot be what its index needs."""
    return IntegrityError(f"{path}: {problem}; the index is damaged: rebuild it")


def read_npy(path: str | Path, mmap: bool = True) -> np.ndarray:
    """``np.load`` (memory-mapped by default, never pickles) with damage reported as one line."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise damaged(path, "missing") from None
    except (ValueError, OSError, EOFError) as e:
        raise damaged(path, f"not a readable .npy array ({_first_line(e)})") from None


def read_doc_ids(path: str | Path) -> list[str]:
    """The document ids of an index: a JSON list of distinct strings."""
    try:
        ids: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise damaged(path, "missing") from None
    except (ValueError, OSError) as e:  # truncated, bad bytes
        raise damaged(path, f"not a readable JSON id list ({_first_line(e)})") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise damaged(path, "not a JSON list of document ids")
    if len(set(ids)) != len(ids):
        raise damaged(path, "a document id appears twice")
    return ids


def expect_count(path: str | Path, got: int, want: int, what: str) -> None:
    """Raise when a file holds ``got`` entries where its index needs ``want``."""
    if got != want:
        raise damaged(path, f"holds {got:,} {what}, the index needs {want:,}")


def _first_line(e: BaseException) -> str:
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    return lines[-1][:200] if lines else type(e).__name__
