"""Pipeline files: schema and reference errors name the file and the line of the offending key."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest

from retrieval_kd.errors import DataError
from retrieval_kd.pipeline.load import PipelineError, load_pipeline
from retrieval_kd.pipeline.plan import plan
from tests.beir import write_beir

WORDS = ["tumor", "cell", "protein", "gene", "cancer", "risk", "blood", "brain", "study", "effect",
         "patients", "treatment", "disease", "virus", "immune", "dna", "rna", "mouse", "human", "level",
         "response", "drug", "dose", "trial", "clinical", "vaccine", "heart", "lung", "liver", "kidney",
         "bone", "muscle", "skin", "diet", "sleep", "stress", "infection", "antibody", "receptor",
         "enzyme", "hormone"]


def write_corpus(root: Path, n_docs: int = 60, n_queries: int = 24, seed: int = 0,
                 words: list[str] | tuple[str, ...] = tuple(WORDS)) -> Path:
    """A small BEIR folder of random but reproducible texts, with train and test qrels: query q is
    3 words of a random document, judged in train (odd q) or test (even q)."""
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 20))) for _ in range(n_docs)]
    queries, qrels = [], {"train": [], "test": []}
    for q in range(n_queries):
        target = rng.randrange(n_docs)
        queries.append({"_id": f"q{q}", "text": " ".join(rng.sample(docs[target].split(), 3))})
        qrels["train" if q % 2 else "test"].append((f"q{q}", f"d{target}", 1))
    return write_beir(root, ({"_id": f"d{i}", "title": t.split()[0], "text": t} for i, t in enumerate(docs)),
                      queries, qrels)


BASE = """\
name: tiny
datasets:
  tiny: {source: tiny}
retrieve:
  bm25: {kind: bm25, dataset: tiny, splits: [train, test], k: 20}
teachers:
  bm25t:
    dataset: tiny
    splits: [test]
    candidates: bm25
    top_k: 5
    teacher: {kind: bm25, k1: 1.5}
evals:
  test:
    dataset: tiny
    split: test
    baseline: BM25
    systems: {BM25: "retrieve:bm25", rerank: "teacher:bm25t"}
