"""Generated training queries (retrieval_kd/queries): cleaning, a real generation with the
SmolLM2 GGUF (llama-cpp-python, and a real llama.cpp server), resuming a killed run, the CLI's
errors, and the pipeline's ``queries`` entry (load, plan, keys, run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from retrieval_kd.data.registry import load_dataset
from retrieval_kd.errors import RkdError
from retrieval_kd.queries.clean import CleanRules, Deduper, clean_query
from retrieval_kd.queries.params import QueryGenParams
from tests.beir import write_beir
from tests.test_llm_teacher import llama_server  # noqa: F401 - the real llama.cpp server fixture

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# ------------------------------------------------------------------ cleaning


@pytest.mark.parametrize("raw, finish, want", [
    ("what causes insulin resistance in obese mice", "stop", "what causes insulin resistance in obese mice"),
    ('Sure! Here is a search query that this passage answers: "effects of prematurity on white matter"',
     "stop", "effects of prematurity on white matter"),
    ("The search query for the passage is:\n\nBC1 RNA primes its own reverse transcription", "stop",
     "BC1 RNA primes its own reverse transcription"),
    ("`induction of myelodysplasia by suppressor cells`", "stop", "induction of myelodysplasia by suppressor cells"),
    ("**Search query:** aspirin clotting risk in adults\nmore text", "length", "aspirin clotting risk in adults"),
    ("Query 1: does vitamin D reduce falls?", None, "does vitamin D reduce falls?"),
    ("1. what is the role of p53", None, "what is the role of p53"),
    ("Q:   how   do   statins   work", None, "how do statins work"),
    ("Sure!\n\nhow does aspirin affect clotting", None, "how does aspirin affect clotting"),
])
def test_clean_keeps_the_query(raw, finish, want):
    assert clean_query(raw, CleanRules(), finish) == (want, None)


@pytest.mark.parametrize("raw, finish, reason", [
    ("   \n  ", None, "empty"),
    ("Sure!", None, "empty"),
    ('""', None, "empty"),
    ("Query:", None, "empty"),
    ("What is the passage's purpose?", "stop", "meta"),
    ("What is the question?", "stop", "meta"),
    ("This passage answers the question: what is it about?", "stop", "meta"),
    ("What is the answer to the question: what is the answer to the", "stop", "meta"),
    ("the human myelin basic protein gene is included within a", "length", "truncated"),
    ("aspirin", "stop", "too_short"),
    ("Sure! Here is a search query: aspirin use", "stop", "too_short"),
    (" ".join(["word"] * 33), "stop", "too_long"),
    ("x" * 300 + " y z", "stop", "too_long"),
])
def test_clean_rejects_with_a_reason(raw, finish, reason):
    assert clean_query(raw, CleanRules(), finish) == (None, reason)


def test_clean_bounds_and_duplicates():
    assert clean_query("two words", CleanRules(min_words=2)) == ("two words", None)
    assert clean_query("one two three four", CleanRules(max_words=3)) == (None, "too_long")
    d = Deduper()
    assert not d.seen("What causes scurvy?")
    assert d.seen("what  causes SCURVY") and d.seen("What causes scurvy.")
    assert not d.seen("what prevents scurvy")


def test_params_are_validated():
    base = {"model": "smollm2-135m", "count": 3}
    assert QueryGenParams(**base).template.count("{passage}") == 1
    for bad, needle in [({"count": None}, "exactly one of 'count'"),
                        ({"share": 0.5}, "exactly one of 'count'"),
                        ({"template": "no passage here {title}"}, "must show the passage"),
                        ({"template": "{passage} {query}"}, "{query}"),
                        ({"model": None}, "give 'model'"),
                        ({"split": "../x"}, "not a split name"),
                        ({"min_words": 9, "max_words": 4}, "min_words 9 > max_words 4")]:
        with pytest.raises(ValueError, match=needle.replace("{", r"\{").replace("(", r"\(")):
            QueryGenParams(**{**base, **bad})
    gen = QueryGenParams(**base).generation()
    assert "template" in gen and "seed" in gen
    assert not {"chunk_size", "threads", "base_url", "min_words", "split"} & set(gen)


# ------------------------------------------------------------------ a real generation

N_PASSAGES = 5
PARAMS = {"model": "smollm2-135m", "count": N_PASSAGES, "seed": 7, "max_new_tokens": 20,
          "max_passage_chars": 360, "chunk_size": 2, "threads": 1}  # 1: llama.cpp threads on busy cores crawl


@pytest.fixture(scope="module")
def source(tmp_path_factory, scifact_dir) -> Path:
    """A BEIR folder of 12 real SciFact passages (strictly loadable)."""
    ds = load_dataset(str(scifact_dir), "test")
    docs = list(ds.corpus.docs.items())[:12]
    return write_beir(tmp_path_factory.mktemp("src") / "sci12",
                      [{"_id": did, "title": d.title, "text": d.text} for did, d in docs],
                      [{"_id": "q1", "text": "a human query"}], {"test": [("q1", docs[0][0], 1)]})


class Counting:
    """A backend wrapper counting the passages it generates for; ``fail_after`` chunks it
    raises KeyboardInterrupt (a kill between two chunks)."""

    def __init__(self, inner, fail_after: int | None = None) -> None:
        self.inner, self.fail_after, self.chunks, self.passages = inner, fail_after, 0, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, prompts, seeds):
        if self.fail_after is not None and self.chunks >= self.fail_after:
            raise KeyboardInterrupt
        self.chunks += 1
        self.passages += seeds
        return self.inner.generate(prompts, seeds)


@pytest.fixture(scope="module")
def smollm2(fetched_model):
    from retrieval_kd.queries.backends import LlamaCppBackend

    fetched_model("smollm2-135m")

    b = LlamaCppBackend(QueryGenParams(**PARAMS))
    yield b
    b.close()


@pytest.fixture(scope="module")
def generated(source, smollm2, tmp_path_factory) -> Path:
    from retrieval_kd.queries.generate import generate_queries

    out = tmp_path_factory.mktemp("gen") / "sci12-gq"
    generate_queries(str(source), out, QueryGenParams(**PARAMS), backend=smollm2, progress=False,
                     echo=lambda m: None)
    return out


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_generation_is_a_strict_beir_folder_pointing_at_its_passages(source, generated):
    from retrieval_kd.models.resolve import resolve_model

    ds = load_dataset(str(generated), "train")  # the project's strict loader
    src = load_dataset(str(source), "test")
    assert ds.report.ok and ds.corpus.fingerprint == src.corpus.fingerprint
    rows = [json.loads(x) for x in (generated / "generated.jsonl").read_text().splitlines()]
    assert len(rows) == N_PASSAGES and len({r["docid"] for r in rows}) == N_PASSAGES
    kept = [r for r in rows if r["query"]]
    assert kept, f"no query kept: {rows}"
    assert set(ds.queries.texts) == {f"gq-{r['docid']}" for r in kept}
    for r in kept:
        assert ds.qrels[r["query_id"]] == {r["docid"]: 1}
        assert ds.queries.texts[r["query_id"]] == r["query"] == clean_query(r["raw"], CleanRules(), r["finish"])[0]
    seen = set()
    for r in rows:
        q, why = clean_query(r["raw"], CleanRules(), r["finish"])
        if q is not None and q.casefold().rstrip("?. ") in seen:
            why = "duplicate"
        seen |= {q.casefold().rstrip("?. ")} if q else set()
        assert r["rejected"] == why and (r["query"] is None) == (why is not None)
    man = json.loads((generated / "manifest.json").read_text())
    o = man["outputs"]
    assert o["passages"] == N_PASSAGES and o["kept"] == len(kept)
    assert o["kept"] + sum(o["rejected"].values()) == N_PASSAGES
    assert man["generator"]["model"]["sha256"] == resolve_model("smollm2-135m").sha256
    assert man["generator"]["backend"] == "llama-cpp" and man["generator"]["chat"] is True
    assert man["params"]["template"] == QueryGenParams(**PARAMS).template and man["params"]["seed"] == 7
    assert man["inputs"]["corpus_sha256"] == src.corpus.fingerprint and "llama_cpp_python" in man["versions"]
    assert man["throughput"]["queries_per_s"] > 0
    assert not any(p.name.startswith(".") for p in generated.parent.iterdir())  # work folder removed
    print("smollm2 queries:", [r["query"] or f"<{r['rejected']}> {r['raw']!r}" for r in rows])


@pytest.mark.slow
@pytest.mark.shared_data
def test_killed_run_resumes_without_losing_or_repeating_a_query(source, generated, smollm2, tmp_path):
    from retrieval_kd.queries.generate import generate_queries

    out, work = tmp_path / "gq", tmp_path / ".gq.work"
    params = QueryGenParams(**{**PARAMS, "min_words": 2})  # cleaning may differ: generations are reused
    first = Counting(smollm2, fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        generate_queries(str(source), out, params, backend=first, progress=False, echo=lambda m: None)
    assert not out.exists() and first.chunks == 1
    chunks = sorted((work / "chunks").glob("*.jsonl"))
    assert len(chunks) == 1 and len(chunks[0].read_text().splitlines()) == 2

    again = Counting(smollm2)
    said = []
    generate_queries(str(source), out, params, backend=again, progress=False, echo=said.append)
    assert len(again.passages) == N_PASSAGES - 2 and not set(again.passages) & set(first.passages)
    assert any("resuming: 2 of 5" in m for m in said) and not work.exists()
    rows = [json.loads(x) for x in (out / "generated.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (generated / "generated.jsonl").read_text().splitlines()]
    assert [(r["docid"], r["raw"]) for r in rows] == [(r["docid"], r["raw"]) for r in ref]
    ids = [json.loads(x)["_id"] for x in (out / "queries.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) and set(ids) == set(load_dataset(str(out), "train").qrels)

    # other generation settings: the old chunks are not mixed in
    (work / "chunks").mkdir(parents=True)
    (work / "plan.json").write_text('{"other": 1}')
    (work / "chunks" / "000000.jsonl").write_text(json.dumps({"docid": rows[0]["docid"], "raw": "stale x y"}) + "\n")
    third = Counting(smollm2)
    generate_queries(str(source), tmp_path / "gq2", params, work=work, backend=third, progress=False,
                     echo=lambda m: None)
    assert len(third.passages) == N_PASSAGES
    assert "stale x y" not in (tmp_path / "gq2" / "generated.jsonl").read_text()


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.llm_server
def test_real_llama_cpp_server_backend(source, llama_server, tmp_path):  # noqa: F811
    from retrieval_kd.queries.generate import generate_queries

    base, served = llama_server
    params = QueryGenParams(**{**PARAMS, "model": None, "base_url": base, "count": 3, "concurrency": 2,
                               "min_words": 1})
    man = generate_queries(str(source), tmp_path / "srv", params, progress=False, echo=lambda m: None)
    assert man["generator"] == {"backend": "openai", "model": served, "chat": True}
    assert man["outputs"]["passages"] == 3 and base not in json.dumps(man["params"])
    rows = [json.loads(x) for x in (tmp_path / "srv" / "generated.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["raw"].strip() for r in rows)
    assert all(r["finish"] in ("stop", "length") for r in rows)


# ------------------------------------------------------------------ CLI errors

RKD = [sys.executable, "-m", "retrieval_kd.cli.main"]


def rkd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*RKD, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def one_error(r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert needle in " ".join(lines[0].split()), r.stderr


@pytest.mark.slow
@pytest.mark.shared_data
def test_cli_bad_input_is_one_line_and_leaves_nothing(source, tmp_path):
    before = set(tmp_path.iterdir())
    one_error(rkd("queries", "generate", "-d", str(source), "--model", "no-such-model", "--count", "2",
                  "-o", "out", cwd=tmp_path), "model 'no-such-model': not a registered generator")
    one_error(rkd("queries", "generate", "-d", str(source), "--model", "minilm-l6", "--count", "2",
                  "-o", "out", cwd=tmp_path), "is a sentence-transformer, not a generator")
    bad = write_beir(tmp_path / "bad", [{"_id": "d1", "text": "fine"}, "{oops"], [{"_id": "q1", "text": "x"}],
                     {"test": "q1\td1\t1\n"})
    one_error(rkd("queries", "generate", "-d", str(bad), "--model", "smollm2-135m", "--count", "1",
                  "-o", "out", cwd=tmp_path), "corpus.jsonl:2")
    one_error(rkd("queries", "generate", "-d", str(source), "--model", "smollm2-135m", "-o", "out",
                  cwd=tmp_path), "exactly one of 'count'")
    one_error(rkd("queries", "generate", "-d", str(source), "--model", "smollm2-135m", "--count", "99",
                  "-o", "out", cwd=tmp_path), "count 99 is more than the corpus's 12 passages")
    assert set(tmp_path.iterdir()) == before | {bad}  # no output, no work folder


# ------------------------------------------------------------------ pipeline

PIPE = """\
name: gqp
datasets:
  tiny: {source: tiny}
  tiny-gq: {queries: gq}
