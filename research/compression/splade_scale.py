"""Revision 15: the teacher scale that puts the store's scores on SPLADE-tiny's own scale.

For every train-minus-dev query of the store: the spread (standard deviation over the query's
candidates) of the init's dot products and of the teacher's scores; the scale is the median of
their ratio. Train data only (the dev queries are left out, no qrels are read).

    python research/compression/splade_scale.py --store STORE [--max-length 128]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "research" / "distillation"))
import seed_study  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "splade-scale.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", required=True)
    ap.add_argument("--init", default="splade-tiny")
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args(argv)

    from sentence_transformers import SparseEncoder

    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.models.load import load_st_model
    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.scores.store import ScoreStore

    store = ScoreStore(Path(args.store))
    scores = store.scores()
    ds = load_dataset("scifact", "train")
    qids = [q for q in ds.queries.ids() if q in scores and not seed_study.is_dev(q)]
    ref = resolve_model(args.init)
    model = load_st_model(SparseEncoder, ref, "the SPLADE init", max_seq_length=args.max_length)
    ratios, s_sd, t_sd = [], [], []
    for q in qids:
        docs = sorted(scores[q])
        if len(docs) < 2:
            continue
        t = np.array([scores[q][d] for d in docs])
        qe = model.encode_query([ds.queries.texts[q]], convert_to_tensor=True).to_dense()
        de = model.encode_document([ds.corpus.docs[d].joined() for d in docs], convert_to_tensor=True).to_dense()
        s = (qe @ de.T).numpy()[0]
        if t.std() > 0:
            ratios.append(float(s.std() / t.std()))
            s_sd.append(float(s.std()))
            t_sd.append(float(t.std()))
    res = {"store": store.manifest["store_id"], "init": ref.ref, "init_sha256": ref.sha256,
           "max_length": args.max_length, "queries": len(ratios),
           "init_spread_median": round(float(np.median(s_sd)), 4),
           "teacher_spread_median": round(float(np.median(t_sd)), 4),
           "teacher_scale": round(float(np.median(ratios)), 3)}
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
