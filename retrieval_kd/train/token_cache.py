"""The corpus token stage's target table, built once per pipeline run for every seed.

Each seed of a ColBERT token stage (``embed_on: corpus``) learns the same table: the teacher's
token vectors of the corpus in their principal axes (:mod:`retrieval_kd.train.token_embed`).
Encoding the corpus token by token with the teacher costs about as much as the training itself,
so the table is kept beside the run's embedding cache (:func:`retrieval_kd.embcache.current_root`):
``ROOT/tokens/<key>/`` holds ``lengths.npy`` (int32, tokens per text), ``targets.npy`` (float16,
``texts x max_length x width``, zero padded) and ``record.json`` (what the key covers, the table's
record, every file's size and sha256). The key is the sha256 of the teacher's identity, the texts'
fingerprint, the width and the max length; a hit returns exactly the arrays that were built, so
the cache changes no stage key and no value. A table is written whole into a temporary folder and
renamed into place, under a lock (a second builder waits, then reads it); the builder's spill
files (:mod:`retrieval_kd.train.token_spill`) live in a scratch folder beside it; one that fails its check
is built again (one warning line) and replaced, and a killed builder's temporary folder is removed.
Outside a pipeline (no root) nothing is kept.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrieval_kd.artifacts import atomic_dir, read_json, save_arrays, sha256_json, write_json
from retrieval_kd.digests import file_digests, recorded_files, verify_files
from retrieval_kd.embcache import LOCK_WAIT_S
from retrieval_kd.locks import output_lock
from retrieval_kd.progress import console
from retrieval_kd.workdirs import clean_stale_temps

FORMAT = 1
RECORD = "record.json"
TOKENS_DIR = "tokens"


@dataclass
class TokenTable:
    """Token targets of every text: ``targets[i, :lengths[i]]`` are text ``i``'s."""

    lengths: np.ndarray
    targets: np.ndarray
    record: dict[str, Any]
    """What the run's manifest keeps of the targets (teacher identity, widths, token count)."""


def _load(folder: Path, key: dict[str, Any]) -> TokenTable | None:
    try:
        rec = read_json(folder / RECORD)
        if rec.get("key") != key:
            raise ValueError("its record names other inputs")
        problems = verify_files(folder, recorded_files(rec))
        if problems:
            raise ValueError("; ".join(str(p) for p in problems))
        lengths = np.load(folder / "lengths.npy", allow_pickle=False)
        targets = np.load(folder / "targets.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        console.log(f"[yellow]warning:[/] {folder}: token targets unreadable ({e}); building them again")
        return None
    return TokenTable(lengths, targets, rec["table"])


def cached_table(root: Path | None, key: dict[str, Any], build: Callable[[Path | None], TokenTable]
                 ) -> TokenTable:
    """The table for ``key`` from ``root/tokens/``, else ``build(scratch)`` (stored there when
    ``root``). ``scratch``: a temporary folder beside the table for the builder's spill files
    (removed afterwards, and by the next builder if this one is killed); None without a root."""
    if root is None:
        return build(None)
    key = {"format": FORMAT, **key}
    folder = Path(root) / TOKENS_DIR / sha256_json(key)[:32]
    folder.parent.mkdir(parents=True, exist_ok=True)
    # one builder per table: a second process waits for it, then reads what it wrote
    with output_lock(folder, f"{folder}: another process is building these token targets", wait=LOCK_WAIT_S):
        if folder.is_dir() and (hit := _load(folder, key)) is not None:
            return hit
        clean_stale_temps(folder)  # a killed builder's half-written folder or scratch
        scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-scratch-", dir=folder.parent))
        try:
            table = build(scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        try:
            with atomic_dir(folder) as tmp:
                save_arrays(tmp, {"lengths": table.lengths.astype(np.int32), "targets": table.targets})
                write_json(tmp / RECORD, {"key": key, "table": table.record, "files": file_digests(tmp)})
        except OSError as e:  # a full disk: the stage goes on without the cache
            console.log(f"[yellow]warning:[/] could not keep the token targets in {folder}: {e}")
    return table
