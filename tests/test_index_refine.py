"""IVF-PQ with exact re-ranking of its candidates (faiss IndexRefine): exact scores, the
parameter in the manifest and the search overrides, old manifests, bad values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from retrieval_kd.cli.main import app
from retrieval_kd.families import get as get_family
from retrieval_kd.index.faiss_index import (
    FaissParams,
    IndexParamError,
    build_faiss,
    faiss_share,
    is_refined,
    prepare_search,
    read_index,
    refine_override,
    resolve_params,
    with_refine_default,
    write_index,
)
from tests.test_index_faiss import blocks_of, clustered, exact_topk

DENSE = get_family("bi-encoder").refine_default

X = clustered(3000, 32, n_clusters=30)
Q = clustered(40, 32, n_clusters=30, seed=1)
TRUTH = exact_topk(X, Q, 10)
EXACT = Q @ X.T
# coarse codes (4 bytes for 32 floats): PQ alone gets the order visibly wrong
IVFPQ = FaissParams(index="ivfpq", nlist=16, pq_m=4, pq_nbits=6, nprobe=16, train_size=3000)


def build(**update):
    index, fp = build_faiss(blocks_of(X, 700), len(X), 32, IVFPQ.model_copy(update=update))
    return prepare_search(index, fp), fp


def test_refine_flat_with_a_large_factor_is_flat_search(tmp_path):
    plain, fp0 = build(refine="none")
    assert not is_refined(plain) and fp0.refine == "none"
    s0, i0 = plain.search(Q, 10)
    # without refine: PQ-approximate scores and a different top-10 (what refine must fix)
    assert not np.allclose(s0, np.take_along_axis(EXACT, i0, 1), atol=1e-3)
    assert (i0 != TRUTH).any()

    index, fp = build(refine="flat", refine_factor=400)  # 4000 candidates >= the 3000 vectors
    assert is_refined(index) and fp.refine == "flat" and index.k_factor == 400
    s, i = index.search(Q, 10)
    np.testing.assert_array_equal(i, TRUTH)
    np.testing.assert_allclose(s, np.take_along_axis(EXACT, TRUTH, 1), rtol=1e-5, atol=1e-5)

    write_index(index, tmp_path / "r.faiss")  # read back: still refined, same results
    back = read_index(tmp_path / "r.faiss")
    assert is_refined(back)
    s2, i2 = prepare_search(back, fp).search(Q, 10)
    np.testing.assert_array_equal(i2, TRUTH)
    np.testing.assert_allclose(s2, s, rtol=1e-6)


def test_refine_default_factor_scores_exactly_and_beats_pq():
    plain, _ = build(refine="none")
    _, i0 = plain.search(Q, 10)
    index, fp = build(refine="flat")
    assert fp.refine_factor == 16 and index.k_factor == 16
    s, i = index.search(Q, 10)
    # every returned score is the exact inner product of the returned vector
    np.testing.assert_allclose(s, np.take_along_axis(EXACT, i, 1), rtol=1e-5, atol=1e-5)
    assert (np.diff(s, axis=1) <= 1e-6).all()

    def hits(found):
        return sum(len(set(f) & set(t)) for f, t in zip(found, TRUTH))
    assert hits(i) > hits(i0)
    # a search-time factor of 1 re-ranks only PQ's own top-10: the same documents as PQ alone
    one = prepare_search(index, refine_override(fp, 1))
    assert one.k_factor == 1
    _, i1 = one.search(Q, 10)
    assert [set(a) for a in i1] == [set(b) for b in i0]


def test_refine_sq8_is_near_exact_and_smaller():
    import faiss

    flat, _ = build(refine="flat", refine_factor=400)
    sq8, fp = build(refine="sq8", refine_factor=400)
    s, i = sq8.search(Q, 10)
    assert fp.refine == "sq8"
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, TRUTH)]) >= 0.9
    np.testing.assert_allclose(s, np.take_along_axis(EXACT, i, 1), atol=0.02)
    assert faiss.serialize_index(sq8).nbytes < 0.5 * faiss.serialize_index(flat).nbytes
    assert faiss_share(fp) < faiss_share(fp.model_copy(update={"refine": "flat"}))


def test_dense_default_is_refined_colbert_default_is_not():
    assert with_refine_default(FaissParams(index="ivfpq"), DENSE).refine == "flat"
    assert with_refine_default(FaissParams(index="ivfpq", refine="none"), DENSE).refine == "none"
    assert with_refine_default(FaissParams(index="hnsw"), DENSE).refine is None
    # the shared resolution (ColBERT's token index, which sets no default) stays unrefined
    rp = resolve_params(FaissParams(index="ivfpq"), 10_000, 32)
    assert rp.refine == "none" and not rp.refined
    index, _ = build_faiss(blocks_of(X, 1000), len(X), 32, IVFPQ)
    assert not is_refined(index)


@pytest.mark.parametrize("kwargs, msg", [
    ({"index": "ivfpq", "refine_factor": 0}, "greater than or equal to 1"),
    ({"index": "ivfpq", "refine_factor": 5000}, "less than or equal to 1024"),
    ({"index": "ivfpq", "refine": "pq"}, "'none', 'flat' or 'sq8'"),
    ({"index": "hnsw", "refine": "flat"}, "refine re-scores IVF-PQ candidates"),
])
def test_bad_values_are_one_error(kwargs, msg):
    with pytest.raises(ValidationError) as e:
        FaissParams(**kwargs)
    assert len(e.value.errors()) == 1 and msg in str(e.value)


def test_bad_search_overrides_are_one_line():
    fp = resolve_params(FaissParams(index="ivfpq", refine="flat"), 3000, 32)
    with pytest.raises(IndexParamError, match=r"^refine_factor: Input should be greater than or equal to 1 "
                                              r"\(got 0\)$"):
        refine_override(fp, 0)
    with pytest.raises(IndexParamError, match="re-scores no candidates"):
        refine_override(fp.model_copy(update={"refine": "none"}), 8)
    assert refine_override(fp, 8).refine_factor == 8


# ---------------------------------------------------------------- through rkd index / rkd search

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.beir import random_beir
    from tests.test_index_tiny import tiny_st

    root = tmp_path_factory.mktemp("tiny")
    return {"ds": random_beir(root / "ds"), "st": tiny_st(root / "st")}


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def index_ivfpq(tiny, out, *extra):
    r = cli("index", "dense", "-m", str(tiny["st"]), "-d", str(tiny["ds"]), "-o", str(out),
            "--index", "ivfpq", "--nlist", "4", "--pq-m", "8", "--pq-nbits", "4", *extra)
    assert r.exit_code == 0, r.output
    return json.loads((out / "manifest.json").read_text())


def test_manifest_records_refine_and_search_overrides_it(tiny, tmp_path):
    man = index_ivfpq(tiny, tmp_path / "idx")
    fp = man["params"]["faiss"]
    assert (fp["refine"], fp["refine_factor"]) == ("flat", 16)
    man8 = index_ivfpq(tiny, tmp_path / "idx8", "--refine", "sq8", "--refine-factor", "8")
    assert (man8["params"]["faiss"]["refine"], man8["params"]["faiss"]["refine_factor"]) == ("sq8", 8)
    assert man8["stats"]["index_bytes"] < man["stats"]["index_bytes"]

    from retrieval_kd.index.search import Searcher

    s = Searcher(tmp_path / "idx", {"refine_factor": 30})  # 30 x 5 candidates: all 120 documents
    assert s.search_params == {"nprobe": 32, "refine_factor": 30} and s.index.k_factor == 30
    assert Searcher(tmp_path / "idx").search_params["refine_factor"] == 16
    r = cli("search", str(tmp_path / "idx"), "-d", str(tiny["ds"]), "-o", str(tmp_path / "run"), "-k", "5",
            "--refine-factor", "30")
    assert r.exit_code == 0, r.output
    rm = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert rm["params"]["search"]["refine_factor"] == 30

    # with every document re-scored, the results are exact search's, scores included
    flat = tmp_path / "flat"
    r = cli("index", "dense", "-m", str(tiny["st"]), "-d", str(tiny["ds"]), "-o", str(flat), "--index", "flat")
    assert r.exit_code == 0, r.output
    exact = Searcher(flat)
    q = np.random.default_rng(0).standard_normal((5, exact.index.d)).astype(np.float32)
    for row in q:
        d1, s1, _ = s.search(row, 5)
        d2, s2, _ = exact.search(row, 5)
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-5)


def test_old_manifest_without_refine_opens_unrefined(tiny, tmp_path):
    from retrieval_kd.index.search import Searcher

    idx = tmp_path / "old"
    index_ivfpq(tiny, idx, "--refine", "none")
    mpath = idx / "manifest.json"
    man = json.loads(mpath.read_text())
    for key in ("refine", "refine_factor"):  # an index built before refine existed
        del man["params"]["faiss"][key]
    mpath.write_text(json.dumps(man))
    s = Searcher(idx)
    assert s.search_params == {"nprobe": 32} and not is_refined(s.index)
    assert len(s.search(np.ones(s.index.d, np.float32), 5)[0]) == 5
    with pytest.raises(IndexParamError, match="re-scores no candidates"):
        Searcher(idx, {"refine_factor": 8})


def test_cli_bad_value_is_one_line(tiny, tmp_path):
    r = cli("index", "dense", "-m", str(tiny["st"]), "-d", str(tiny["ds"]), "-o", str(tmp_path / "x"),
            "--index", "ivfpq", "--refine-factor", "0")
    assert r.exit_code != 0 and isinstance(r.exception, IndexParamError)
    assert str(r.exception) == "invalid index parameters: refine_factor: Input should be greater than or equal to 1"
    assert not (tmp_path / "x").exists()


def test_a_pipeline_dense_ivfpq_index_keys_on_its_refine(tmp_path):
    """A dense IVF-PQ entry without ``refine`` is refined now, so its stage key differs from the
    unrefined index an older run cached (``refine: none``); ColBERT's and flat entries are unchanged."""
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.plan import plan
    from tests.beir import tiny_beir

    tiny_beir(tmp_path / "tiny")

    def keys(params: str) -> dict[str, str]:
        (tmp_path / "p.yaml").write_text(
            "name: r\ndatasets:\n  tiny: {source: tiny}\nindexes:\n"
            f"  d: {{model: minilm-l6, family: bi-encoder, dataset: tiny, kind: ivfpq, params: {{{params}}}}}\n"
            f"  f: {{model: minilm-l6, family: bi-encoder, dataset: tiny, kind: flat}}\n")
        return {s.id: s.key for s in plan(load_pipeline(tmp_path / "p.yaml", check_sources=False))}

    unset, flat, none = keys("nlist: 4"), keys("nlist: 4, refine: flat"), keys("nlist: 4, refine: none")
    assert unset["index:d"] == flat["index:d"] != none["index:d"]
    assert unset["index:f"] == none["index:f"]
