"""Students trained with several seeds (``seeds:``) and the per-family comparison (``families:``):
stage ids, the eval's mean / sd / per-seed values and paired test, families.json, the report's
family table, load errors, and unchanged keys for pipelines without seeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval_kd.artifacts import read_json
from retrieval_kd.data.registry import load_dataset
from retrieval_kd.data.trec import load_trec_run
from retrieval_kd.eval.compare import PAIRED_TEST, gap_closed, paired_test
from retrieval_kd.eval.metrics import evaluate_run
from retrieval_kd.pipeline.load import PipelineError, load_pipeline
from retrieval_kd.pipeline.plan import plan, select
from retrieval_kd.pipeline.runner import run_stages
from retrieval_kd.report import collect, verify, write_report
from tests.test_pipeline import write_corpus
from tests.tiny_pipeline import make_env, run_quietly

TRAIN = "{max_steps: 2, batch_size: 4, max_length: 32, rank_window: [2, 15], warmup: 0.0, logging_steps: 1, lr: 0.05"
METRICS = ["ndcg@10", "mrr@10", "recall@100"]

PIPE = f"""\
name: seeds
datasets:
  tiny: {{source: tiny}}
retrieve:
  bm25: {{kind: bm25, dataset: tiny, splits: [train, test], k: 30}}
teachers:
  t: {{dataset: tiny, splits: [train], candidates: bm25, top_k: 15, add_positives: true,
       teacher: {{kind: bm25, k1: 1.2}}}}
  t-rerank: {{dataset: tiny, splits: [test], candidates: bm25, top_k: 15, teacher: {{kind: bm25, k1: 1.2}}}}
students:
  kd:
    family: bi-encoder
    init: models/st
    dataset: tiny
    teacher: t
    loss: margin-mse
    params: {TRAIN}, negatives: 2}}
    seeds: [1, 2]
  labels:
    family: bi-encoder
    init: models/st
    dataset: tiny
    candidates: bm25
    params: {TRAIN}, negatives: 2, candidates_top_k: 15}}
    seeds: [1, 2]
indexes:
  init: {{model: models/st, family: bi-encoder, dataset: tiny, search: {{splits: [test], k: 20}}}}
  kd: {{student: kd, dataset: tiny, search: {{splits: [test], k: 20}}}}
  labels: {{student: labels, dataset: tiny, search: {{splits: [test], k: 20}}}}
evals:
  test:
    dataset: tiny
    split: test
    baseline: BM25
    systems: {{BM25: "retrieve:bm25", teacher: "teacher:t-rerank", init: "index:init",
               twin: "index:labels", distilled: "index:kd"}}
    families:
      dense (tiny):
        regime: "labels available; random-weight tiny student"
        init: init
        twin: twin
        distilled: distilled
        teacher: teacher