queries:
  gq: {dataset: tiny, model: smollm2-135m, count: 12, seed: 3, max_new_tokens: 24, chunk_size: 5}
retrieve:
  bm25: {kind: bm25, dataset: tiny-gq, splits: [train], k: 20}
teachers:
  bm25t:
    dataset: tiny-gq
    splits: [train]
    candidates: bm25
    top_k: 5
    teacher: {kind: bm25, k1: 1.5}
"""
FILTERED = """\
name: gqf
datasets:
  tiny: {source: tiny}
  tiny-gq: {queries: gq}
  tiny-gq-f: {queries: gq, filter: {teacher: bm25t, top_k: 1}}
queries:
  gq: {dataset: tiny, model: smollm2-135m, count: 12, seed: 3}
retrieve:
  bm25: {kind: bm25, dataset: tiny-gq, splits: [train], k: 20}
  bm25f: {kind: bm25, dataset: tiny-gq-f, splits: [train], k: 20}
teachers:
  bm25t: {dataset: tiny-gq, splits: [train], candidates: bm25, top_k: 5, add_positives: true,
          teacher: {kind: bm25, k1: 0.9, b: 0.4}}
"""


def _pipe(tmp_path: Path, text: str = PIPE) -> Path:
    from tests.test_pipeline import write_corpus

    if not (tmp_path / "tiny").exists():
        write_corpus(tmp_path / "tiny")
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_pipeline_queries_entry_loads_plans_and_keys(tmp_path):
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.plan import plan

    lp = load_pipeline(_pipe(tmp_path))
    st = {s.id: s for s in plan(lp)}
    assert list(st) == ["queries:gq", "retrieve:bm25@train", "teacher:bm25t@train"]
    q = st["queries:gq"]
    assert q.kind == "queries" and q.dataset == str((tmp_path / "tiny").resolve())
    assert q.config["params"]["count"] == 12 and q.config["params"]["split"] == "train"
    r = st["retrieve:bm25@train"]
    assert r.inputs == {"@dataset": "queries:gq"} and r.dataset is None and r.config["dataset"] == "queries:gq"
    assert st["teacher:bm25t@train"].inputs == {"candidates": "retrieve:bm25@train", "@dataset": "queries:gq"}

    def keys(text: str) -> dict[str, str]:
        return {s.id: s.key for s in plan(load_pipeline(_pipe(tmp_path, text)))}

    k0 = keys(PIPE)
    templ = keys(PIPE.replace("chunk_size: 5}", "chunk_size: 5, template: 'Doc: {passage}\\nQuery:'}"))
    assert all(templ[s] != k0[s] for s in k0)  # the template is part of every downstream key
    assert keys(PIPE.replace("chunk_size: 5", "chunk_size: 2, threads: 1")) == k0  # runtime knobs
    srv = keys(PIPE.replace("model: smollm2-135m", "model: smollm2-135m, base_url: 'http://127.0.0.1:9'"))
    assert srv["queries:gq"] != k0["queries:gq"]  # a server's model is another generator
    (tmp_path / "tiny" / "corpus.jsonl").write_text((tmp_path / "tiny" / "corpus.jsonl").read_text() + "\n")
    changed = keys(PIPE)
    assert all(changed[s] != k0[s] for s in k0)  # the source dataset's content


def test_pipeline_queries_errors_name_their_lines(tmp_path):
    from retrieval_kd.pipeline.load import PipelineError, load_pipeline

    text = (PIPE.replace("tiny-gq: {queries: gq}", "tiny-gq: {queries: gqx}")
            .replace("model: smollm2-135m", "model: minilm-l6")
            .replace("splits: [train], k: 20", "splits: [train, test], k: 20"))
    with pytest.raises(PipelineError) as e:
        load_pipeline(_pipe(tmp_path, text))
    msgs = {ln: m for ln, m in e.value.problems}
    lines = text.splitlines()
    assert "no queries entry 'gqx'" in msgs[next(i for i, x in enumerate(lines, 1) if "gqx" in x)]
    assert "not a generator" in msgs[next(i for i, x in enumerate(lines, 1) if "minilm-l6" in x)]
    with pytest.raises(PipelineError, match="give exactly one of 'source'"):
        load_pipeline(_pipe(tmp_path, PIPE.replace("{queries: gq}", "{queries: gq, source: tiny}")))
    with pytest.raises(PipelineError, match="exactly one of 'count'"):
        load_pipeline(_pipe(tmp_path, PIPE.replace("count: 12", "count: 12, share: 0.5")))


class FakeBackend:
    """Deterministic stand-in generator: the passage's first words as a question."""

    chat = True

    def __init__(self, params) -> None:
        self.calls = 0

    def identity(self):
        return {"backend": "fake", "model": "first-words"}

    def generate(self, prompts, seeds):
        self.calls += len(prompts)
        return [("what about " + " ".join(p.split()[:4]), "stop") for p in prompts]

    def close(self):
        pass


