"""SPLADE encoding speed, side by side: retrieval-kd's ``SpladeEncoder`` vs plain ``SparseEncoder``.

One process, the same SciFact documents for every contender, like for like: the plain contender is
``SparseEncoder.encode_document`` with the same 256 tokens and batch size (8) as ours. Ours pools in
one pass (retrieval_kd/models/splade_pooling.py) on each backend asked for. Contenders alternate
in rounds (eval/bench_speed.py's method: warm-up untimed, median over rounds, per CPU-second and per
wall second); each one's nDCG@10 (sparse dot product over the encoded documents, the chosen test
queries) and whether its document vectors equal the plain ones bit for bit.

    python -m eval.bench_splade                       # -> eval/results/bench-splade.{json,md}
    python -m eval.bench_splade --limit-docs 400 --limit-queries 30 --rounds 2 --out /tmp/bsp
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from eval.bench_speed import (
    PLAIN,
    ROOT,
    TOL,
    _f,
    alternate,
    build,
    common_args,
    parse_variants,
    record_head,
    scifact_inputs,
    with_quality,
)

MODEL, LENGTH, BATCH = "splade-tiny", 256, 8


def _csr(m):
    import scipy.sparse as sp

    m = m.coalesce() if m.is_sparse else m.to_sparse().coalesce()
    (r, c), v = m.indices().numpy(), m.values().numpy()
    return sp.csr_matrix((v, (r, c)), shape=tuple(m.shape))


def section(ds, qids: list[str], doc_ids: list[str], rounds: int, variants: list[tuple[str, str]]) -> dict:
    import scipy.sparse as sp
    from sentence_transformers import SparseEncoder

    from retrieval_kd.index.encoders import SpladeEncoder, SpladeParams
    from retrieval_kd.models.load import load_st_model
    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.retrieve.topk import top_k

    ref = resolve_model(MODEL)
    models, failed = build(lambda: load_st_model(SparseEncoder, ref, "the plain baseline", max_seq_length=LENGTH),
                           lambda b, v: SpladeEncoder(ref, SpladeParams(backend=b, variant=v, max_length=LENGTH,
                                                                        batch_size=BATCH)), variants)

    def ours(m):
        def f(t):
            e = m.encode_docs(list(t))
            return sp.csr_matrix((e["data"], e["indices"], e["indptr"]), shape=(len(t), m.vocab))
        return f
    fns = {k: (lambda t, m=m: _csr(m.encode_document(list(t), batch_size=BATCH, convert_to_sparse_tensor=True)))
           if k == PLAIN else ours(m) for k, m in models.items()}
    rates, outs = alternate(fns, [ds.corpus.docs[d].joined() for d in doc_ids], rounds)
    qtexts, runs = [ds.queries.texts[q] for q in qids], {}
    for k, m in models.items():
        if k == PLAIN:
            q = _csr(m.encode_query(qtexts, batch_size=BATCH, convert_to_sparse_tensor=True))
        else:
            reps = m.encode_queries(qtexts)
            q = sp.vstack([sp.csr_matrix((v, (np.zeros(len(i), int), i)), shape=(1, m.vocab)) for i, v in reps])
        scores = (q @ outs[k].T).toarray()
        runs[k] = {}
        for qi, qid in enumerate(qids):
            docs, s = top_k(np.arange(len(doc_ids)), scores[qi], 100)
            runs[k][qid] = {doc_ids[d]: float(x) for d, x in zip(docs, s)}
    rows = with_quality(rates, {q: ds.qrels[q] for q in qids}, runs)
    plain = outs[PLAIN]
    for k, r in rows.items():
        o = outs[k]
        r["max_abs_diff_vs_plain"] = float(abs(o - plain).max()) if o.shape == plain.shape else None
        r["bitwise_equal_to_plain"] = bool(o.shape == plain.shape and (o != plain).nnz == 0)
    return {"docs": len(doc_ids), "queries": len(qids), "rows": rows, "failed": failed,
            "backends": {k: m.backend for k, m in models.items() if k != PLAIN}}


def markdown(res: dict) -> str:
    env, sec, sub = res["environment"], res["splade"], " (subset)" if res["subset"] else ""
    lines = ["# SPLADE encoding: retrieval-kd vs plain SparseEncoder", "",
             f"{env['date']}, git {env['git']}; {env['cpu']}, {env['cores']} cores, {env['threads']} threads; "
             f"{MODEL}, {LENGTH} tokens, batch {BATCH}; {sec['docs']} SciFact docs, {sec['queries']} test "
             f"queries{sub}; {res['rounds']} alternating round(s), median, warm-up excluded.", "",
             "| contender | docs/CPU-s | docs/s (wall) | x plain (CPU) | x plain (wall) | nDCG@10 | "
             f"Δ vs torch fp32 | within {TOL} | max abs diff vs plain | bitwise equal |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for k, r in sec["rows"].items():
        name = "plain (`SparseEncoder.encode_document`, same length and batch)" if k == PLAIN else k
        d = r.get("delta_vs_torch_fp32")
        lines.append(f"| {name} | {_f(r['per_cpu_s'])} | {_f(r['per_wall_s'])} | {r['x_plain_cpu']:.2f} | "
                     f"{r['x_plain_wall']:.2f} | {r['ndcg@10']:.4f} | {'' if d is None else f'{d:+.4f}'} | "
                     f"{'' if d is None else ('yes' if r['within_tol'] else '**no**')} | "
                     f"{_f(r['max_abs_diff_vs_plain'], 7)} | {'yes' if r['bitwise_equal_to_plain'] else 'no'} |")
    lines += [f"| {k} | failed: {msg} |" + " |" * 8 for k, msg in sec["failed"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = common_args(__doc__)
    ap.add_argument("--variants", default="torch:fp32,openvino:fp32", help="backend:variant,... of ours")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "results", help="folder for bench-splade.{json,md}")
    a = ap.parse_args()
    import torch

    from retrieval_kd.artifacts import write_benchmark
    from retrieval_kd.index.stats import peak_rss_mb

    torch.set_num_threads(a.threads)
    ds, qids, doc_ids = scifact_inputs(a)
    variants = parse_variants(ap, a.variants)
    res: dict[str, Any] = record_head(a)
    res["splade"] = section(ds, qids, doc_ids, a.rounds, variants)
    res["peak_rss_mb"] = round(peak_rss_mb())
    print(write_benchmark(a.out / "bench-splade", res, markdown))


if __name__ == "__main__":
    main()
