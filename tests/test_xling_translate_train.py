"""Translate-Distill in training: XQuAD-R's train/heldout splits, ``translate_groups``, and a
pipeline student trained on another dataset's queries joined by id (tiny random-weight model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from retrieval_kd.artifacts import read_json
from retrieval_kd.data.registry import load_dataset
from retrieval_kd.errors import NotFoundError
from retrieval_kd.pipeline.load import PipelineError, load_pipeline
from retrieval_kd.pipeline.plan import plan
from retrieval_kd.pipeline.runner import run_stages
from retrieval_kd.settings import DATA_HOME_ENV
from retrieval_kd.train.examples import Cand
from retrieval_kd.xling.translate import IdMismatchError, translate_groups
from retrieval_kd.xling.xquad_r import load_xquad_r
from tests.test_pipeline import write_corpus
from tests.test_xling_data import para
from tests.tiny_models import WORDS, build_tiny_st


def two_articles(root: Path) -> Path:
    """en and de files with two articles: article 0 (q1, q2) and article 1 (q3)."""
    root.mkdir(parents=True, exist_ok=True)
    texts = {"en": (["Cats purr.", "Dogs bark."], ["What do cats do?", "Do cats purr?", "What do dogs do?"]),
             "de": (["Katzen schnurren.", "Hunde bellen."], ["Was tun Katzen?", "Schnurren Katzen?", "Was tun Hunde?"])}
    for lang, (ctx, qs) in texts.items():
        doc = {"version": "1.1", "data": [
            {"title": "A", "paragraphs": [para(ctx[0], [ctx[0]], [("q1", qs[0], 0), ("q2", qs[1], 0)])]},
            {"title": "B", "paragraphs": [para(ctx[1], [ctx[1]], [("q3", qs[2], 0)])]}]}
        (root / f"{lang}.json").write_text(json.dumps(doc, ensure_ascii=False))
    return root


def test_xquad_r_splits_by_article(tmp_path):
    root = two_articles(tmp_path / "xquad-r")
    split = {s: load_xquad_r("de", "en", root=root, split=s) for s in ("test", "train", "heldout")}
    assert sorted(split["test"].queries.texts) == ["q1", "q2", "q3"]
    assert sorted(split["train"].queries.texts) == ["q1", "q2"] and split["train"].split == "train"
    assert split["heldout"].queries.texts == {"q3": "Was tun Hunde?"}
    assert split["heldout"].qrels == {"q3": {"en_01_00": 1}}
    assert all(d.corpus.ids() == ["en_00_00", "en_01_00"] for d in split.values())  # the whole pool
    with pytest.raises(NotFoundError, match="no split 'dev'"):
        load_xquad_r("de", "en", root=root, split="dev")


def test_registry_xquad_r_splits_and_lareqa_test_only(tmp_path, monkeypatch):
    two_articles(tmp_path / "xquad-r")
    monkeypatch.setenv(DATA_HOME_ENV, str(tmp_path))
    assert list(load_dataset("xquad-r:de-en", "heldout").queries.texts) == ["q3"]
    with pytest.raises(NotFoundError, match="only the split 'test'"):
        load_dataset("xquad-r:lareqa-de", "train")


def test_translate_groups_repeats_each_scored_query_per_language(tmp_path):
    root = two_articles(tmp_path / "xquad-r")
    en, de = (load_xquad_r(q, "en", root=root, split="train") for q in ("en", "de"))
    groups = {"q1": [Cand("en_00_00", 2.0, 1), Cand("en_01_00", 1.0, 2)], "q2": [Cand("en_00_00", 3.0, 1)]}
    ds, out = translate_groups(en, groups, [de, en])
    assert ds.queries.texts == {"q1@xquad-r:de-en": "Was tun Katzen?", "q2@xquad-r:de-en": "Schnurren Katzen?",
                                "q1@xquad-r:en-en": "What do cats do?", "q2@xquad-r:en-en": "Do cats purr?"}
    assert out["q1@xquad-r:de-en"] == groups["q1"] and len(out) == 4
    assert ds.qrels["q2@xquad-r:de-en"] == {"en_00_00": 1} and ds.corpus is en.corpus
    heldout = load_xquad_r("de", "en", root=root, split="heldout")
    with pytest.raises(IdMismatchError, match=r"no query in xquad-r:de-en/heldout.*q1, q2"):
        translate_groups(en, groups, [heldout])


PIPE = """\
name: translate
datasets:
  tiny: {source: tiny}
  tiny-x: {source: tiny-x}
