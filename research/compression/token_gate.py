"""PLAN.md revision 14's gate: MaxSim over all-MiniLM-L6-v2's own token vectors, reranking BM25's
top-20 of the 158 SciFact dev queries, at 384-d and cut to the 128 principal axes of the corpus's
token vectors (the targets a ColBERT student would learn).

    python research/compression/token_gate.py    # -> research/compression/results/token-gate.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "research" / "distillation"))
OUT = ROOT / "research" / "compression" / "results" / "token-gate.json"
TWIN_DEV = 0.6368  # ColBERT twin, dev, revision 13


def token_vectors(model, texts: list[str], max_length: int) -> list[np.ndarray]:
    """Normalised token vectors per text, [CLS], [SEP] and padding left out."""
    model.max_seq_length = max_length
    out = model.encode(texts, output_value="token_embeddings", batch_size=32, convert_to_numpy=False)
    vecs = []
    for t in out:
        v = t.float().numpy()[1:-1]  # [CLS] first, [SEP] last (no padding in per-text outputs)
        vecs.append(v / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-12))
    return vecs


def main() -> None:
    import bench_distill as bench  # research/distillation
    import seed_study
    from sentence_transformers import SentenceTransformer

    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.data.trec import load_trec_run
    from retrieval_kd.eval.metrics import evaluate_run
    from retrieval_kd.models.resolve import resolve_model

    t0 = time.time()
    dev = seed_study.dev_split()
    corpus = load_dataset(bench.DATASET, "train").corpus
    run = load_trec_run(bench.bm25_run("train", 1000) / "run.trec")
    top = {q: sorted(run[q], key=lambda d: -run[q][d])[:20] for q in dev.queries.ids()}
    docs = sorted(corpus.docs)  # every corpus document: the principal axes are the corpus tokens'
    model = SentenceTransformer(resolve_model("minilm-l6").location, local_files_only=True)
    dvec = dict(zip(docs, token_vectors(model, [corpus.docs[d].joined() for d in docs], 128)))
    qvec = dict(zip(dev.queries.ids(), token_vectors(model, [dev.queries.texts[q] for q in dev.queries.ids()], 32)))
    # the principal axes of the corpus's token vectors
    flat = np.concatenate(list(dvec.values())).astype(np.float64)
    mean = flat.mean(axis=0)
    centred = flat - mean
    vals, vecs = np.linalg.eigh(centred.T @ centred)  # the principal axes, largest variance last
    axes = vecs[:, ::-1][:, :128].T

    def cut(v: np.ndarray) -> np.ndarray:
        w = (v - mean) @ axes.T
        return w / np.linalg.norm(w, axis=1, keepdims=True).clip(1e-12)

    result = {}
    for name, f in (("minilm-tokens-384", lambda v: v), ("minilm-tokens-pca128", cut)):
        scores = {q: {d: float((f(qvec[q]) @ f(dvec[d]).T).max(axis=1).sum()) for d in top[q]} for q in top}
        result[name] = float(evaluate_run(dev.qrels, scores, ["ndcg@10"])["ndcg@10"])
    result["bm25-order"] = float(evaluate_run(dev.qrels, {q: {d: -i for i, d in enumerate(top[q])} for q in top},
                                              ["ndcg@10"])["ndcg@10"])
    passes = result["minilm-tokens-pca128"] >= TWIN_DEV - 0.02
    record = {"plan": "research/compression/PLAN.md revision 14 (gate)", "dev_queries": len(top),
              "docs": len(docs), "ndcg@10": result, "colbert_twin_dev": TWIN_DEV, "gate_passes": passes,
              "seconds": round(time.time() - t0, 1)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