def test_pipeline_runs_a_generated_dataset_through_later_stages(tmp_path, monkeypatch):
    from retrieval_kd.artifacts import read_json
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.runner import run_stages
    from retrieval_kd.queries import generate as gen_mod

    monkeypatch.setattr(gen_mod, "make_backend", FakeBackend)
    p = _pipe(tmp_path)
    root = tmp_path / "runs"
    rec = run_stages(load_pipeline(p), root, echo=lambda m: None)
    assert {s["id"]: s["status"] for s in rec["stages"]} == {
        "queries:gq": "ran", "retrieve:bm25@train": "ran", "teacher:bm25t@train": "ran"}
    q = next(s for s in rec["stages"] if s["id"] == "queries:gq")
    folder = root / q["dir"] / "gq"
    ds = load_dataset(str(folder), "train")
    assert q["result"]["queries"] == len(ds.queries) > 0 and q["result"]["passages"] == 12
    assert not (root / q["dir"] / "work").exists()
    r = next(s for s in rec["stages"] if s["id"] == "retrieve:bm25@train")
    assert read_json(root / r["dir"] / "stage.json")["config"]["dataset"] == str(folder)
    run = (root / r["dir"] / "run.trec").read_text().split("\n")
    assert {ln.split()[0] for ln in run if ln} == set(ds.queries.texts)
    rec = run_stages(load_pipeline(p), root, echo=lambda m: None)
    assert {s["status"] for s in rec["stages"]} == {"cached"}


