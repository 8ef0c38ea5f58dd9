"""``rkd index`` / ``rkd search`` end to end on a tiny BEIR folder with tiny random models,
and a build killed with SIGKILL that resumes to the identical index."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retrieval_kd.cli.main import app
from retrieval_kd.data.trec import load_trec_run
from tests.beir import random_beir
from tests.test_index_tiny import tiny_multi_vector, tiny_splade, tiny_st

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"root": root, "ds": random_beir(root / "ds"), "st": tiny_st(root / "st"),
            "splade": tiny_splade(root / "splade"), "mve": tiny_multi_vector(root / "mve")}


def invoke(*args: str):
    r = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


@pytest.mark.parametrize("family, model, extra", [
    ("dense", "st", ["--index", "flat"]),
    ("dense", "st", ["--index", "hnsw", "--hnsw-m", "8", "--ef-search", "32"]),
    ("dense", "st", ["--index", "ivfpq", "--nlist", "4", "--pq-m", "8", "--pq-nbits", "4"]),
    ("splade", "splade", []),
    ("colbert", "mve", ["--cand-index", "flat"]),
    ("colbert", "st", ["--nlist", "8", "--pq-m", "8", "--pq-nbits", "4"]),
])
@pytest.mark.slow
def test_index_then_search_round_trip(tiny, tmp_path, family, model, extra):
    idx, run = tmp_path / "indexes" / "x", tmp_path / "runs" / "x"
    invoke("index", family, "-m", str(tiny[model]), "-d", str(tiny["ds"]), "-o", str(idx),
           "--chunk-size", "50", *extra)
    man = json.loads((idx / "manifest.json").read_text())
    assert man["kind"] == f"index.{family}" and man["stats"]["n_docs"] == 120
    assert man["stats"]["index_bytes"] > 0 and man["stats"]["peak_rss_mb"] > 0
    assert man["inputs"]["encoder"]["model"]["sha256"]
    assert not (tmp_path / "indexes" / ".x.work").exists()  # work folder cleaned up
    invoke("search", str(idx), "-d", str(tiny["ds"]), "-o", str(run), "-k", "5")
    rm = json.loads((run / "manifest.json").read_text())
    lat = rm["stats"]["latency"]
    assert lat["queries"] == 12 and lat["p95_ms"] >= lat["p50_ms"] > 0 and lat["qps"] > 0
    trec = load_trec_run(run / "run.trec")
    assert len(trec) == 12 and all(0 < len(v) <= 5 for v in trec.values())
    if family == "splade":
        assert rm["stats"]["flops"] > 0 and rm["stats"]["avg_postings"] > 0
    if family == "colbert":
        assert rm["stats"]["avg_candidates"] > 0
    if family == "dense" and extra[1] == "flat":  # exact: equals brute force over the same encoder
        from sentence_transformers import SentenceTransformer

        from retrieval_kd.data.registry import load_dataset

        ds = load_dataset(str(tiny["ds"]))
        st = SentenceTransformer(str(tiny["st"]), device="cpu")
        d = st.encode(ds.corpus.texts(), normalize_embeddings=True)
        q = st.encode([ds.queries.texts["q0"]], normalize_embeddings=True)[0]
        top = [ds.corpus.ids()[i] for i in np.argsort(-(d @ q), kind="stable")[:5]]
        assert sorted(trec["q0"], key=lambda x: -trec["q0"][x]) == top


def test_search_rejects_another_corpus(tiny, tmp_path):
    idx = tmp_path / "idx"
    invoke("index", "dense", "-m", str(tiny["st"]), "-d", str(tiny["ds"]), "-o", str(idx))
    other = random_beir(tmp_path / "other", seed=1)
    r = CliRunner().invoke(app, ["search", str(idx), "-d", str(other), "-o", str(tmp_path / "r")])
    assert r.exit_code != 0 and "is not the one" in str(r.exception)
    assert not (tmp_path / "r").exists()


KILLED_BUILD = textwrap.dedent("""
    import sys, time
    from retrieval_kd.index.build import build_index
    from retrieval_kd.index.faiss_index import FaissParams

    def slow(i):
        print(f"chunk {i}", flush=True)
        time.sleep(0.2)

    build_index("dense", sys.argv[1], sys.argv[2], sys.argv[3], chunk_size=10,
                faiss_params=FaissParams(index="hnsw", hnsw_m=8), keep_embeddings=True, after_chunk=slow)
""")


@pytest.mark.slow
def test_sigkilled_encode_resumes_to_an_identical_index(tiny, tmp_path):
    ds, model = str(tiny["ds"]), str(tiny["st"])
    out = tmp_path / "indexes" / "resumed"
    work = tmp_path / "indexes" / ".resumed.work"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, ds, str(out), model],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("chunk 3"):
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = sorted(p.name for p in work.glob("chunk-*"))
    assert 4 <= len(done) < 12 and not out.exists()  # whole chunks only, no index yet

    r = subprocess.run([sys.executable, "-m", "retrieval_kd.cli.main", "index", "dense", "-m", model,
                        "-d", ds, "-o", str(out), "--chunk-size", "10", "--index", "hnsw", "--hnsw-m", "8",
                        "--keep-embeddings"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    resumed = json.loads((out / "manifest.json").read_text())
    assert resumed["stats"]["encode"]["chunks_resumed"] == len(done)
    assert resumed["stats"]["encode"]["chunks_encoded"] == 12 - len(done)

    fresh = tmp_path / "indexes" / "fresh"
    invoke("index", "dense", "-m", model, "-d", ds, "-o", str(fresh), "--chunk-size", "10",
           "--index", "hnsw", "--hnsw-m", "8", "--keep-embeddings")
    for i in range(12):
        a, b = (d / "embeddings" / f"chunk-{i:06d}" / "emb.npy" for d in (out, fresh))
        assert a.read_bytes() == b.read_bytes(), f"chunk {i} differs"
    assert (out / "index.faiss").read_bytes() == (fresh / "index.faiss").read_bytes()
    want = json.loads((fresh / "manifest.json").read_text())["outputs"]
    assert resumed["outputs"] == want
