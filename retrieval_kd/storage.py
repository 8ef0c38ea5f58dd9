"""Failed file-system operations as one error line: the path, the cause, and for a full disk
the space left on it and (where known) the space the work needs.

Libraries report a full disk in their own ways: an ``OSError`` with ``errno`` ENOSPC (Python,
Arrow), numpy's ``OSError('N requested and M written')`` without an errno, a ``RuntimeError``
from faiss quoting the C library's message, torch's ``file write failed`` or ``unexpected pos``,
safetensors' ``IoError(... StorageFull)``.
:func:`describe` recognises them all; :func:`writing` turns them into :class:`StorageError`
(an ``RkdError``: the CLI prints it as one line) naming the folder being written, and the
CLI's error printer calls :func:`describe` for any such error that reaches it.

Nothing is cleaned up here: every stage writes whole files under temporary names, so what
was finished before the failure stays, and the same command run again after freeing space
continues from it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from retrieval_kd.errors import RkdError

Need = int | Callable[[], int | None] | None

_FULL = re.compile(r"no space left on device|disk quota exceeded|StorageFull|errno:? 28\b", re.I)
_TOO_LARGE = re.compile(r"file too large|FileTooLarge|errno:? 27\b", re.I)
_SHORT = re.compile(r"\d+ requested and \d+ written|file write failed|failed writing file|write error|"
                    r"inline_container.*unexpected pos \d+ vs \d+", re.I)  # torch.save cut short
_AGAIN = "free space and run the same command again: finished work is kept"


class StorageError(RkdError):
    """A read or write the file system refused (full, too large, not permitted, ...)."""


def human(n: float) -> str:
    """Bytes as ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def free_bytes(path: str | Path) -> int | None:
    """Free space (for this user) on the file system holding ``path`` or its nearest parent."""
    p = Path(path).absolute()
    for q in (p, *p.parents):
        with contextlib.suppress(OSError):
            if q.exists():
                return shutil.disk_usage(q).free
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _cause(exc: BaseException) -> tuple[str, OSError | None] | None:
    """('full' | 'too large' | 'short write' | 'os', the OSError if any), or None if no file error."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return "full", e
        if isinstance(e, OSError) and e.errno == errno.EFBIG:
            return "too large", e
    for e in _chain(exc):
        text = str(e)
        if _FULL.search(text):
            return "full", e if isinstance(e, OSError) else None
        if _TOO_LARGE.search(text):
            return "too large", e if isinstance(e, OSError) else None
        if _SHORT.search(text) and isinstance(e, (OSError, RuntimeError)):
            return "short write", e if isinstance(e, OSError) else None
    for e in _chain(exc):
        if _file_error(e):
            return "os", e
    return None


_FS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO, errno.ENOENT, errno.ENOTDIR,
                        errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY, errno.EMFILE, errno.ENFILE, errno.EXDEV,
                        errno.ENAMETOOLONG, errno.ELOOP, errno.EBUSY, errno.ESTALE, errno.ETXTBSY})


def _file_error(e: BaseException) -> bool:
    """An OSError from the file system (not a network error, which is an OSError too)."""
    if not isinstance(e, OSError) or isinstance(e, (ConnectionError, TimeoutError)):
        return False
    return bool(e.filename) or e.errno in _FS_ERRNOS


def _need(need: Need) -> int | None:
    try:
        return need() if callable(need) else need
    except Exception:  # an estimate must never hide the real error
        return None


def describe(exc: BaseException, path: str | Path | None = None, need: Need = None) -> str | None:
    """One line for a file-system failure (None when ``exc`` is not one).

    ``path``: what was being written when the error does not name a file itself; ``need``:
    bytes the work still needs (or a function computing them), when that can be estimated.
    """
    found = _cause(exc)
    if found is None:
        return None
    kind, os_err = found
    named = os_err.filename if os_err is not None and os_err.filename else None
    where = str(named or path or "")
    prefix = f"{where}: " if where else ""
    free = free_bytes(where) if where else None
    space = f"{human(free)} free there now" if free is not None else "free space unknown"
    if kind == "full":
        n = _need(need)
        extra = f", about {human(n)} still to write" if n else ""
        return f"{prefix}no space left on the device ({space}{extra}); {_AGAIN}"
    if kind == "too large":
        return (f"{prefix}file too large for the file system or the file size limit (ulimit -f) "
                f"({space}); {_AGAIN}")
    if kind == "short write":
        return f"{prefix}a write was cut short (disk full?) ({space}); {_AGAIN}"
    assert os_err is not None
    reason = os_err.strerror or str(os_err)
    other = f" -> {os_err.filename2}" if os_err.filename2 else ""
    return f"{prefix}{reason[:1].lower()}{reason[1:]}{other}"


@contextlib.contextmanager
def writing(path: str | Path, need: Need = None) -> Iterator[None]:
    """Turn a file-system failure inside the block into a one-line :class:`StorageError` that
    names ``path`` (unless the error names its own file). Other errors pass unchanged."""
    try:
        yield
    except RkdError:
        raise
    except Exception as e:
        line = describe(e, path, need)
        if line is None:
            raise
        raise StorageError(line) from e


def is_storage_failure(exc: BaseException) -> bool:
    """True for the errors :func:`describe` explains."""
    return _cause(exc) is not None


def dir_bytes(path: str | Path) -> int:
    """Bytes of the files under ``path`` (0 if it is missing)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total
