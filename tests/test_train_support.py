"""Fixtures for the ``rkd train`` tests: a tiny BEIR split, a real score store, tiny students.

The store is filled by the real ``score_into_store`` with a cheap deterministic teacher (word
overlap), over candidates ranked by the same overlap, so every test runs in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.beir import random_beir
from tests.tiny_models import WORDS
from tests.tiny_models import build_tiny_bert as tiny_bert
from tests.tiny_models import build_tiny_st as tiny_st

CONTENT = [w for w in WORDS if len(w) > 3]
N_DOCS, N_QUERIES = 30, 12
TRAIN_BEIR = {"n_docs": N_DOCS, "n_queries": N_QUERIES, "words": CONTENT, "doc_words": 8, "distinct": True,
              "query_words": 3, "split": "train"}
"""The tiny split (:func:`tests.beir.random_beir`): ``qrels/train.tsv``; query i is the first 3 of doc i's 8 words."""


def overlap(query: str, passage: str, docid: str) -> float:
    """Shared words, with a small per-document tie-break so rankings are total."""
    shared = len(set(query.split()) & set(passage.split()))
    return float(shared) + (sum(map(ord, docid)) % 97) / 1000.0


def make_store(root: Path, ds_dir: Path, top_k: int = 25) -> Path:
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.scores.candidates import build_candidates
    from retrieval_kd.scores.store import score_into_store
    from retrieval_kd.teachers.base import Teacher

    class OverlapTeacher(Teacher):
        def identity(self) -> dict[str, Any]:
            return {"kind": "test-overlap"}

        def score(self, pairs):
            return np.array([overlap(p.query, p.passage, p.docid) for p in pairs], dtype=np.float64)

    ds = load_dataset(str(ds_dir), "train")
    run = {q: {d: overlap(text, doc.joined(), d) for d, doc in ds.corpus.docs.items()}
           for q, text in ds.queries.texts.items()}
    cands = build_candidates(ds, run, top_k, add_positives=True)
    store = score_into_store(ds, cands, OverlapTeacher, {"kind": "test-overlap"}, root, chunk_size=50)
    return store.path


def write_run(path: Path, ds_dir: Path) -> Path:
    """The overlap ranking as a TREC run (for the label-only baseline without a store)."""
    from retrieval_kd.data.registry import load_dataset

    ds = load_dataset(str(ds_dir), "train")
    lines = []
    for q, text in ds.queries.texts.items():
        scored = sorted(((overlap(text, d.joined(), i), i) for i, d in ds.corpus.docs.items()), reverse=True)
        lines += [f"{q} Q0 {i} {r} {s:.6f} overlap" for r, (s, i) in enumerate(scored, 1)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def train_env(tmp_path_factory) -> dict[str, Path]:
    """The tiny split, its score store and one tiny initial model per family."""
    root = tmp_path_factory.mktemp("train-env")
    ds_dir = random_beir(root / "tinyds", **TRAIN_BEIR)
    return {
        "root": root,
        "dataset": ds_dir,
        "store": make_store(root / "scores", ds_dir),
        "bi-encoder": tiny_st(root / "st"),
        "splade": tiny_bert(root / "mlm", masked_lm=True),
        "colbert": tiny_bert(root / "bert"),
        "cross-encoder": root / "bert",
    }


def tiny_config(env: dict[str, Path], family: str, out: Path, **kw):
    from retrieval_kd.train.config import TrainConfig

    base: dict[str, Any] = {
        "family": family, "init": str(env[family]), "scores": [env["store"]], "dataset": str(env["dataset"]),
        "split": "train", "losses": "kl", "kl_passages": 4, "negatives": 3, "rank_window": (2, 25),
        "filter_margin": 0.5, "batch_size": 4, "max_steps": 2, "lr": 1e-3, "warmup": 0.0,
        "max_length": 32, "colbert_dim": 16, "save_steps": 1000, "logging_steps": 1, "output": out}
    base.update(kw)
    return TrainConfig(**base)


def test_fixture_store_is_complete_and_has_ranks(train_env):
    from transformers import AutoTokenizer

    from retrieval_kd.scores.store import ScoreStore

    tok = AutoTokenizer.from_pretrained(str(train_env["colbert"]))
    assert tok.unk_token_id not in tok("cell protein")["input_ids"]

    s = ScoreStore(train_env["store"])
    t = s.table()
    assert s.complete and t.num_rows == N_QUERIES * 25
    assert min(r for r in t.column("rank").to_pylist() if r is not None) == 1
