"""The cross-encoder teacher in bfloat16: ours (OpenVINO bf16) against plain ``CrossEncoder.predict``
with bfloat16 weights, and where OpenVINO's time goes, per operator (research/speed/FINDINGS.md,
"The cross-encoder in bf16").

    python research/speed/ce_bf16.py compare          # one process, contenders alternating, 2 rounds
    python research/speed/ce_bf16.py ops 16 384       # per-operator times at batch 16 x 384 tokens
    python research/speed/ce_bf16.py ops 16 384 --snippets DISABLE   # attention not fused
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def teacher():
    from eval.bench_score import make_cross_encoder
    from retrieval_kd.teachers.cross_encoder import CrossEncoderTeacher

    path = str(make_cross_encoder())  # the bench's stand-in: MiniLM-L6 body, seeded 1-logit head
    return path, CrossEncoderTeacher(path, max_length=512, dtype="float32", threads=2,
                                     backend="openvino", variant="bf16")


def compare() -> None:
    import torch
    from sentence_transformers import CrossEncoder

    from eval.bench_speed import PLAIN, alternate, bm25_pairs
    from retrieval_kd.data.registry import load_dataset

    ds = load_dataset("scifact", "test")
    pairs, _ = bm25_pairs(ds, sorted(ds.qrels)[:20])  # the bench's subset
    path, ours = teacher()
    plain = CrossEncoder(path, model_kwargs={"dtype": torch.bfloat16})
    fns = {PLAIN: lambda ps: plain.predict([(p.query, p.passage) for p in ps],
                                                  activation_fn=torch.nn.Identity(), show_progress_bar=False),
           "rkd openvino bf16": ours.score}
    rates, _ = alternate(fns, pairs, 2)
    for k, r in rates.items():  # PLAIN: the plain library with bfloat16 weights here
        print(f"{k}{' bf16' if k == PLAIN else ''}: {r['per_wall_s']:.1f} pairs/s (wall), "
              f"{r['per_cpu_s']:.1f} per CPU-s, x plain bf16 {r['x_plain_cpu']:.2f} (CPU) / {r['x_plain_wall']:.2f} (wall)")


def ops(batch: int, length: int, snippets: str | None) -> None:
    import numpy as np
    import openvino as ov

    from retrieval_kd.models.backends import exports_dir

    teacher()  # makes the fp32 export if it is not cached
    onnx = max(exports_dir().glob("*sequence-classification-fp32*/*.onnx"), key=lambda p: p.stat().st_mtime)
    cfg = {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "bf16", "PERF_COUNT": True,
           **({"SNIPPETS_MODE": snippets} if snippets else {})}
    cm = ov.Core().compile_model(ov.Core().read_model(str(onnx)), "CPU", cfg)
    rq = cm.create_infer_request()
    feeds = {p.get_any_name(): np.full((batch, length), 0 if "type" in p.get_any_name() else 1, dtype=np.int64)
             for p in cm.inputs}
    for _ in range(2):
        rq.infer(feeds)
    t0 = time.perf_counter()
    for _ in range(5):
        rq.infer(feeds)
    dt = (time.perf_counter() - t0) / 5
    print(f"batch {batch} x {length} tokens: {1e3 * dt:.1f} ms, {batch / dt:.1f} sequences/s")
    agg, cnt = collections.Counter(), collections.Counter()
    for p in rq.profiling_info:  # the last request's
        agg[p.node_type, p.exec_type] += p.real_time.total_seconds()
        cnt[p.node_type, p.exec_type] += 1
    tot = sum(agg.values())
    for k, v in agg.most_common(12):
        print(f"{1e3 * v:8.2f} ms {100 * v / tot:5.1f}%  x{cnt[k]}  {k[0]} ({k[1]})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("compare", help="ours vs plain, bf16, one process")
    o = sub.add_parser("ops", help="OpenVINO bf16 time per operator")
    o.add_argument("batch", type=int)
    o.add_argument("length", type=int)
    o.add_argument("--snippets", choices=("ENABLE", "DISABLE"), help="OpenVINO's SNIPPETS_MODE")
    args = ap.parse_args()
    if args.cmd == "ops" and not (0 < args.batch and 0 < args.length <= 512):
        ap.error("batch must be above 0 and length between 1 and 512")
    compare() if args.cmd == "compare" else ops(args.batch, args.length, args.snippets)


if __name__ == "__main__":
    main()