"""



def per_query(qrels, runs, metric):
    """The metric per judged query averaged over ``runs``, recomputed here with evaluate_run."""
    acc: dict[str, float] = {}
    for run in runs:
        for q, v in evaluate_run(qrels, run, [metric], per_query=True)[metric].items():
            acc[q] = acc.get(q, 0.0) + v / len(runs)
    return acc

@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Path:
    return make_env(tmp_path_factory.mktemp("seeds"), PIPE)


@pytest.fixture(scope="module")
def run_root(env) -> Path:
    return run_quietly(env)


def _stages(rec: dict) -> dict[str, dict]:
    return {s["id"]: s for s in rec["stages"]}


def test_seeded_students_plan_one_stage_per_seed(env):
    stages = plan(load_pipeline(env / "p.yaml"))
    ids = [s.id for s in stages]
    assert [i for i in ids if i.startswith(("student:", "index:", "search:"))] == [
        "student:kd#s1", "student:kd#s2", "student:labels#s1", "student:labels#s2",
        "index:init", "search:init@test",
        "index:kd#s1", "search:kd@test#s1", "index:kd#s2", "search:kd@test#s2",
        "index:labels#s1", "search:labels@test#s1", "index:labels#s2", "search:labels@test#s2"]
    by = {s.id: s for s in stages}
    assert by["student:kd#s1"].config["params"]["seed"] == 1 and by["student:kd#s2"].config["params"]["seed"] == 2
    assert by["student:kd#s1"].key != by["student:kd#s2"].key
    assert by["index:kd#s2"].inputs == {"student": "student:kd#s2"}
    assert by["eval:test"].inputs["distilled#s1"] == "search:kd@test#s1"
    assert by["eval:test"].inputs["init"] == "search:init@test"
    assert by["eval:test"].config["seeds"] == {"twin": [1, 2], "distilled": [1, 2]}
    assert "#" not in by["student:kd#s1"].dirname
    assert [s.id for s in select(stages, ["student:kd"]) if s.kind == "train"] == ["student:kd#s1", "student:kd#s2"]
    assert [s.id for s in select(stages, ["student:kd#s2"]) if s.kind == "train"] == ["student:kd#s2"]
    assert [s.id for s in select(stages, ["search:kd@test"]) if s.kind == "search"] == [
        "search:kd@test#s1", "search:kd@test#s2"]


@pytest.mark.slow
def test_seeded_run_evaluates_every_seed_and_caches(env, run_root):
    rec = read_json(run_root / "run.json")
    st = _stages(rec)
    assert {s["status"] for s in rec["stages"]} == {"ran"}
    for seed in (1, 2):
        man = read_json(run_root / st[f"student:kd#s{seed}"]["dir"] / "model" / "manifest.json")
        assert man["params"]["seed"] == seed
    weights = [(run_root / st[f"student:kd#s{s}"]["dir"] / "model" / "model.safetensors").read_bytes() for s in (1, 2)]
    assert weights[0] != weights[1]  # the seed changes the training, not just the key
    n_params = st["student:kd#s1"]["result"]["parameters"]
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(run_root / st["student:kd#s1"]["dir"] / "model"), device="cpu")
    assert n_params == sum(p.numel() for p in model.parameters())  # read from safetensors headers
    assert st["index:kd#s1"]["result"]["parameters"] == n_params
    assert st["search:kd@test#s1"]["result"]["parameters"] == n_params
    assert st["index:init"]["result"]["parameters"] == n_params  # same architecture as its init
    assert st["teacher:t-rerank@test"]["result"]["parameters"] == 0  # BM25

    ev = run_root / st["eval:test"]["dir"]
    results = {r["system"]: r for r in read_json(ev / "results.json")["results"]}
    ds = load_dataset(str(env / "tiny"), "test")
    runs = {n: [load_trec_run(run_root / st[f"search:{e}@test#s{s}"]["dir"] / "run.trec") for s in (1, 2)]
            for n, e in (("distilled", "kd"), ("twin", "labels"))}
    fam = read_json(ev / "families.json")
    f = fam["families"]["dense (tiny)"]
    for name, rs in runs.items():
        per_seed = [evaluate_run(ds.qrels, r, METRICS) for r in rs]
        for m in METRICS:
            mean = (per_seed[0][m] + per_seed[1][m]) / 2
            assert f["roles"][name]["metrics"][m]["mean"] == pytest.approx(mean, abs=1e-12)
            assert f["roles"][name]["metrics"][m]["per_seed"] == pytest.approx([p[m] for p in per_seed])
            assert results[name]["metrics"][m] == round(mean, 4)
            assert results[name]["seeds"]["per_seed"][m] == [round(p[m], 4) for p in per_seed]
        assert results[name]["seeds"]["seeds"] == [1, 2]
    lat = [st[f"search:kd@test#s{s}"]["result"]["latency_ms_per_query"] for s in (1, 2)]
    assert f["roles"]["distilled"]["latency_ms_per_query"] == pytest.approx(sum(lat) / 2, abs=1e-3)
    assert f["roles"]["distilled"]["parameters"] == n_params and f["roles"]["teacher"]["parameters"] == 0

    assert fam["test"] == PAIRED_TEST
    for m in METRICS:
        want = paired_test(per_query(ds.qrels, runs["distilled"], m), per_query(ds.qrels, runs["twin"], m))
        got = f["distilled_vs_twin"][m]
        assert got["delta"] == pytest.approx(want["delta"]) and got["p_value"] == want["p_value"]
        means = {r: f["roles"][r]["metrics"][m]["mean"] for r in ("init", "distilled", "teacher")}
        assert f["gap_closed"][m] == gap_closed(means["init"], means["distilled"], means["teacher"])
    assert any(f["gap_closed"][m] is not None for m in METRICS)

    sig = read_json(ev / "significance.json")
    assert sig["test"] == PAIRED_TEST
    base = per_query(ds.qrels, [load_trec_run(run_root / st["retrieve:bm25@test"]["dir"] / "run.trec")], "ndcg@10")
    want = paired_test(per_query(ds.qrels, runs["distilled"], "ndcg@10"), base)
    assert sig["systems"]["distilled"]["ndcg@10"]["p_value"] == want["p_value"]

    again = run_stages(load_pipeline(env / "p.yaml"), run_root, echo=lambda _m: None)
    assert {s["status"] for s in again["stages"]} == {"cached"}


@pytest.mark.slow
def test_report_shows_seeds_and_the_family_table(run_root):
    paths = write_report(run_root)
    md = paths["markdown"].read_text()
    html = paths["html"].read_text()
    assert "### Students by family" in md and "<h3>Students by family</h3>" in html
    row = next(ln for ln in md.splitlines() if ln.startswith("| dense (tiny) |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "labels available; random-weight tiny student"
    assert cells[3].endswith("(2 seeds)") and "±" in cells[3] and cells[2].count("seed") == 0
    assert cells[6].startswith(("+", "-")) and "(p " in cells[6]
    assert cells[9] == "0"  # BM25 teacher
    assert PAIRED_TEST in md
    distilled = next(ln for ln in md.splitlines() if ln.startswith("| distilled |"))
    assert "(2 seeds)" in distilled
    rep = collect(run_root)
    assert verify(rep) == 5 * 3 + 4 * 3


def test_seed_load_errors_name_file_and_line(env):
    def problems(text: str) -> list[tuple[int | None, str]]:
        p = env / "bad.yaml"
        p.write_text(text)
        with pytest.raises(PipelineError) as e:
            load_pipeline(p)
        assert str(p) in str(e.value)
        return e.value.problems

    def line_of(text: str, needle: str, nth: int = 0) -> int:
        return [i for i, ln in enumerate(text.splitlines(), 1) if needle in ln][nth]

    text = PIPE.replace("negatives: 2}\n    seeds: [1, 2]\n  labels", "negatives: 2, seed: 3}\n    seeds: [1, 2]\n  labels")
    assert text != PIPE
    (line, msg), = problems(text)
    assert line == line_of(text, "seeds: [1, 2]") and "students.kd.seeds" in msg and "params.seed" in msg

    text = PIPE.replace("        twin: twin\n", "        twin: label-only\n")
    assert text != PIPE
    (line, msg), = problems(text)
    assert line == line_of(text, "twin: label-only") and "'label-only' is not one of the systems" in msg

    text = PIPE.replace("seeds: [1, 2]\n  labels", "seeds: [1, 1]\n  labels")
    assert text != PIPE
    (line, msg), = problems(text)
    assert line == line_of(text, "seeds: [1, 1]") and "unique" in msg

    text = PIPE.replace("teacher: {kind: bm25, k1: 1.2}}\nstudents",
                        "teacher: {kind: bi-encoder, model: 'student:kd'}}\nstudents")
    assert text != PIPE
    (line, msg), = problems(text)
    assert line == line_of(text, "'student:kd'") and "which seed" in msg

    text = PIPE.replace("    baseline: BM25\n", "    baseline: BM25\n    stat_test: fisher\n")
    assert text != PIPE
    (line, msg), = problems(text)
    assert line == line_of(text, "stat_test: fisher") and PAIRED_TEST in msg


SEEDED_RERANKER = """\
name: rr
datasets:
  tiny: {source: tiny}
