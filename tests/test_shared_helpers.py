"""The one-place helpers several modules share: exact top-k (retrieve/topk.py), the atomic file
writer (artifacts.atomic_open), the TREC run lines (data/trec.py), the run-file convention
(data/runfiles.py), and the ensemble's own normalisers (kept: ranx's differ, see below)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval_kd.artifacts import atomic_open, read_json_object
from retrieval_kd.data.runfiles import RUN_FILE, run_path
from retrieval_kd.data.trec import format_trec_run, trec_lines, write_trec_run
from retrieval_kd.retrieve.topk import ranked, top_k
from retrieval_kd.teachers.ensemble import normalize

# ------------------------------------------------------------------------------------ exact top-k


def _plain_top_k(docs, scores, k):
    order = np.lexsort((docs, -scores))[:k]
    return docs[order], scores[order]


@pytest.mark.parametrize("k", [0, 1, 3, 7, 20, 50])
def test_top_k_is_the_sorted_ranking_cut_at_k(k):
    rng = np.random.default_rng(0)
    docs = rng.permutation(40)
    scores = rng.integers(0, 6, 40).astype(np.float32)  # many ties, at the boundary too
    got, want = top_k(docs, scores, k), _plain_top_k(docs, scores, k)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert list(docs[ranked(docs, scores)][:k]) == list(want[0])


def test_top_k_with_nan_scores_matches_the_plain_sort():
    docs = np.arange(6)
    for scores in (np.array([1.0, np.nan, 3.0, np.nan, 2.0, 0.5]), np.array([np.nan, np.nan, 1.0, np.nan, np.nan, 2.0])):
        for k in range(7):
            np.testing.assert_array_equal(top_k(docs, scores, k)[0], _plain_top_k(docs, scores, k)[0])


# ------------------------------------------------------------------------------------ atomic writer


def test_atomic_open_replaces_only_on_success(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    with atomic_open(path) as f:
        f.write(b"one")
    assert path.read_bytes() == b"one"
    with pytest.raises(RuntimeError), atomic_open(path) as f:
        f.write(b"two")
        raise RuntimeError("cut short")
    assert path.read_bytes() == b"one"
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]  # no temporary file left


def test_read_json_object_is_empty_for_anything_but_an_object(tmp_path):
    p = tmp_path / "r.json"
    assert read_json_object(p) == {}
    for text, want in (('{"a": 1}', {"a": 1}), ("[1]", {}), ("{not json", {})):
        p.write_text(text)
        assert read_json_object(p) == want


# ------------------------------------------------------------------------------------ TREC and run files


def test_trec_lines_are_the_run_file(tmp_path):
    run = {"q2": {"b": 1.0, "a": 1.0, "c": 3}, "q1": {"x": 0.1}}
    assert list(trec_lines(run, "t")) == ["q2 Q0 c 1 3.0 t", "q2 Q0 a 2 1.0 t", "q2 Q0 b 3 1.0 t",
                                          "q1 Q0 x 1 0.1 t"]
    write_trec_run(run, tmp_path / "r.trec", tag="t")
    assert (tmp_path / "r.trec").read_text() == format_trec_run(run, "t") == "\n".join(trec_lines(run, "t")) + "\n"
    assert format_trec_run({}, "t") == "\n"


def test_trec_export_of_a_score_table_is_the_run_writer(tmp_path):
    from retrieval_kd.scores.interop import export_scores
    from retrieval_kd.scores.schema import make_table

    table = make_table(["q1", "q1", "q2"], ["d2", "d1", "d1"], [0.5, 0.5, 2.0])
    export_scores(table, "trec", tmp_path / "x.trec", tag="tt")
    run = {"q1": {"d2": 0.5, "d1": 0.5}, "q2": {"d1": 2.0}}
    assert (tmp_path / "x.trec").read_text() == format_trec_run(run, "tt")


def test_run_path_names_the_run_file(tmp_path):
    assert run_path(tmp_path) == tmp_path / RUN_FILE
    assert run_path(tmp_path / "bare.trec") == tmp_path / "bare.trec"


# ------------------------------------------------------------------------------------ ensemble normalisation
# Ours, not ranx's: ranx's min_max_norm / zmuv_norm divide by max(spread, 1e-9) (ours: by the
# spread when it is > 0, else all 0), its rank_norm is 1 - i/n (ours 1 - i/(n-1)), and NaN
# propagates there (ours: the query normalises to 0). Stored teacher scores depend on these.


@pytest.mark.parametrize("how, scores, want", [
    ("minmax", [4.0], [0.0]),
    ("zscore", [4.0], [0.0]),
    ("rank", [4.0], [1.0]),
    ("minmax", [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]),
    ("zscore", [5.0, 5.0], [0.0, 0.0]),
    ("rank", [2.0, 2.0, 2.0], [1.0, 0.5, 0.0]),  # ties: in the order given
    ("minmax", [1.0, 1.0 + 1e-12, 1.0 + 2e-12], [0.0, 0.500056, 1.0]),  # ranx: [0, 0.001, 0.002]
    ("minmax", [1.0, np.nan, 3.0], [0.0, 0.0, 0.0]),
    ("zscore", [1.0, np.nan, 3.0], [0.0, 0.0, 0.0]),
    ("rank", [3.2, 1.0, -0.5, 2.2, 0.7], [1.0, 0.5, 0.0, 0.75, 0.25]),  # ranx: [1, 0.6, 0.2, 0.8, 0.4]
])
def test_ensemble_normalisation_edge_cases(how, scores, want):
    np.testing.assert_allclose(normalize(np.array(scores), how), want, atol=1e-6)
