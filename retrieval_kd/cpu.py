"""This CPU: its name and instruction-set flags, and the OpenBLAS kernels faiss runs on it.

faiss-cpu's wheels bundle their own OpenBLAS (0.3.15 in faiss-cpu 1.15.1), older than numpy's.
OpenBLAS picks its kernels when it loads, from the CPU's family and model; a CPU newer than its
table gets the generic SSE3 kernels ("Prescott"). On a 2-core Xeon with AVX-512 whose model the
bundled copy does not know, faiss on "SkylakeX" (the kernels numpy's newer OpenBLAS picks there)
built the main job's ColBERT IVF-PQ index 3x faster, with the same candidates
(eval/results/bench-blas/). :func:`pin_openblas_core` names the kernels from the CPU's flags
before faiss loads, through OpenBLAS's own ``OPENBLAS_CORETYPE``; a value the user set wins.
"""

from __future__ import annotations

import os
import platform
import sys

CORETYPE = "OPENBLAS_CORETYPE"
_faiss_core: list[str | None] = []  # faiss's kernels, asked once: they cannot change after it loads
AVX512 = frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"})


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's machine type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or "?"


def cpu_flags() -> set[str]:
    """The instruction-set flags of the first CPU in ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    """Native bfloat16 matmuls on this CPU (AVX512-BF16 or AMX), where bf16 pays off."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def openblas_core(flags: set[str]) -> str | None:
    """The OpenBLAS kernel family for these x86 flags: AVX-512 (F, BW, DQ, VL, CD) ``SkylakeX``,
    AVX2 with FMA ``Haswell``; ``None`` (OpenBLAS's own choice) for anything else."""
    if AVX512 <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def pin_openblas_core() -> str | None:
    """Set ``OPENBLAS_CORETYPE`` for faiss's OpenBLAS before it loads; the value in force, if any.

    Nothing changes when the user set it, or when faiss is loaded already (its kernels are chosen).
    numpy is imported first so that its own OpenBLAS keeps its own choice."""
    if CORETYPE in os.environ or "faiss" in sys.modules:
        return os.environ.get(CORETYPE)
    core = openblas_core(cpu_flags())
    if core is not None:
        import numpy  # noqa: F401  (loads numpy's OpenBLAS before the variable is set)

        os.environ[CORETYPE] = core
    return core


def faiss_blas_core() -> str | None:
    """The kernels faiss's bundled OpenBLAS runs with, once faiss is loaded (``None`` before, or
    where faiss links a BLAS of its own installation)."""
    faiss = sys.modules.get("faiss")
    if faiss is None:
        return None
    if not _faiss_core:
        _faiss_core.append(_ask_openblas(faiss.__file__))
    return _faiss_core[0]


def _ask_openblas(faiss_file: str) -> str | None:
    import ctypes
    import glob

    libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(faiss_file)), "faiss_cpu.libs", "libopenblas*"))
    if not libs:
        return None
    try:
        lib = ctypes.CDLL(libs[0])  # the copy faiss loaded: the same handle, not a second load
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return None