"""


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    write_corpus(tmp_path / "tiny")
    return tmp_path


def write(d: Path, text: str, name: str = "p.yaml") -> Path:
    p = d / name
    p.write_text(textwrap.dedent(text))
    return p


def problems(path: Path) -> list[tuple[int | None, str]]:
    with pytest.raises(PipelineError) as e:
        load_pipeline(path)
    assert str(path) in str(e.value)
    return e.value.problems


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_valid_pipeline_plans_stages_in_dependency_order(base_dir):
    lp = load_pipeline(write(base_dir, BASE))
    ids = [s.id for s in plan(lp)]
    assert ids == ["retrieve:bm25@train", "retrieve:bm25@test", "teacher:bm25t@test", "eval:test"]
    st = {s.id: s for s in plan(lp)}
    assert st["teacher:bm25t@test"].inputs == {"candidates": "retrieve:bm25@test"}
    assert st["eval:test"].inputs == {"BM25": "retrieve:bm25@test", "rerank": "teacher:bm25t@test"}
    assert lp.datasets["tiny"] == str((base_dir / "tiny").resolve())


def test_unknown_key_names_its_line_and_the_allowed_keys(base_dir):
    text = BASE.replace("    top_k: 5\n", "    top_k: 5\n    topk: 7\n")
    probs = problems(write(base_dir, text))
    assert len(probs) == 1
    line, msg = probs[0]
    assert line == line_of(text, "topk: 7")
    assert "teachers.bm25t.topk: unknown key 'topk'" in msg and "top_k" in msg and "candidates" in msg


def test_unknown_key_inside_a_tagged_union_entry(base_dir):
    text = BASE.replace("k: 20}", "k: 20, k3: 1}")
    (line, msg), = problems(write(base_dir, text))
    assert line == line_of(text, "k3: 1")
    assert "unknown key 'k3'" in msg and "k1" in msg  # BM25 fields offered


def test_wrong_type_names_its_line_and_value(base_dir):
    text = BASE.replace("top_k: 5", "top_k: many")
    (line, msg), = problems(write(base_dir, text))
    assert line == line_of(text, "top_k: many")
    assert "teachers.bm25t.top_k" in msg and "integer" in msg and "'many'" in msg


def test_missing_required_key_points_at_its_entry(base_dir):
    text = BASE.replace("    candidates: bm25\n", "")
    (line, msg), = problems(write(base_dir, text))
    assert line == line_of(text, "  bm25t:")
    assert "required key 'candidates' is missing" in msg


def test_several_errors_are_reported_together_in_line_order(base_dir):
    text = BASE.replace("top_k: 5", "top_k: -1").replace("k: 20}", "k: 20, bogus: 1}")
    probs = problems(write(base_dir, text))
    assert [p[0] for p in probs] == sorted([line_of(text, "bogus"), line_of(text, "top_k: -1")])


def test_undefined_dataset_reference(base_dir):
    text = BASE.replace("dataset: tiny, splits", "dataset: tinny, splits")
    (line, msg), = problems(write(base_dir, text))
    assert line == line_of(text, "dataset: tinny")
    assert "no dataset 'tinny'" in msg and "tiny" in msg


def test_missing_dataset_source(base_dir):
    text = BASE.replace("source: tiny", "source: not-here")
    (line, msg), = problems(write(base_dir, text))
    assert line == line_of(text, "source: not-here")
    assert "neither registered" in msg and "nor a directory" in msg


def test_split_the_dataset_lacks(base_dir):
    text = BASE.replace("splits: [train, test], k: 20", "splits: [train, dev], k: 20")
    probs = problems(write(base_dir, text))
    assert any(ln == line_of(text, "splits: [train, dev]") and "no split 'dev'" in m for ln, m in probs)


def test_missing_model(base_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = BASE.replace("teacher: {kind: bm25, k1: 1.5}", "teacher: {kind: cross-encoder, model: no-such-model}")
    (line, msg), = problems(write(base_dir, text))
    assert line == line_of(text, "no-such-model")
    assert "model 'no-such-model'" in msg and "minilm-l6" in msg
    text = BASE.replace("teacher: {kind: bm25, k1: 1.5}", "teacher: {kind: cross-encoder, model: org/absent}")
    (line, msg), = problems(write(base_dir, text))
    assert "not in the Hugging Face cache" in msg


def test_missing_model_inside_an_ensemble(base_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = BASE.replace("teacher: {kind: bm25, k1: 1.5}", textwrap.dedent("""\
        teacher:
              kind: ensemble
              members:
                - teacher: {kind: bm25}
                - teacher: {kind: splade, model: ghost-model}
                  weight: 0.5"""))
    (line, msg), = problems(write(base_dir, text))
    assert line == line_of(text, "ghost-model")
    assert "teachers.bm25t.teacher.members.1.teacher.model" in msg


def test_bad_eval_references(base_dir):
    text = BASE.replace('rerank: "teacher:bm25t"', 'rerank: "teacher:nope", x: "bm25", y: "retrieve:bm25"')
    text = text.replace("split: test\n    baseline: BM25", "split: test\n    baseline: Nope")
    probs = problems(write(base_dir, text))
    msgs = " | ".join(m for _, m in probs)
    assert "no teacher entry 'nope'" in msgs and "'bm25' is not a system reference" in msgs
    assert "baseline 'Nope' is not one of the systems" in msgs
    assert line_of(text, "baseline: Nope") in [ln for ln, _ in probs]


def test_run_reference_without_the_split(base_dir):
    text = BASE.replace("splits: [test]\n    candidates", "splits: [test, train]\n    candidates")
    text = text.replace("splits: [train, test], k: 20", "splits: [test], k: 20")
    (line, msg), = problems(write(base_dir, text))
    assert line == line_of(text, "candidates: bm25")
    assert "has no split 'train'" in msg


def test_student_references(base_dir):
    text = BASE + textwrap.dedent("""\
        students:
          s1: {family: bi-encoder, init: minilm-l6, dataset: tiny, split: train, teacher: bm25t}
          s2: {family: bi-encoder, init: "student:s3", dataset: tiny, candidates: bm25}
        """)
    probs = problems(write(base_dir, text))
    msgs = {ln: m for ln, m in probs}
    assert "does not score tiny/train" in msgs[line_of(text, "s1:")]
    assert "no student 's3'" in msgs[line_of(text, "s2:")]
    text = BASE + "students:\n  s2: {family: rocket, init: minilm-l6, dataset: tiny}\n"
    (line, msg), = problems(write(base_dir, text))
    assert line == line_of(text, "s2:") and "students.s2.family" in msg and "'rocket'" in msg


def test_dependency_cycle_is_an_error(base_dir):
    text = BASE.replace("splits: [test]\n    candidates", "splits: [train, test]\n    candidates")
    text = text.replace("teacher: {kind: bm25, k1: 1.5}", "teacher: {kind: bi-encoder, model: 'student:s'}")
    text += textwrap.dedent("""\
        students:
          s: {family: bi-encoder, init: minilm-l6, dataset: tiny, split: train, teacher: bm25t}
        """)
    lp = load_pipeline(write(base_dir, text))
    with pytest.raises(PipelineError, match="dependency cycle: .*student:s.*teacher:bm25t@train"):
        plan(lp)


def test_yaml_syntax_error_and_duplicate_keys(base_dir):
    with pytest.raises(DataError) as e:
        load_pipeline(write(base_dir, BASE.replace("k: 20}", "k: 20")))
    assert e.value.line is not None and "invalid YAML" in str(e.value)
    text = BASE.replace("evals:", "retrieve: {}\nevals:")
    with pytest.raises(DataError) as e:
        load_pipeline(write(base_dir, text))
    assert e.value.line == line_of(text, "retrieve: {}") and "duplicate key 'retrieve'" in str(e.value)


def test_shipped_pipelines_parse():
    root = Path(__file__).resolve().parents[1] / "pipelines"
    files = sorted(root.glob("*.yaml"))
    assert files, "no pipelines/*.yaml"
    for f in files:
        lp = load_pipeline(f, check_sources=False)
        assert plan(lp)
