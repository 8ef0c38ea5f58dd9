"""The plaid ColBERT engine: centroid pruning, then exact MaxSim on the survivors.

Generous settings must give exactly the exact engine's ranking; the default budget must still
score its survivors exactly; the engine and its parameters are recorded in the manifest, search
follows them, and the build stays resumable and atomic like every index build.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from retrieval_kd.cli.main import app
from retrieval_kd.errors import RkdError
from retrieval_kd.index.faiss_index import FaissParams, IndexParamError, build_faiss
from retrieval_kd.index.late import maxsim
from retrieval_kd.index.plaid import PlaidParams, PlaidSearch, plaid_nlist, resolve_plaid
from tests.beir import random_beir
from tests.test_index_late import DOCS, OFFSETS, TOKENS, brute_maxsim, query
from tests.test_index_tiny import tiny_multi_vector

IVFPQ = FaissParams(index="ivfpq", pq_m=4, pq_nbits=4)


# -- the engine on random token vectors ------------------------------------------------------------
@pytest.fixture(scope="module", params=[False, True], ids=["pq", "fast-scan"])
def ivf(request):
    fp = IVFPQ.model_copy(update={"nlist": plaid_nlist(len(TOKENS)), "fast_scan": request.param})
    return build_faiss(lambda: [TOKENS.astype(np.float32)], len(TOKENS), TOKENS.shape[1], fp)


def engine(ivf, **kw) -> PlaidSearch:
    return PlaidSearch(TOKENS, OFFSETS, ivf[0], resolve_plaid(PlaidParams(**kw), len(DOCS)).model_dump())


@pytest.mark.slow
def test_generous_budget_is_the_exact_ranking(ivf):
    every = ivf[1].nlist
    plaid = engine(ivf, nprobe=every, k_token=len(TOKENS), nfull=len(DOCS))
    for s in range(6):
        q = query(s)
        docs, scores, counts = plaid.search(q, 10)
        want = np.array([brute_maxsim(q, d) for d in DOCS], dtype=np.float32)
        order = np.lexsort((np.arange(len(DOCS)), -want))[:10]
        assert list(docs) == list(order)
        np.testing.assert_allclose(scores, want[order], rtol=1e-5, atol=1e-5)
        assert counts["candidates"] == len(DOCS) - 1  # doc 5 has no tokens


@pytest.mark.slow
def test_default_budget_scores_survivors_exactly_then_ranks_the_rest_below(ivf):
    plaid = engine(ivf, nfull=12)
    for s in range(4):
        q = query(s)
        docs, scores, counts = plaid.search(q, 40)
        assert counts["exact_scored"] == 12 and len(docs) == 40 == len(set(docs))
        head = maxsim(q, TOKENS, OFFSETS, docs[:12])
        np.testing.assert_allclose(scores[:12], head, rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(scores) < 0)  # one strictly falling ranking, the tail below the exact block
        assert list(docs[:10]) == list(plaid.search(q, 10)[0])


@pytest.mark.slow
def test_pruning_threshold_and_empty_queries(ivf):
    q = query(0)
    assert len(engine(ivf, centroid_score_threshold=2.0).search(q, 10)[0]) == 0  # every centroid pruned
    low = engine(ivf, centroid_score_threshold=-2.0).search(q, 10)
    assert list(low[0]) == list(engine(ivf).search(q, 10)[0])  # nothing pruned
    assert len(engine(ivf).search(q[:0], 10)[0]) == 0


def test_plaid_needs_an_ivf_index():
    flat, _ = build_faiss(lambda: [TOKENS.astype(np.float32)], len(TOKENS), TOKENS.shape[1], FaissParams())
    with pytest.raises(RkdError, match="IVF"):
        PlaidSearch(TOKENS, OFFSETS, flat, resolve_plaid(PlaidParams(), len(DOCS)).model_dump())


def test_defaults_scale_with_the_corpus():
    assert resolve_plaid(PlaidParams(), 120).nfull == 32
    assert resolve_plaid(PlaidParams(), 20).nfull == 20
    assert resolve_plaid(PlaidParams(), 1_000_000).nfull == 250
    assert resolve_plaid(PlaidParams(nfull=7), 10_000).nfull == 7
    assert plaid_nlist(661_116) == 2048 and plaid_nlist(2000) == 25


# -- built indexes: manifest, search, resume, atomicity ------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from retrieval_kd.index.build import build_index

    root = tmp_path_factory.mktemp("plaid")
    ds, mve = random_beir(root / "ds"), tiny_multi_vector(root / "mve")
    work = root / "work"  # encoded once, both indexes built from it
    exact = build_index("colbert", str(ds), root / "exact", str(mve), faiss_params=FaissParams(index="flat"),
                        chunk_size=40, work_dir=work, keep_work=True)
    plaid = build_index("colbert", str(ds), root / "plaid", str(mve), chunk_size=40,  # the plaid defaults
                        work_dir=work, keep_work=True, engine="plaid")
    return {"root": root, "ds": ds, "mve": mve, "exact": exact, "plaid": plaid}


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _all_results(index, ds, overrides, k=10):
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.index.search import Searcher, encoder_for

    s = Searcher(index, overrides)
    d = load_dataset(str(ds))
    reps = encoder_for(s.manifest).encode_queries([d.queries.texts[q] for q in d.queries.ids()])
    return s, [s.search(r, k) for r in reps]


@pytest.mark.slow
def test_manifest_records_engine_and_resolved_parameters(tiny):
    m, e = _manifest(tiny["plaid"]), _manifest(tiny["exact"])
    assert m["params"]["engine"] == "plaid" and e["params"]["engine"] == "exact"
    assert m["params"]["plaid"] == {"nprobe": 3, "k_token": 192, "nfull": 32, "centroid_score_threshold": None}
    fp = m["params"]["faiss"]
    assert (fp["index"], fp["fast_scan"], fp["pq_nbits"], fp["pq_m"]) == ("ivfpq", True, 4, 16 // 4)
    assert m["params"]["faiss"]["nlist"] == plaid_nlist(m["stats"]["n_tokens"])
    assert {"tokens.npy", "doc_offsets.npy", "candidates.faiss", "doc_ids.json"} <= set(m["files"])


@pytest.mark.slow
def test_generous_plaid_search_equals_exact_on_a_tiny_colbert(tiny):
    n_tok = _manifest(tiny["plaid"])["stats"]["n_tokens"]
    nlist = _manifest(tiny["plaid"])["params"]["faiss"]["nlist"]
    ex, exact = _all_results(tiny["exact"], tiny["ds"], {"k_token": n_tok})
    pl, plaid = _all_results(tiny["plaid"], tiny["ds"], {"nprobe": nlist, "k_token": n_tok, "nfull": 120})
    assert pl.engine == "plaid" and ex.engine == "exact"
    for (d1, s1, _), (d2, s2, _) in zip(exact, plaid):
        assert list(d1) == list(d2)
        np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-5)
    # the index's own default budget still scores its top exactly: same scores for the same documents
    _, default = _all_results(tiny["plaid"], tiny["ds"], {})
    for (d1, s1, _), (d2, s2, c) in zip(exact, default):
        assert c["exact_scored"] == 32
        same = dict(zip(d1.tolist(), s1.tolist()))
        for d, s in zip(d2[:5].tolist(), s2[:5].tolist()):
            if d in same:
                assert s == pytest.approx(same[d], abs=1e-5)


@pytest.mark.slow
def test_search_follows_the_manifest_and_checks_overrides(tiny, tmp_path):
    from retrieval_kd.index.search import Searcher, search_stage

    run = search_stage(tiny["plaid"], str(tiny["ds"]), "test", tmp_path / "run", k=5)
    rm = _manifest(run)
    assert rm["params"]["search"] == {"engine": "plaid", "nprobe": 3, "k_token": 192, "nfull": 32,
                                      "centroid_score_threshold": None}
    assert 0 < rm["stats"]["avg_exact_scored"] <= 32
    run = search_stage(tiny["plaid"], str(tiny["ds"]), "test", tmp_path / "run-exact", k=5,
                       overrides={"engine": "exact", "nprobe": 8})
    assert _manifest(run)["params"]["search"] == {"engine": "exact", "nprobe": 8, "k_token": 32}
    assert Searcher(tiny["plaid"], {"nfull": 5}).search_params["nfull"] == 5
    with pytest.raises(ValueError, match="plaid engine"):
        Searcher(tiny["exact"], {"nfull": 5})
    with pytest.raises(RkdError, match="IVF"):
        Searcher(tiny["exact"], {"engine": "plaid"})  # a flat candidate index has no centroids
    with pytest.raises(ValueError, match="unknown search engine"):
        Searcher(tiny["plaid"], {"engine": "fast"})


@pytest.mark.slow
def test_plaid_engine_needs_ivfpq_and_colbert_before_encoding(tiny):
    from retrieval_kd.index.build import build_index

    for family, fp in (("colbert", FaissParams(index="hnsw")), ("dense", None)):
        out = tiny["root"] / f"bad-{family}"
        with pytest.raises(IndexParamError):
            build_index(family, str(tiny["ds"]), out, str(tiny["mve"]), faiss_params=fp, engine="plaid")
        assert not out.exists() and not (tiny["root"] / f".bad-{family}.work").exists()


@pytest.mark.slow
def test_killed_plaid_build_resumes_and_a_failed_assembly_leaves_no_index(tiny, monkeypatch):
    from retrieval_kd.index import build
    from retrieval_kd.index.build import build_index

    out, work = tiny["root"] / "resumed", tiny["root"] / ".resumed.work"

    def die(i):
        if i == 1:
            raise KeyboardInterrupt  # stands for a kill after two chunks

    kw = {"chunk_size": 40, "engine": "plaid"}
    with pytest.raises(KeyboardInterrupt):
        build_index("colbert", str(tiny["ds"]), out, str(tiny["mve"]), after_chunk=die, **kw)
    assert not out.exists() and len(list(work.glob("chunk-*"))) == 2

    real = build.build_faiss
    monkeypatch.setattr(build, "build_faiss", lambda *a, **k: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        build_index("colbert", str(tiny["ds"]), out, str(tiny["mve"]), **kw)
    assert not out.exists() and not list(tiny["root"].glob(".resumed.tmp-*"))
    assert len(list(work.glob("chunk-*"))) == 3  # the encoded chunks survive the failed assembly

    monkeypatch.setattr(build, "build_faiss", real)
    build_index("colbert", str(tiny["ds"]), out, str(tiny["mve"]), **kw)
    m = _manifest(out)
    assert m["stats"]["encode"]["chunks_resumed"] == 3 and m["params"]["engine"] == "plaid"
    assert (out / "tokens.npy").read_bytes() == (tiny["plaid"] / "tokens.npy").read_bytes()
    assert not work.exists()


@pytest.mark.slow
def test_cli_engine_option_round_trip(tiny, tmp_path):
    runner = CliRunner()
    idx, run = tmp_path / "idx", tmp_path / "run"
    r = runner.invoke(app, ["index", "colbert", "-m", str(tiny["mve"]), "-d", str(tiny["ds"]), "-o", str(idx),
                            "--engine", "plaid", "--nfull", "20",
                            "--nprobe", "5"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    m = _manifest(idx)
    assert m["params"]["plaid"]["nfull"] == 20 and m["params"]["plaid"]["nprobe"] == 5
    assert m["params"]["faiss"]["nprobe"] == 16  # the exact engine's default, when searched as exact
    assert m["params"]["faiss"]["fast_scan"] and m["params"]["faiss"]["pq_nbits"] == 4
    r = runner.invoke(app, ["search", str(idx), "-d", str(tiny["ds"]), "-o", str(run), "-k", "5",
                            "--nfull", "10"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert _manifest(run)["params"]["search"]["nfull"] == 10
    r = runner.invoke(app, ["index", "colbert", "-m", str(tiny["mve"]), "-d", str(tiny["ds"]), "-o",
                            str(tmp_path / "x"), "--nfull", "20"])
    assert r.exit_code != 0 and "--engine plaid" in str(r.exception)


def test_pipeline_index_params_take_the_engine():
    from retrieval_kd.pipeline.adapters import _index_params

    _, fp, build = _index_params("colbert", None, {"engine": "plaid", "plaid": {"nfull": 48}, "chunk_size": 10})
    assert fp is None and build == {"engine": "plaid", "plaid_params": PlaidParams(nfull=48), "chunk_size": 10}
    with pytest.raises(RkdError, match="unknown"):
        _index_params("dense", None, {"engine": "plaid"})


@pytest.mark.slow
def test_bench_exhaustive_reference_is_maxsim_against_every_document(tiny):
    """eval/bench_colbert_engines.py's reference: the exact engine with a flat candidate index and
    every token as a candidate scores every document, so both must give the same ranking."""
    from eval.bench_colbert_engines import exhaustive

    n_tok = _manifest(tiny["exact"])["stats"]["n_tokens"]
    s, exact = _all_results(tiny["exact"], tiny["ds"], {"k_token": n_tok})
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.index.search import encoder_for

    d = load_dataset(str(tiny["ds"]))
    reps = encoder_for(s.manifest).encode_queries([d.queries.texts[q] for q in d.queries.ids()])
    ref, cpu_s, wall_s = exhaustive(tiny["exact"], reps, 10)
    assert cpu_s > 0 and wall_s > 0 and len(ref) == len(exact)
    for (d1, s1, _), (d2, s2, c) in zip(exact, ref):
        assert c["candidates"] == len(s.doc_ids)
        assert list(d1) == list(d2)
        np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-5)
