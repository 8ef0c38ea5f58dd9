"""Metrics through ranx against hand-computed values, and the BEIR identical-id flag."""

from __future__ import annotations

import math

import pytest

from retrieval_kd.eval.metrics import evaluate_run

QRELS = {"q1": {"a": 1, "c": 2}, "q2": {"x": 1}}


def _dcg(gains):
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def test_ndcg_mrr_recall_match_hand_computation():
    run = {"q1": {"b": 3.0, "a": 2.0, "c": 1.0}, "q2": {"y": 2.0, "x": 1.0}}
    m = evaluate_run(QRELS, run, ["ndcg@10", "mrr@10", "recall@1"], ignore_identical_ids=False)
    ndcg_q1 = _dcg([0, 1, 2]) / _dcg([2, 1])
    ndcg_q2 = _dcg([0, 1]) / _dcg([1])
    assert m["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2, abs=1e-9)
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["recall@1"] == pytest.approx(0.0)


def test_judged_query_missing_from_run_scores_zero():
    run = {"q1": {"c": 1.0, "a": 0.5}}
    m = evaluate_run(QRELS, run, ["ndcg@10"], ignore_identical_ids=False)
    assert m["ndcg@10"] == pytest.approx(0.5)


def test_ignore_identical_ids_drops_self_hits():
    qrels = {"q1": {"a": 1}}
    run = {"q1": {"q1": 9.0, "a": 1.0}}
    kept = evaluate_run(qrels, run, ["mrr@10"], ignore_identical_ids=False)
    dropped = evaluate_run(qrels, run, ["mrr@10"], ignore_identical_ids=True)
    assert kept["mrr@10"] == pytest.approx(0.5)
    assert dropped["mrr@10"] == pytest.approx(1.0)


def test_per_query_values():
    run = {"q1": {"a": 1.0}, "q2": {"x": 1.0}}
    pq = evaluate_run(QRELS, run, ["recall@10"], per_query=True)
    assert pq["recall@10"] == {"q1": pytest.approx(0.5), "q2": pytest.approx(1.0)}


def test_run_and_qrels_in_different_query_orders_is_an_error(monkeypatch):
    """The fault numba's on-disk cache caused (SciFact BM25 scored 0.1255 for 0.6762): ranx built
    the run in another query order than the qrels, and paired queries by position."""
    import ranx

    from retrieval_kd.errors import RkdError

    run = {"q1": {"a": 1.0}, "q2": {"x": 1.0}}
    expected = (_dcg([1]) / _dcg([2, 1]) + 1.0) / 2
    assert evaluate_run(QRELS, run, ["ndcg@10"])["ndcg@10"] == pytest.approx(expected)
    real_keys = ranx.Run.keys

    def keys(self):  # every run but 'a' comes out in reverse query order
        keys = list(real_keys(self))
        return keys if self.name == "a" else keys[::-1]

    monkeypatch.setattr(ranx.Run, "keys", keys)
    with pytest.raises(RkdError, match="different query orders"):
        evaluate_run(QRELS, run, ["ndcg@10"])
    from retrieval_kd.eval.compare import significance

    with pytest.raises(RkdError, match="run 'b': ranx built it and the qrels in different query orders"):
        significance(QRELS, {"a": run, "b": run}, "a", ["ndcg@10"])


_CACHE_PROBE = """
import os, sys
if sys.argv[1] != "-":
    os.environ["NUMBA_CACHE_DIR"] = sys.argv[1]  # a user's persistent cache: replaced
import retrieval_kd
from retrieval_kd.eval.metrics import evaluate_run
m = evaluate_run({"q1": {"a": 1}}, {"q1": {"b": 2.0, "a": 1.0}}, ["ndcg@10"], ignore_identical_ids=False)
d = os.environ["NUMBA_CACHE_DIR"]
print(d, os.path.isdir(d) and any(os.scandir(d)), round(m["ndcg@10"], 6))
"""


@pytest.mark.slow  # a child process compiles ranx's kernels (about 20 s on 2 cores)
def test_each_run_compiles_ranx_into_a_new_cache_its_children_share(tmp_path):
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    def child(arg: str) -> tuple[Path, str]:
        out = subprocess.run([sys.executable, "-c", _CACHE_PROBE, arg], capture_output=True, text=True,
                             check=True).stdout.split()
        assert float(out[2]) == pytest.approx(_dcg([0, 1]) / _dcg([1]))
        return Path(out[0]), out[1]

    ours = Path(os.environ["NUMBA_CACHE_DIR"])  # this test session's (retrieval_kd is imported)
    assert ours.parent == Path(tempfile.gettempdir()) and ours.name.startswith("rkd-numba-")
    user = tmp_path / "persistent"
    path, used = child(str(user))  # a process with a cache of its own choosing: a new run
    assert path.parent == ours.parent and path.name.startswith("rkd-numba-") and path != ours
    assert used == "True"  # ranx's kernels were cached there while it ran
    assert not path.exists()  # and the directory went with it
    assert not user.exists()  # nothing was read from or written to the persistent cache
    path, used = child("-")  # a process this one starts: this run's cache, which it leaves in place
    assert path == ours and used == "True" and ours.is_dir()
