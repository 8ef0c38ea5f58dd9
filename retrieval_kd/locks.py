"""One writer per output: file locks that say who holds them.

A lock is a small file (``.NAME.lock`` beside the output it guards, or ``FOLDER/.lock``)
held with ``flock``. The holder writes its pid, host, command line and start time into it,
so a second process can say who is in its way; it either fails at once with that line or,
given a wait (``--lock-wait`` / ``$RKD_LOCK_WAIT`` seconds), polls until the lock is free.

A process that dies, even by SIGKILL, releases its ``flock`` in the kernel: the file it
leaves behind still names it, and the next process takes the lock over (and says so). One
exception: a child forked by the holder (a data-loader worker) inherits the lock and holds
it until it exits too; the busy line then says the recorded holder is no longer running.
On release the file is removed; a process that waited on the removed file notices (its
descriptor no longer names the path) and tries again, so two holders never overlap.

Locks are re-entrant within a process, threads included (a pipeline runner holding a lock
its stage takes again); they exclude other processes only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from retrieval_kd.errors import RkdError

WAIT_ENV = "RKD_LOCK_WAIT"
_POLL_S = 0.2
_held: dict[str, int] = {}
_held_guard = threading.Lock()


class LockedError(RkdError):
    """Another process holds the lock of an output this one wants to write."""


def default_wait() -> float:
    """Seconds to wait for a busy lock: ``$RKD_LOCK_WAIT`` (default 0: fail at once)."""
    try:
        return max(float(os.environ.get(WAIT_ENV, "0") or 0), 0.0)
    except ValueError:
        raise RkdError(f"${WAIT_ENV} must be a number of seconds, got {os.environ[WAIT_ENV]!r}") from None


def lock_file_for(target: Path) -> Path:
    """The lock guarding ``target`` (a file or folder): ``.NAME.lock`` beside it."""
    return target.parent / f".{target.name}.lock"


def _me() -> dict[str, Any]:
    from retrieval_kd.artifacts import now_iso

    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []
    cmd = " ".join(argv)
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso(),
            "command": cmd if len(cmd) <= 200 else cmd[:197] + "..."}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def read_holder(path: Path) -> dict[str, Any] | None:
    """The holder record in a lock file (None when absent or unreadable)."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("pid"), int) else None


def _who(rec: dict[str, Any]) -> str:
    return f"pid {rec['pid']} on {rec.get('host', '?')} since {rec.get('started', '?')}"


def describe_holder(rec: dict[str, Any] | None) -> str:
    """``pid 123 on host since T (rkd index dense ...)``, or why that is not known."""
    if not rec:
        return "another process (it has not recorded itself)"
    text = _who(rec)
    if rec.get("command"):
        text += f" ({rec['command']})"
    if rec.get("host") == socket.gethostname() and not _alive(rec["pid"]):
        text += ", no longer running: a child process it started still holds the lock"
    return text


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding ``path`` exclusively, or None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # its holder removed the file on release: lock the path's new file


@contextlib.contextmanager
def hold(path: str | Path, busy: str, *, wait: float | None = None) -> Iterator[None]:
    """Hold the lock file ``path`` for the ``with`` body.

    When another process holds it: wait up to ``wait`` seconds (default
    :func:`default_wait`), then raise :class:`LockedError` (``busy``, then who holds it).
    """
    from retrieval_kd.progress import console

    path = Path(path).absolute()
    key = str(path)
    with _held_guard:
        if _held.get(key):
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    wait = default_wait() if wait is None else max(wait, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline, told = time.monotonic() + wait, False
    while (fd := _try_lock(path)) is None:
        holder = describe_holder(read_holder(path))
        if time.monotonic() >= deadline:
            waited = f" after waiting {wait:g}s" if wait else ""
            hint = "" if wait else f"; to wait for it: rkd --lock-wait SECONDS ... (or ${WAIT_ENV})"
            raise LockedError(f"{busy}: locked by {holder}{waited}{hint}")
        if not told:
            console.log(f"{busy}: waiting up to {wait:g}s for {holder}")
            told = True
        time.sleep(min(_POLL_S, max(deadline - time.monotonic(), 0.01)))
    try:
        stale = read_holder(path)
        if stale and stale["pid"] != os.getpid():
            console.log(f"{path}: taking over the lock left by {_who(stale)}, which ended without "
                        "releasing it")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(_me()) + "\n").encode("utf-8"), 0)
        except OSError:  # a full disk: the lock holds all the same, only unsigned
            pass
        with _held_guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _held_guard:
                _held.pop(key, None)
            with contextlib.suppress(OSError):
                path.unlink()  # while still held: a waiter on this file sees it go and retries
    finally:
        os.close(fd)


def clear_stale(path: str | Path) -> None:
    """Remove the lock file ``path`` if a process that ended left it behind (no one holds it):
    for readers that need no lock but should not leave a dead writer's lock lying around."""
    path = Path(path)
    if not path.is_file():
        return
    with contextlib.suppress(OSError):
        fd = _try_lock(path)
        if fd is not None:
            try:
                path.unlink()  # while held, as on release: a waiter on this file retries
            finally:
                os.close(fd)


def output_lock(target: str | Path, busy: str, *, wait: float | None = None):
    """:func:`hold` the lock beside ``target`` (``.NAME.lock``): one writer of ``target``."""
    target = Path(target)
    return hold(lock_file_for(target), busy, wait=wait)
