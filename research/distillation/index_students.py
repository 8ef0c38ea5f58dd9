"""Index and search every trained student family from the CLI (issue 5 acceptance 1).

For each student that ``research/distillation/bench_distill.py`` trained (bi-encoder, SPLADE, ColBERT; the
cross-encoder is a reranker and has no index), run exactly what a user runs::

    rkd index dense|splade|colbert --dataset scifact --model <student> ...
    rkd search <index> --dataset scifact --split test
    rkd eval <run> --dataset scifact --split test

and compare the nDCG@10 through the index with the student's exact-search nDCG@10 from
research/distillation/results/bench-distill.json (same model, same token limits). Build time, index size,
peak memory, query latency p50/p95 and QPS come from the index and search manifests.
Results: research/distillation/results/index-students.{json,md}.

    python research/distillation/index_students.py             # students from runs/bench-distill/models/
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "results"
WORK = ROOT / "runs" / "index-students"

# (bench-distill row, index variant, `rkd index` arguments after the family)
VARIANTS: list[tuple[str, str, list[str]]] = [
    ("bi-encoder/kl+infonce", "flat", ["dense", "--index", "flat", "--max-seq-length", "256"]),
    ("bi-encoder/kl+infonce", "hnsw", ["dense", "--index", "hnsw", "--max-seq-length", "256"]),
    ("bi-encoder/kl+infonce", "ivfpq", ["dense", "--index", "ivfpq", "--max-seq-length", "256"]),
    ("splade/kl", "inverted", ["splade", "--max-seq-length", "256"]),
    ("colbert/kl", "flat tokens + MaxSim", ["colbert", "--cand-index", "flat", "--query-length", "32",
                                            "--document-length", "256"]),
    ("colbert/kl", "ivfpq tokens + MaxSim", ["colbert", "--cand-index", "ivfpq", "--query-length", "32",
                                             "--document-length", "256"]),
]


def rkd(*args: str) -> None:
    print("$ rkd " + " ".join(args), flush=True)
    subprocess.run(["rkd", *args], check=True, cwd=ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=str(ROOT / "runs" / "bench-distill" / "models"))
    ap.add_argument("--out", default=str(OUT / "index-students"))
    a = ap.parse_args()
    bench = json.loads((OUT / "bench-distill.json").read_text())
    exact = {r["row"]: r for r in bench["rows"]}
    rows = []
    for row, variant, args in VARIANTS:
        model = Path(a.models) / row.replace("/", "--")
        if not (model / "manifest.json").is_file():
            sys.exit(f"{model}: no trained student; run `python research/distillation/bench_distill.py --rows {row}` first")
        slug = f"{row.replace('/', '--')}--{variant.split()[0]}"
        index, run = WORK / "indexes" / slug, WORK / "runs" / slug
        # one encoding per student, shared by its index variants
        work = ["--work-dir", str(WORK / "work" / row.replace("/", "--")), "--keep-work"]
        if not (index / "manifest.json").is_file():
            rkd("index", *args, "--dataset", "scifact", "--model", str(model), "--out", str(index), *work)
        if not (run / "manifest.json").is_file():
            rkd("search", str(index), "--dataset", "scifact", "--split", "test", "--k", "100", "--out", str(run))
        rkd("eval", str(run), "--dataset", "scifact", "--split", "test", "--out", str(run / "eval"))
        ev = json.loads((run / "eval.json").read_text())
        metrics = ev["results"][0]["metrics"]
        im = json.loads((index / "manifest.json").read_text())
        sm = json.loads((run / "manifest.json").read_text())
        lat = sm["stats"]["latency"]
        ex = exact[row]["metrics"]["ndcg@10"]
        rows.append({
            "student": row, "index": variant, "model": str(model.relative_to(ROOT)),
            "ndcg@10": round(metrics["ndcg@10"], 4), "exact_ndcg@10": ex,
            "delta_vs_exact": round(metrics["ndcg@10"] - ex, 4),
            "recall@100": round(metrics.get("recall@100", float("nan")), 4),
            "build_s": round(im["timings_s"].get("total_s", 0.0), 1),
            "index_mb": round(im["stats"].get("index_bytes", im["stats"].get("bytes_on_disk", 0)) / 2**20, 2),
            "peak_rss_mb": round(sm["stats"].get("peak_rss_mb", 0.0)),
            "p50_ms": lat["p50_ms"], "p95_ms": lat["p95_ms"], "qps": round(lat["qps"], 1),
            "qps_with_encoding": round(sm["stats"].get("qps_with_encoding", 0.0), 1),
            "flops": sm["stats"].get("flops"), "avg_postings": sm["stats"].get("avg_postings"),
            "commands": [f"rkd index {' '.join(args)} --dataset scifact --model {model.relative_to(ROOT)}",
                         "rkd search <index> --dataset scifact --split test --k 100"],
        })
        print(f"{row:24s} {variant:22s} nDCG@10 {metrics['ndcg@10']:.4f} (exact {ex:.4f})", flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from retrieval_kd.artifacts import atomic_write_text, library_versions, write_json

    write_json(out.with_suffix(".json"), {"benchmark": "index-students", "dataset": "scifact/test",
                                          "versions": library_versions(), "rows": rows})
    md = ["# Trained students through `rkd index` / `rkd search` (SciFact test)", "",
          "Each student from research/distillation/bench_distill.py indexed and searched with the CLI, evaluated with "
          "`rkd eval`; `exact` is the same student's exact search in bench-distill (full corpus, same "
          "token limits). Latency: search only (query encoding excluded), one query at a time, one "
          "thread; `QPS enc.` includes encoding the query. `python research/distillation/index_students.py` reproduces it.", "",
          "| student | index | nDCG@10 | exact | Δ | R@100 | build s | index MB | p50 ms | p95 ms | QPS | QPS enc. |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['student']} | {r['index']} | {r['ndcg@10']:.4f} | {r['exact_ndcg@10']:.4f} | "
                  f"{r['delta_vs_exact']:+.4f} | {r['recall@100']:.4f} | {r['build_s']} | {r['index_mb']} | "
                  f"{r['p50_ms']} | {r['p95_ms']} | {r['qps']} | {r['qps_with_encoding']} |")
    md += ["", "Build s: the first index of a student includes encoding the corpus; its other variants "
           "reuse the encoded chunks (`--work-dir ... --keep-work`), so theirs is the index build alone."]
    md.append("ColBERT: candidates are the documents owning the 32 nearest document tokens of each "
              "query token (`--k-token`), rescored by exact MaxSim; the gap to exact search (MaxSim over "
              "every document) is what candidate generation misses. Dense IVF-PQ runs at its default "
              "nprobe and PQ size (see eval/results/bench-index.md for the recall/speed trade-off).")
    for r in rows:
        if r["flops"] is not None:
            md.append(f"SPLADE ({r['student']}): FLOPS {r['flops']:.2f} (expected multiply-adds per query-document "
                      f"pair, as in the SPLADE papers), {r['avg_postings']:.0f} postings read per query.")
    md.append("")
    atomic_write_text(out.with_suffix(".md"), "\n".join(md))
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