retrieve:
  bm25: {kind: bm25, dataset: tiny, splits: [train, test], k: 20}
teachers:
  t: {dataset: tiny, splits: [train], candidates: bm25, top_k: 5, teacher: {kind: bm25}}
students:
  ce: {family: cross-encoder, init: minilm-l6, dataset: tiny, teacher: t, seeds: [7, 8]}
  ce2: {family: cross-encoder, init: "student:ce", dataset: tiny, teacher: t, seeds: [7, 8]}
rerankers:
  ce: {dataset: tiny, splits: [test], candidates: bm25, top_k: 5,
       teacher: {kind: ensemble, members: [{teacher: {kind: bm25}}, {teacher: {kind: cross-encoder, model: "student:ce"}}]}}
evals:
  test: {dataset: tiny, split: test, systems: {BM25: "retrieve:bm25", ce: "reranker:ce"}}
"""


def test_a_reranker_of_a_seeded_student_is_one_stage_per_seed(tmp_path):
    write_corpus(tmp_path / "tiny")
    (tmp_path / "p.yaml").write_text(SEEDED_RERANKER)
    by = {s.id: s for s in plan(load_pipeline(tmp_path / "p.yaml", check_sources=False))}
    assert by["reranker:ce@test#s8"].inputs == {"candidates": "retrieve:bm25@test", "model:ce": "student:ce#s8"}
    assert "reranker:ce@test" not in by
    assert by["student:ce2#s7"].inputs["init"] == "student:ce#s7"
    assert by["eval:test"].inputs == {"BM25": "retrieve:bm25@test", "ce#s7": "reranker:ce@test#s7",
                                      "ce#s8": "reranker:ce@test#s8"}
    (tmp_path / "p.yaml").write_text(SEEDED_RERANKER.replace("seeds: [7, 8]}\nrerankers", "seeds: [9]}\nrerankers"))
    with pytest.raises(PipelineError, match=r"students.ce2.init: 'student:ce' is trained with seeds \[7, 8\]"):
        load_pipeline(tmp_path / "p.yaml", check_sources=False)


# Keys the code before ``seeds`` gave this pipeline (no seeds anywhere): they must not change.
UNSEEDED = """\
name: keys
datasets:
  tiny: {source: tiny}
