"""The cross-lingual students of ``pipelines/xquad-r.yaml``: nDCG@10 per language and the mean
over the X->en languages, each system's per-query scores averaged over its seeds, and paired
t-tests over the (language, question) pairs (research/crosslingual/PLAN.md's decision rule).

Reads a finished run's record (``runs/xquad-r/run.json`` by default): every eval stage whose
dataset is ``xquad-r:<q>-en``; the systems are the eval's own (their run files, seed by seed).

    rkd run pipelines/xquad-r.yaml && python -m eval.xling_student   # -> eval/results/xling-student.{json,md}
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import read_json, write_benchmark
from retrieval_kd.data.registry import load_dataset
from retrieval_kd.data.trec import load_trec_run
from retrieval_kd.eval.compare import paired_test, seed_summary
from retrieval_kd.eval.metrics import evaluate_run
from retrieval_kd.pipeline.adapters import run_file_of

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "eval" / "results" / "xling-student"
METRIC = "ndcg@10"


def per_query(run_root: Path, stage: dict[str, Any]) -> tuple[str, dict[str, list[dict[str, float]]]]:
    """An eval stage's dataset and, per system, per seed: ``{qid: nDCG@10}``."""
    d = run_root / stage["dir"]
    rec = read_json(d / "stage.json")
    cfg = rec["config"]
    ds = load_dataset(cfg["dataset"], cfg["split"])
    out: dict[str, list[dict[str, float]]] = {}
    for name, inp in rec["inputs"].items():
        system = name.split("#")[0]
        run = load_trec_run(run_file_of(run_root / "stages" / inp["dir"]))
        scores = evaluate_run(ds.qrels, run, [METRIC], per_query=True)[METRIC]
        out.setdefault(system, []).append(scores)
    return cfg["dataset"], out


def averaged(seeds: list[dict[str, float]]) -> dict[str, float]:
    return {q: sum(s[q] for s in seeds) / len(seeds) for q in seeds[0]}


def collect(run_root: Path, baseline: str) -> dict[str, Any]:
    run = read_json(run_root / "run.json")
    langs: dict[str, dict[str, Any]] = {}
    pooled: dict[str, dict[str, float]] = {}  # system -> "lang|qid" -> seed-averaged score (X->en only)
    for st in run["stages"]:
        if st["kind"] != "eval" or st["status"] not in ("ran", "cached"):
            continue
        dataset, systems = per_query(run_root, st)
        lang = dataset.split(":", 1)[-1]
        row: dict[str, Any] = {}
        for name, seeds in systems.items():
            row[name] = seed_summary([sum(s.values()) / len(s) for s in seeds])
            if lang != "en-en":
                pooled.setdefault(name, {}).update({f"{lang}|{q}": v for q, v in averaged(seeds).items()})
        row["n_queries"] = len(next(iter(systems.values()))[0])
        langs[lang] = row
    x_langs = sorted(lg for lg in langs if lg != "en-en")
    mean = {name: sum(langs[lg][name]["mean"] for lg in x_langs) / len(x_langs) for name in pooled}
    tests = {name: paired_test(pooled[name], pooled[baseline]) for name in pooled if name != baseline}
    for name in [n for n in pooled if n.startswith("distilled")]:
        for other in ("init", "label-only"):
            if other in pooled:
                tests[f"{name} vs {other}"] = paired_test(pooled[name], pooled[other])
    return {"run": str(run_root), "pipeline": run.get("pipeline"), "metric": METRIC, "baseline": baseline,
            "languages": langs, "x_en_languages": x_langs, "x_en_mean": mean, "paired_tests": tests}


def markdown(r: dict[str, Any]) -> str:
    systems = list(r["x_en_mean"])
    lines = ["# Cross-lingual students on XQuAD-R (held-out questions)", "",
             f"{r['metric']} per language, mean over seeds (± sd); run `{r['run']}`. Questions of odd "
             "articles (`heldout`), 240 English paragraphs; the students trained on the even articles "
             "(`pipelines/xquad-r.yaml` says on what); the decision rule is "
             "research/crosslingual/PLAN.md's.", "",
             "| query language | n | " + " | ".join(systems) + " |",
             "|---|---:|" + "---:|" * len(systems)]

    def cell(s: dict[str, Any]) -> str:
        return f"{s['mean']:.4f}" + (f" ± {s['sd']:.4f}" if s.get("sd") is not None else "")

    for lg in [*r["x_en_languages"], *(["en-en"] if "en-en" in r["languages"] else [])]:
        row = r["languages"][lg]
        lines.append(f"| {lg} | {row['n_queries']} | " + " | ".join(cell(row[s]) for s in systems) + " |")
    lines.append(f"| **mean of {len(r['x_en_languages'])} X->en** | | "
                 + " | ".join(f"**{r['x_en_mean'][s]:.4f}**" for s in systems) + " |")
    lines += ["", "Paired t-tests over the (language, question) pairs of the X->en languages, on "
              "seed-averaged per-query scores:", "", "| comparison | delta | p | pairs |", "|---|---:|---:|---:|"]
    for name, t in r["paired_tests"].items():
        label = name if " vs " in name else f"{name} vs {r['baseline']}"
        p = "n/a" if t["p_value"] is None else f"{t['p_value']:.3g}"
        lines.append(f"| {label} | {t['delta']:+.4f} | {p} | {t['n_queries']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "xquad-r", help="the pipeline's run folder")
    ap.add_argument("--baseline", default="MiniLM (English)", help="the system every other is tested against")
    ap.add_argument("--out", type=Path, default=OUT, help="output path without suffix")
    a = ap.parse_args()
    print(write_benchmark(a.out, collect(a.run, a.baseline), markdown,
                          note="research/crosslingual/PLAN.md holds the decision rule, written before the numbers"))


if __name__ == "__main__":
    main()