def test_filter_keeps_queries_whose_passage_the_run_ranks_high(tmp_path):
    from retrieval_kd.queries.filter import filter_queries, source_rank

    assert source_rank({"a": 1.0, "b": 3.0, "c": 3.0}, "c") == 2 and source_rank({"a": 1.0}, "z") is None
    src = write_beir(tmp_path / "gq", [{"_id": f"d{i}", "text": f"text {i}"} for i in range(4)],
                     [{"_id": f"gq-d{i}", "text": f"query {i}"} for i in range(4)],
                     {"train": "".join(f"gq-d{i}\td{i}\t1\n" for i in range(4))})  # no header line
    run = tmp_path / "run.trec"
    run.write_text("gq-d0 Q0 d0 1 9 t\ngq-d0 Q0 d1 2 5 t\n"     # rank 1: kept
                   "gq-d1 Q0 d0 1 9 t\ngq-d1 Q0 d1 2 5 t\n"     # rank 2: kept with top_k 2
                   "gq-d2 Q0 d0 1 9 t\ngq-d2 Q0 d1 2 5 t\n")    # d2 not a candidate; gq-d3 not ranked
    man = filter_queries(src, "train", run, 1, tmp_path / "f1")
    assert man["outputs"]["kept"] == 1
    assert man["outputs"]["dropped"] == {"not_ranked": 1, "not_in_candidates": 1, "below_top_k": 1}
    ds = load_dataset(str(tmp_path / "f1"), "train")
    assert ds.qrels == {"gq-d0": {"d0": 1}} and list(ds.queries.texts) == ["gq-d0"] and len(ds.corpus) == 4
    filter_queries(src, "train", run, 2, tmp_path / "f2")
    assert load_dataset(str(tmp_path / "f2"), "train").qrels.keys() == {"gq-d0", "gq-d1"}
    (tmp_path / "below.trec").write_text("gq-d0 Q0 d1 1 9 t\ngq-d0 Q0 d0 2 5 t\n")
    with pytest.raises(RkdError, match="no query kept"):
        filter_queries(src, "train", tmp_path / "below.trec", 1, tmp_path / "f0")
    (tmp_path / "other.trec").write_text("x Q0 d0 1 1 t\n")
    with pytest.raises(RkdError, match="a run of another dataset"):
        filter_queries(src, "train", tmp_path / "other.trec", 1, tmp_path / "f0")
    assert not (tmp_path / "f0").exists()


