"""The ``rkd`` command line, killed with SIGKILL at a chosen file-system event (for the fault trials
of ``tests/test_faults.py``).

``python -m tests.kill_hook POINT LOG rkd-args...`` runs ``rkd rkd-args...`` (the real command line,
in this process) with an audit hook (:func:`sys.addaudithook`) that watches the Python-level file
operations: ``open`` for writing, ``os.rename`` (``os.replace`` too), ``os.remove``, ``os.rmdir``,
``os.mkdir``, ``shutil.rmtree``. ``POINT`` is ``EVENT~REGEX~N[~after]``: at the ``N``-th event
``EVENT`` whose path (for a rename: ``src -> dst``) matches ``REGEX`` the process sends itself
SIGKILL, before the operation, or with ``~after`` at the next watched event, once the operation is
done. Events are counted in order, so a point is hit at the same place on every run: the trials are
deterministic and cost no polling. The hit (event, path, how many events so far) is appended to
``LOG`` as one JSON line before the kill; ``POINT`` ``log`` instead records every watched event
(with its time since start), to choose points from.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import signal
import sys
import threading
import time

WATCHED = ("open", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _path(event: str, args: tuple) -> str | None:
    """The path an event is about (None: not a watched write)."""
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int):
            return None
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
        return os.fsdecode(path) if writes else None
    if event == "os.rename":
        return f"{os.fsdecode(args[0])} -> {os.fsdecode(args[1])}"
    return os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else None


def install(point: str, log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    t0 = time.monotonic()
    lock = threading.Lock()
    state = {"seen": 0, "matched": 0, "armed": None, "busy": False}
    logging = point == "log"
    if not logging:
        parts = point.split("~")
        want_event, pattern, nth = parts[0], re.compile(parts[1]), int(parts[2])
        after = len(parts) > 3 and parts[3] == "after"

    def die(record: dict) -> None:
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.kill(os.getpid(), signal.SIGKILL)

    def hook(event: str, args: tuple) -> None:
        if event not in WATCHED or state["busy"]:
            return
        try:
            path = _path(event, args)
        except Exception:  # noqa: BLE001 - an odd argument: not ours to judge
            return
        if path is None:
            return
        with lock:
            state["busy"] = True
            try:
                state["seen"] += 1
                if logging:
                    os.write(fd, (json.dumps({"t": round(time.monotonic() - t0, 3), "event": event,
                                              "path": path}) + "\n").encode())
                    return
                if state["armed"] is not None:
                    die(state["armed"])
                if event == want_event and pattern.search(path):
                    state["matched"] += 1
                    if state["matched"] == nth:
                        record = {"point": point, "event": event, "path": path, "events": state["seen"],
                                  "t": round(time.monotonic() - t0, 3)}
                        if after:
                            state["armed"] = record
                        else:
                            die(record)
            finally:
                state["busy"] = False

    sys.addaudithook(hook)


def main() -> None:
    point, log, *args = sys.argv[1:]
    install(point, log)
    sys.argv = ["rkd", *args]
    runpy.run_module("retrieval_kd.cli.main", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
