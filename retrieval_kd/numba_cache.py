"""Numba's on-disk kernel cache, a new one per run (ranx's metrics and normalisers are numba kernels).

ranx compiles its kernels with ``cache=True``, one specialisation per id width and value type,
into a cache that later processes reuse. Kernels loaded from a cache an earlier install had left,
beside others compiled in the process, made ranx hold a run in another query order than its
qrels and pair them by position: wrong metrics, no error (research/FINDINGS.md, "ranx metrics
and numba's kernel cache"). So each run of retrieval-kd (a command, a test session) gets a new
cache directory under the system's temporary directory, shared with the processes it starts
(they inherit :data:`OWNED`) and removed when it exits: ranx's kernels compile once per run (tens
of seconds on 2 cores). :func:`retrieval_kd.eval.metrics.ranx_view` checks the query order
whatever the cache.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import uuid

OWNED = "RKD_NUMBA_CACHE_DIR"
"""The environment variable naming the directory a parent retrieval-kd process made (and removes)."""
_made: list[str] = []  # the directory this process made, if it made one


def use_run_cache() -> str:
    """Point numba's cache at this run's directory: the parent retrieval-kd process's when this
    process inherited it, else a new one (created by numba when it first saves), removed at exit."""
    inherited = os.environ.get(OWNED)
    if inherited and os.environ.get("NUMBA_CACHE_DIR") == inherited:
        return inherited
    path = os.path.join(tempfile.gettempdir(), f"rkd-numba-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.environ["NUMBA_CACHE_DIR"] = os.environ[OWNED] = path
    numba = sys.modules.get("numba")
    if numba is not None:  # imported already: kernels decorated from now on use the new directory
        numba.config.CACHE_DIR = path
    _made.append(path)
    atexit.register(remove_run_cache)
    return path


def remove_run_cache() -> None:
    """Remove the directory this process made (at exit; call it before an ``os._exit``)."""
    while _made:
        shutil.rmtree(_made.pop(), ignore_errors=True)