@pytest.mark.slow
def test_pipeline_filtered_dataset_plans_and_runs(tmp_path, monkeypatch):
    from retrieval_kd.pipeline.load import PipelineError, load_pipeline
    from retrieval_kd.pipeline.plan import plan
    from retrieval_kd.pipeline.runner import run_stages
    from retrieval_kd.queries import generate as gen_mod

    p = _pipe(tmp_path, FILTERED)
    st = {s.id: s for s in plan(load_pipeline(p))}
    assert st["filter:tiny-gq-f"].inputs == {"queries": "queries:gq", "teacher": "teacher:bm25t@train"}
    assert st["retrieve:bm25f@train"].inputs == {"@dataset": "filter:tiny-gq-f"}
    wrong = (FILTERED.replace("filter: {teacher: bm25t", "filter: {teacher: bm25u")
             .replace("retrieve:\n", "retrieve:\n  bt: {kind: bm25, dataset: tiny, splits: [train], k: 20}\n")
             + "  bm25u: {dataset: tiny, splits: [train], candidates: bt, teacher: {kind: bm25}}\n")
    for text, needle in [(FILTERED.replace("filter: {teacher: bm25t", "filter: {teacher: nope"), "no teacher 'nope'"),
                         (wrong, "teacher 'bm25u' scores dataset 'tiny'"),
                         (FILTERED.replace("top_k: 1}", "top_k: 0}"), "greater than or equal to 1")]:
        with pytest.raises(PipelineError) as e:
            load_pipeline(_pipe(tmp_path, text))
        line = next(i for i, x in enumerate(text.splitlines(), 1) if x.startswith("  tiny-gq-f"))
        assert any(ln == line and needle in m for ln, m in e.value.problems), e.value.problems

    monkeypatch.setattr(gen_mod, "make_backend", FakeBackend)
    rec = run_stages(load_pipeline(_pipe(tmp_path, FILTERED)), tmp_path / "runs", echo=lambda m: None)
    res = {s["id"]: s.get("result", {}) for s in rec["stages"]}
    assert [s["status"] for s in rec["stages"]] == ["ran"] * 5
    gq, f = res["queries:gq"], res["filter:tiny-gq-f"]
    assert 0 < f["queries"] <= gq["queries"] and f["queries"] + sum(f["dropped"].values()) == gq["queries"]
    d = next(s for s in rec["stages"] if s["id"] == "filter:tiny-gq-f")
    kept = load_dataset(str(tmp_path / "runs" / d["dir"] / "tiny-gq-f"), "train")
    teacher = next(s for s in rec["stages"] if s["id"] == "teacher:bm25t@train")
    from retrieval_kd.data.trec import load_trec_run
    from retrieval_kd.queries.filter import source_rank

    trun = load_trec_run(tmp_path / "runs" / teacher["dir"] / "run.trec")
    for q, judged in kept.qrels.items():
        assert source_rank(trun[q], next(iter(judged))) == 1
