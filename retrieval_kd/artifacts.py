"""Artifact conventions shared by every stage.

Every output is written under a temporary name and renamed into place only when
complete, so a killed process never leaves a half-written artifact behind. Every
output directory carries a ``manifest.json`` recording the inputs' fingerprints,
the parameters, library versions and timings.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from retrieval_kd.cpu import faiss_blas_core

MANIFEST = "manifest.json"
_TRACKED_LIBRARIES = (
    "retrieval-kd", "torch", "sentence-transformers", "transformers", "faiss-cpu", "faiss-gpu", "faiss-gpu-cu12",
    "ranx", "bm25s", "PyStemmer", "pyarrow", "numpy", "ir_datasets", "pyserini", "onnxruntime", "openvino",
)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_records(records: Iterable[Iterable[str]]) -> str:
    """Order-sensitive sha256 of string tuples (fields and records are delimited unambiguously)."""
    h = hashlib.sha256()
    for rec in records:
        for field in rec:
            b = field.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        h.update(b"\x1e")
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """sha256 of the canonical JSON form of ``obj`` (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _tmp_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` (flushed, fsynced, renamed) only once the ``with``
    block completes; on any exception the temporary file is removed and ``path`` left as it was."""
    path = Path(path)
    tmp = _tmp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text variant of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (a rename into it) to disk; a no-op where the filesystem
    cannot open or sync directories."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_arrays(folder: str | Path, arrays: dict[str, Any]) -> None:
    """Each array as ``folder/<name>.npy`` (no pickle), flushed and fsynced before returning."""
    import numpy as np

    for name, arr in arrays.items():
        with open(Path(folder) / f"{name}.npy", "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON object file's content; ``{}`` where the file is missing, unreadable, not JSON or
    not an object (for records that are only a cache, rewritten whole on the next write)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``final`` only if the block succeeds.

    On any exception the temporary directory is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def library_versions() -> dict[str, str]:
    """Versions of the libraries that can change an artifact's content."""
    out = {"python": platform.python_version()}
    for name in _TRACKED_LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    core = faiss_blas_core()
    if core:  # faiss's matrix products round alike only on the same kernels (retrieval_kd/cpu.py)
        out["faiss_openblas_core"] = core
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def manifest(
    kind: str,
    *,
    inputs: dict[str, Any],
    params: dict[str, Any],
    timings: dict[str, float] | None = None,
    outputs: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build the manifest record every artifact directory carries."""
    return {
        "kind": kind,
        "created": now_iso(),
        "inputs": inputs,
        "params": params,
        "outputs": outputs or {},
        "timings_s": {k: round(v, 3) for k, v in (timings or {}).items()},
        "versions": library_versions(),
        **extra,
    }


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    p = Path(directory) / MANIFEST
    return read_json(p) if p.is_file() else None


@contextlib.contextmanager
def exclusive_lock(folder: Path, busy: str, *, wait: float | None = None) -> Iterator[None]:
    """Hold ``folder/.lock`` (created with the folder) for the ``with`` body: the one lock of
    :mod:`retrieval_kd.locks`. A second holder waits up to ``wait`` seconds (default
    ``$RKD_LOCK_WAIT``, 0) and then fails with ``busy`` and who holds the lock as its one line."""
    from retrieval_kd.locks import hold

    folder.mkdir(parents=True, exist_ok=True)
    with hold(folder / ".lock", busy, wait=wait):
        yield



def write_benchmark(out: Path, result: dict[str, Any], markdown: Callable[[dict[str, Any]], str],
                    note: str | None = None) -> str:
    """A benchmark's record: ``result`` with the library versions and ``note``, as ``out``.json and
    its ``markdown`` table as ``out``.md (each written atomically); returns the table."""
    result["versions"] = library_versions()
    result["notes"] = note
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), result)
    table = markdown(result)
    atomic_write_text(out.with_suffix(".md"), table)
    return table