retrieve:
  bm25: {kind: bm25, dataset: tiny, splits: [train, test], k: 20}
teachers:
  t: {dataset: tiny, splits: [train, test], candidates: bm25, top_k: 5, teacher: {kind: bm25, k1: 1.5}}
students:
  kd: {family: bi-encoder, init: minilm-l6, dataset: tiny, teacher: t, loss: margin-mse, params: {max_steps: 2, seed: 7}}
  labels: {family: bi-encoder, init: minilm-l6, dataset: tiny, candidates: bm25, params: {max_steps: 2}}
  ce: {family: cross-encoder, init: minilm-l6, dataset: tiny, teacher: t, loss: margin-mse}
rerankers:
  ce: {dataset: tiny, splits: [test], candidates: bm25, top_k: 5,
       teacher: {kind: cross-encoder, model: "student:ce"}}
indexes:
  kd: {student: kd, dataset: tiny, search: {splits: [test], k: 10}}
  labels: {student: labels, dataset: tiny, search: {splits: [test], k: 10}}
  sp: {model: splade-tiny, family: splade, dataset: tiny, search: {splits: [test], k: 10}}
evals:
  test:
    dataset: tiny
    split: test
    baseline: BM25
    systems: {BM25: "retrieve:bm25", teacher: "teacher:t", kd: "index:kd", labels: "index:labels",
              sp: "index:sp", ce: "reranker:ce"}
"""
# the train stage kind's version 2 (bi-encoder losses score with the model's similarity) changed
# every student's key and those downstream of it; nothing else
UNSEEDED_KEYS = {
    "retrieve:bm25@train": "39926ad137ab175d", "retrieve:bm25@test": "d2a5255702cca39b",
    "teacher:t@train": "21cc487c98fdb053", "teacher:t@test": "11a72f22174b81d0",
    "student:kd": "3da8c8344259d071", "student:labels": "34357de8382bcdf3", "student:ce": "8cfa10ee0b6c630d",
    "reranker:ce@test": "47416be0685bca2b", "index:kd": "40aed2a2a11cd2d0", "search:kd@test": "602e2d8d80edb48e",
    "index:labels": "50c572e9783b9d2c", "search:labels@test": "e2c53d32835a49ba", "index:sp": "a7a99e5c1771e75b",
    "search:sp@test": "5734f8525d7065d6", "eval:test": "508e28e799dd529f"}


def test_pipelines_without_seeds_keep_their_stage_ids_and_keys(tmp_path):
    write_corpus(tmp_path / "tiny")
    (tmp_path / "p.yaml").write_text(UNSEEDED)
    stages = plan(load_pipeline(tmp_path / "p.yaml", check_sources=False))
    assert {s.id: s.key for s in stages} == UNSEEDED_KEYS
