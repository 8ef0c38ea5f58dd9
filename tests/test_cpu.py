"""faiss's OpenBLAS kernels: chosen from the CPU's flags before faiss loads, the user's choice kept."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from retrieval_kd.cpu import AVX512, CORETYPE, cpu_flags, openblas_core

PROBE = ("import json, os, retrieval_kd, faiss; from retrieval_kd.artifacts import library_versions; "
         "print(json.dumps([os.environ.get('OPENBLAS_CORETYPE'), library_versions().get('faiss_openblas_core')]))")


def probe(**env: str) -> tuple[str | None, str | None]:
    base = {k: v for k, v in os.environ.items() if k != CORETYPE}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                         check=True).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def test_core_from_flags():
    assert openblas_core(set(AVX512) | {"avx2", "fma"}) == "SkylakeX"
    assert openblas_core({"avx512f", "avx2", "fma"}) == "Haswell"  # AVX-512 without BW/DQ/VL: not SkylakeX's
    assert openblas_core({"avx2", "fma", "sse3"}) == "Haswell"
    assert openblas_core({"avx2"}) is None and openblas_core({"asimd", "fp"}) is None and openblas_core(set()) is None


@pytest.mark.skipif(platform.machine() != "x86_64", reason="OpenBLAS x86 kernel names")
def test_faiss_runs_the_pinned_kernels():
    env, core = probe()
    want = openblas_core(cpu_flags())
    assert env == want
    if want is not None:
        assert core == want  # faiss's own OpenBLAS reports the kernels it loaded


@pytest.mark.skipif(platform.machine() != "x86_64", reason="OpenBLAS x86 kernel names")
def test_user_choice_wins():
    assert probe(OPENBLAS_CORETYPE="Prescott") == ("Prescott", "Prescott")
