"""eval/bench_blas.py on a tiny token matrix: both kinds of process run, and the pinned one runs the
kernels retrieval-kd names for this CPU while the plain one keeps faiss's own choice."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval_kd.cpu import cpu_flags, openblas_core

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="OpenBLAS x86 kernel names")
def test_bench_blas_tiny(tmp_path: Path):
    x = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    np.save(tmp_path / "tokens.npy", (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16))
    out = tmp_path / "res" / "bench-blas"
    subprocess.run([sys.executable, "-m", "eval.bench_blas", "--tokens", str(tmp_path / "tokens.npy"),
                    "--rounds", "1", "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    res = json.loads(out.with_suffix(".json").read_text())
    want = openblas_core(cpu_flags())
    if want is not None:
        assert res["rows"]["pinned"]["core"] == want
    assert res["rows"]["plain"]["core"]  # faiss's own choice, whatever it is, is reported
    assert res["index"]["tokens"] == 3000 and 0 < res["shared_candidates"] <= 1 and 0 <= res["identical_searches"] <= 1
    assert all(v > 0 for v in res["x_plain"].values())
    assert "pinned / plain speed" in out.with_suffix(".md").read_text()


def test_bench_blas_names_a_missing_file(tmp_path: Path):
    p = subprocess.run([sys.executable, "-m", "eval.bench_blas", "--tokens", str(tmp_path / "none.npy")],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode != 0 and "none.npy: no such file" in p.stderr


def test_bench_blas_rejects_what_is_not_a_token_matrix(tmp_path: Path):
    (tmp_path / "text.npy").write_text("not an array\n")
    np.save(tmp_path / "flat.npy", np.zeros(5, np.float32))
    for name, msg in (("text.npy", "not a .npy file"), ("flat.npy", "expected a 2-D float array")):
        p = subprocess.run([sys.executable, "-m", "eval.bench_blas", "--tokens", str(tmp_path / name)],
                           cwd=ROOT, capture_output=True, text=True)
        assert p.returncode != 0 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "res").exists()
