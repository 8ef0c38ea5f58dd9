"""``rkd eval --baseline``: every other run tested against the baseline with the pipeline eval's
own comparison (eval/compare.py ``significance``: ranx's paired t-test over the judged queries)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrieval_kd.cli.main import app
from retrieval_kd.data.registry import load_dataset
from retrieval_kd.data.trec import write_trec_run
from retrieval_kd.errors import RkdError
from retrieval_kd.eval.compare import significance
from retrieval_kd.eval.metrics import evaluate_run
from tests.beir import random_beir

N = 8
METRICS = ["ndcg@10", "mrr@10"]


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """A BEIR folder where ``q<i>`` is judged relevant to ``d<i>``, and three TREC runs: ``oracle``
    ranks it first, ``shifted`` at rank ``1 + i % 4``, ``twin`` is ``shifted`` again."""
    ds = random_beir(tmp_path / "ds", n_docs=20, n_queries=N)
    files = {}
    for name, rank_of in (("oracle", lambda i: 1), ("shifted", lambda i: 1 + i % 4), ("twin", lambda i: 1 + i % 4)):
        run = {}
        for i in range(N):
            others = [f"d{j}" for j in range(N, N + 5)]
            order = others[:rank_of(i) - 1] + [f"d{i}"] + others[rank_of(i) - 1:]
            run[f"q{i}"] = {d: float(10 - r) for r, d in enumerate(order)}
        files[name] = tmp_path / f"{name}.trec"
        write_trec_run(run, files[name])
    return ds, files


def invoke(*args) -> object:
    return CliRunner().invoke(app, ["eval", *map(str, args)])


def test_baseline_prints_and_writes_paired_t_test_p_values(runs, tmp_path):
    from scipy.stats import ttest_rel

    ds, f = runs
    r = invoke(f["oracle"], f["shifted"], f["twin"], "-d", ds, "--metrics", ",".join(METRICS),
               "--baseline", "shifted", "-o", tmp_path / "res" / "out")
    assert r.exit_code == 0, r.output
    sig = json.loads((tmp_path / "res" / "out.significance.json").read_text())
    assert (sig["baseline"], sig["stat_test"], sig["alpha"]) == ("shifted", "student", 0.05)
    assert set(sig["systems"]) == {"oracle", "twin"}

    qrels = load_dataset(str(ds), "test").qrels
    per_q = {n: evaluate_run(qrels, _load(p), METRICS, per_query=True) for n, p in f.items()}
    for m in METRICS:
        qs = sorted(per_q["shifted"][m])
        a, b = [per_q["oracle"][m][q] for q in qs], [per_q["shifted"][m][q] for q in qs]
        got = sig["systems"]["oracle"][m]
        assert got["p_value"] == pytest.approx(ttest_rel(a, b).pvalue, rel=1e-6)
        assert got["significant"] == (got["p_value"] < 0.05)
        assert got["delta"] == pytest.approx(sum(a) / N - sum(b) / N)
        assert sig["systems"]["twin"][m] == {"p_value": None, "significant": False, "delta": 0.0}

    # the very comparison a pipeline eval writes to its significance.json
    want = significance(qrels, {n: _load(p) for n, p in f.items()}, "shifted", METRICS)
    assert sig["systems"] == json.loads(json.dumps(want))

    table = r.output.split("Against **shifted**", 1)[1]
    p = sig["systems"]["oracle"]["ndcg@10"]["p_value"]
    assert f"| oracle | +{sig['systems']['oracle']['ndcg@10']['delta']:.4f} ({p:.3g}" in table
    assert "| twin | +0.0000 (n/a) | +0.0000 (n/a) |" in table
    # the results files are those of an eval without --baseline
    assert json.loads((tmp_path / "res" / "out.json").read_text())["results"][0]["system"] == "oracle"


def test_baseline_by_path_and_without_baseline_nothing_extra(runs, tmp_path):
    ds, f = runs
    r = invoke(f["oracle"], f["shifted"], "-d", ds, "--metrics", "ndcg@10", "--baseline", f["oracle"])
    assert r.exit_code == 0, r.output
    assert "Against **oracle**" in r.output and "| shifted | -" in r.output
    r = invoke(f["oracle"], f["shifted"], "-d", ds, "--metrics", "ndcg@10", "-o", tmp_path / "plain")
    assert r.exit_code == 0, r.output
    assert "Against" not in r.output
    assert sorted(p.name for p in tmp_path.glob("plain*")) == ["plain.json", "plain.md"]


@pytest.mark.parametrize("systems, baseline, needle", [
    (["oracle", "shifted"], "nope", "--baseline nope: no such system (systems: oracle, shifted)"),
    (["oracle"], "oracle", "--baseline oracle: give at least one other run"),
])
def test_baseline_mistakes_are_clear_errors(runs, systems, baseline, needle):
    ds, f = runs
    r = invoke(*[f[s] for s in systems], "-d", ds, "--baseline", baseline)
    assert isinstance(r.exception, RkdError) and needle in str(r.exception)


def _load(p: Path):
    from retrieval_kd.data.trec import load_trec_run

    return load_trec_run(p)
