"""Memory between pipeline stages: hand freed memory back and say how much the run holds.

A stage's models and tensors are local to its adapter and freed when it returns; ``release``
collects what cycles keep alive and asks glibc to return freed heap pages to the system
(``malloc_trim``), so the next stage starts from a small resident set rather than the last
stage's high-water mark. ``usage`` reads the resident set now and the process's peak.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys


def release() -> None:
    """Collect garbage and return free heap pages to the OS (glibc only; elsewhere a no-op)."""
    gc.collect()
    trim()


def trim() -> None:
    """Return free heap pages to the OS (glibc's ``malloc_trim``; elsewhere a no-op). Cheap enough
    to call between batches of a loop whose tensors change size, where freed blocks would
    otherwise stay resident."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def usage() -> dict[str, float]:
    """``{"rss_mb": resident now, "peak_rss_mb": the process's peak so far}`` in MiB."""
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    rss = 0.0
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        pass
    peak = peak_kb / 1024 if sys.platform.startswith("linux") else peak_kb / 2**20
    return {"rss_mb": round(rss, 1), "peak_rss_mb": round(max(peak, rss), 1)}