retrieve:
  bm25: {kind: bm25, dataset: tiny, splits: [train], k: 20}
teachers:
  t: {dataset: tiny, splits: [train], candidates: bm25, top_k: 10, add_positives: true,
      teacher: {kind: bm25, k1: 1.2}}
students:
  kd: {family: bi-encoder, init: models/st, dataset: tiny, teacher: t, loss: kl, translate: [tiny-x, tiny],
       params: {max_steps: 2, batch_size: 4, max_length: 32, kl_passages: 3, rank_window: [2, 10], warmup: 0.0}}
  labels: {family: bi-encoder, init: models/st, dataset: tiny, candidates: bm25, translate: [tiny-x],
           params: {max_steps: 2, batch_size: 4, max_length: 32, negatives: 2, rank_window: [2, 10], warmup: 0.0}}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("translate")
    write_corpus(d / "tiny", n_docs=30, n_queries=20, words=WORDS)
    shutil.copytree(d / "tiny", d / "tiny-x")  # the "other language": every query's words reversed
    q = d / "tiny-x" / "queries.jsonl"
    rows = [json.loads(line) for line in q.read_text().splitlines()]
    q.write_text("".join(json.dumps({**r, "text": " ".join(reversed(r["text"].split()))}) + "\n" for r in rows))
    build_tiny_st(d / "models" / "st")
    (d / "p.yaml").write_text(PIPE)
    return d


@pytest.mark.slow
def test_pipeline_students_train_on_translated_queries(env):
    rec = run_stages(load_pipeline(env / "p.yaml"), env / "runs", echo=lambda _m: None)
    by_id = {s["id"]: s for s in rec["stages"]}
    for name, targets, copies in (("kd", ["tiny-x", "tiny"], 2), ("labels", ["tiny-x"], 1)):
        s = by_id[f"student:{name}"]
        m = read_json(env / "runs" / s["dir"] / s["result"]["model"] / "manifest.json")
        assert [Path(t["dataset"]).name for t in m["inputs"]["translated_queries"]] == targets
        assert m["params"]["translate"] and m["examples"]["queries"] == copies * 10
    # the translated dataset's content is part of the student's key: edit a query, the key moves
    before = {s.id: s.key for s in plan(load_pipeline(env / "p.yaml"))}
    q = env / "tiny-x" / "queries.jsonl"
    q.write_text(q.read_text().replace('"text": "', '"text": "changed ', 1))
    after = {s.id: s.key for s in plan(load_pipeline(env / "p.yaml"))}
    assert before["student:kd"] != after["student:kd"] and before["retrieve:bm25@train"] == after["retrieve:bm25@train"]


def test_pipeline_translate_names_a_known_dataset_with_the_split(env, tmp_path):
    bad = PIPE.replace("translate: [tiny-x, tiny]", "translate: [tiny-x, nope]")
    (tmp_path / "p.yaml").write_text(bad)
    for sub in ("tiny", "tiny-x", "models"):
        (tmp_path / sub).symlink_to(env / sub)
    with pytest.raises(PipelineError) as e:
        load_pipeline(tmp_path / "p.yaml")
    assert "p.yaml:11: students.kd.translate.1: no dataset 'nope' (datasets: tiny, tiny-x)" in str(e.value)
