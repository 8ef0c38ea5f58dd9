"""Run a system over a suite: the stages through the pipeline runner (its stage cache), then one
table of the suite's metric per dataset, the average, and the published numbers beside ours.

The stages are those of a pipeline generated for the locally available datasets (written to
``<out>/pipeline.yaml`` by the runner): a retrieve / index+search / reranker stage per dataset
split, each under ``<out>/stages/<id>-<key>/`` with a key over the dataset's files, the model
and every setting, so a second run, or a run of another system into the same folder, reuses
what is done. Datasets without a local copy are not run: the table lists them with the folder
looked in, the files missing there and the download sources.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from retrieval_kd.artifacts import now_iso
from retrieval_kd.bench.suites import Row, Suite, Unit, suite_rows
from retrieval_kd.bench.system import BenchSystem
from retrieval_kd.data.registry import cited_sources
from retrieval_kd.errors import RkdError

XOR_METRIC_PREFIX, XOR_METRIC_SUFFIX = "R@", "kt"


def default_out(suite: str) -> Path:
    return Path("runs") / "bench" / suite


def alias(unit: Unit) -> str:
    """A pipeline entry name for a unit's dataset (letters, digits and ``_ . + -``)."""
    return unit.source.replace(":", ".")


def pipeline_doc(suite: Suite, system: BenchSystem, rows: list[Row]) -> tuple[dict[str, Any], dict[Unit, str]]:
    """The generated pipeline (as a mapping) and, per unit, the id of the stage holding its run."""
    doc: dict[str, Any] = {"name": f"bench-{suite.name}",
                           "description": f"rkd bench {suite.name}: {system.label()}", "datasets": {}}
    splits: dict[str, list[str]] = {}
    for row in rows:
        for u in row.units:
            doc["datasets"][alias(u)] = {"source": u.source}
            splits.setdefault(alias(u), [])
            if u.split not in splits[alias(u)]:
                splits[alias(u)].append(u.split)
    prefix = "retrieve"
    for name, ss in splits.items():
        entries, prefix = system.entries(name, ss)
        for section, items in entries.items():
            doc.setdefault(section, {}).update(items)
    stage_of = {u: f"{prefix}:{alias(u)}@{u.split}" for row in rows for u in row.units}
    return doc, stage_of


def run_suite(suite: Suite, system: BenchSystem, out: Path, *, echo: Callable[[str], None] = print,
              tokenizer: str | None = None) -> dict[str, Any]:
    """Run ``system`` on every locally available dataset of ``suite`` (stages cached under
    ``out``) and return the benchmark record (rows, averages, references, provenance)."""
    from retrieval_kd.pipeline.load import PipelineError, load_pipeline
    from retrieval_kd.pipeline.runner import run_stages

    rows = suite_rows(suite)
    ready = [r for r in rows if r.available]
    out = Path(out)
    stages: dict[Unit, Path] = {}
    record: dict[str, Any] | None = None
    if ready:
        doc, stage_of = pipeline_doc(suite, system, ready)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=".bench-", dir=out, delete=False,
                                         encoding="utf-8") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
            path = Path(f.name)
        try:
            try:
                lp = load_pipeline(path)
            except PipelineError as e:  # the generated file is ours: say what the user asked that is wrong
                problems = [re.sub(r"^.*?\.yaml:\d+: \S+: ", "", line) for line in str(e).splitlines()]
                raise RkdError("; ".join(dict.fromkeys(problems))) from None
            record = run_stages(lp, out, echo=echo)
        finally:
            path.unlink(missing_ok=True)
        dirs = {e["id"]: Path(record["root"]) / e["dir"] for e in record["stages"]}
        stages = {u: dirs[sid] for u, sid in stage_of.items()}
    return bench_record(suite, system, rows, stages, out, record, tokenizer)


def bench_record(suite: Suite, system: BenchSystem, rows: list[Row], stages: dict[Unit, Path], out: Path,
                 record: dict[str, Any] | None = None, tokenizer: str | None = None) -> dict[str, Any]:
    """The benchmark record of ``rows`` from the stage folders holding each available unit's run."""
    results = [_row_result(r, stages, system, tokenizer) for r in rows]
    return {
        "suite": suite.name, "description": " ".join(suite.description.split()),
        "system": {**system.model_dump(), "label": system.label(), "reference_key": system.reference_key,
                   "model_provenance": _model_provenance(system)},
        "out": str(out), "created": now_iso(),
        "rows": results, "average": _averages(results),
        "sources": {k: v for k, v in cited_sources().items()
                    if any(ref["source"] == k for r in results for ref in r.get("references", []))},
        "run_record": {"status": record.get("status"), "totals": record.get("totals")} if record else None,
    }


def _model_provenance(system: BenchSystem) -> dict[str, Any]:
    from retrieval_kd.models.resolve import resolve_model

    out = {}
    for role, ref in (("model", system.model), ("reranker", system.reranker)):
        if ref:
            try:
                out[role] = resolve_model(ref).provenance()
            except RkdError as e:  # still reported: the stages would have failed first
                out[role] = {"ref": ref, "error": str(e)}
    return out


def is_xor_metric(metric: str) -> bool:
    return metric.upper().startswith(XOR_METRIC_PREFIX) and metric.lower().endswith(XOR_METRIC_SUFFIX)


def _evaluate_unit(row: Row, unit: Unit, stage: Path, tokenizer: str | None) -> dict[str, Any]:
    """The row's metrics on one unit's run, and what identifies the data and the run."""
    from retrieval_kd.artifacts import sha256_file
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.data.trec import load_trec_run
    from retrieval_kd.eval.metrics import evaluate_run
    from retrieval_kd.pipeline.adapters import run_file_of, stage_result

    run_file = run_file_of(stage)
    run = load_trec_run(run_file)
    ds = load_dataset(unit.source, unit.split)
    ranx_metrics = [m for m in row.metrics if not is_xor_metric(m)]
    values: dict[str, float] = {}
    extra: dict[str, Any] = {}
    if ranx_metrics:
        values.update(evaluate_run(ds.qrels, run, ranx_metrics,
                                   ignore_identical_ids=row.spec.protocol.ignore_identical_ids,
                                   relevance_level=ds.relevance_level))
    if xor := [m for m in row.metrics if is_xor_metric(m)]:
        extra["xor"] = _xor_recall(row, unit, run, ds, xor, tokenizer)
        values.update({m: extra["xor"][m]["macro"] for m in xor})
    return {"source": unit.source, "split": unit.split, "metrics": values, "dataset": ds.protocol(),
            "run": {"stage": stage.name, "file": str(run_file), "sha256": sha256_file(run_file),
                    "queries": len(run),
                    **{k: v for k, v in stage_result(stage).items()
                       if k in ("backend", "parameters", "latency_ms_per_query", "latency_note")}},
            **extra}


def _xor_recall(row: Row, unit: Unit, run, ds, metrics: list[str], tokenizer: str | None) -> dict[str, Any]:
    """XOR-TyDi's R@Nkt (retrieval_kd/xling/xor_tydi.py): the official tokenizer (NLTK) when it is
    installed, else whitespace tokens (then said, as the numbers are not comparable)."""
    from retrieval_kd.data.xor import xor_questions
    from retrieval_kd.xling.xor_tydi import contexts_from_run, evaluate_xor_retrieve, get_tokenizer

    if tokenizer is None:
        try:
            get_tokenizer("nltk")
            tokenizer = "nltk"
        except RkdError:
            tokenizer = "whitespace"
    kts = [int(m[len(XOR_METRIC_PREFIX):-len(XOR_METRIC_SUFFIX)]) for m in metrics]
    res = evaluate_xor_retrieve(xor_questions(row.spec.local_dir(), unit.split), contexts_from_run(run, ds.corpus),
                                kts, tokenizer=tokenizer)  # type: ignore[arg-type]
    return {m: r.as_dict() for m, r in zip(metrics, res.values())}


def _row_result(row: Row, stages: dict[Unit, Path], system: BenchSystem, tokenizer: str | None) -> dict[str, Any]:
    base = {"dataset": row.label, "split": row.split, "metrics_reported": row.metrics,
            "ignore_identical_ids": row.spec.protocol.ignore_identical_ids}
    if not row.available:
        return {**base, "status": "not available", **row.where()}
    units = [_evaluate_unit(row, u, stages[u], tokenizer) for u in row.units]
    values = {m: sum(u["metrics"][m] for u in units) / len(units) for m in row.metrics}
    refs = []
    if key := system.reference_key:
        for r in row.references(key):
            ours = values.get(r.metric)
            refs.append({"label": r.label, "metric": r.metric, "value": round(r.value, 4), "source": r.source,
                         "delta": None if ours is None else round(ours - r.value, 4)})
    return {**base, "status": "ran", "metrics": values,
            **({"averaged_over": [u["source"] for u in units]} if row.average_of_subsets else {}),
            "units": units, "references": refs}


def _averages(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric: the mean over the rows run, and each reference label's mean over the same rows
    when every one of them has it."""
    ran = [r for r in results if r["status"] == "ran"]
    out = {}
    for m in dict.fromkeys(m for r in ran for m in r["metrics_reported"]):
        rows = [r for r in ran if m in r["metrics"]]
        refs = {}
        for label in dict.fromkeys(x["label"] for r in rows for x in r["references"] if x["metric"] == m):
            vals = [next((x["value"] for x in r["references"] if x["label"] == label and x["metric"] == m), None)
                    for r in rows]
            if None not in vals:
                refs[label] = round(sum(vals) / len(vals), 4)
        mean = sum(r["metrics"][m] for r in rows) / len(rows)
        out[m] = {"mean": mean, "datasets": [r["dataset"] for r in rows], "n": len(rows),
                  "of": sum(m in r["metrics_reported"] for r in results),
                  "references": {k: {"value": v, "delta": round(mean - v, 4)} for k, v in refs.items()}}
    return out


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def markdown(result: dict[str, Any]) -> str:
    """The suite's table: ours, the published numbers and the differences, the average, then the
    datasets not run with where they were looked for, and the sources of the numbers."""
    rows = result["rows"]
    ran = [r for r in rows if r["status"] == "ran"]
    sys_ = result["system"]
    backends = sorted({u["run"]["backend"] for r in ran for u in r["units"] if u["run"].get("backend")})
    lines = [f"**rkd bench {result['suite']}**: {sys_['label']}"
             + (f", backend {', '.join(backends)}" if backends else "")
             + f"; {len(ran)} of {len(rows)} datasets available locally and run ({result['created']}).", "",
             result["description"], "",
             "| dataset | split | metric | ours | published | Δ (ours − published) |",
             "|---|---|---|---:|---|---:|"]
    for r in ran:
        for m in r["metrics_reported"]:
            refs = [x for x in r["references"] if x["metric"] == m]
            pub = "; ".join(f"{x['value']:.4f} {x['label']} [{x['source']}]" for x in refs) or "-"
            delta = " / ".join(_fmt(x["delta"], True) for x in refs) or "-"
            name = r["dataset"] + (f" (mean of {len(r['averaged_over'])})" if r.get("averaged_over") else "")
            lines.append(f"| {name} | {r['split']} | {m} | {_fmt(r['metrics'][m])} | {pub} | {delta} |")
    for m, a in result["average"].items():
        pub = "; ".join(f"{v['value']:.4f} {k}" for k, v in a["references"].items()) or "-"
        delta = " / ".join(_fmt(v["delta"], True) for v in a["references"].values()) or "-"
        lines.append(f"| **average** ({a['n']} of {a['of']}) | | {m} | **{_fmt(a['mean'])}** | {pub} | {delta} |")
    xor = [(r, u) for r in ran for u in r["units"] if "xor" in u]
    for r, u in xor:
        for m, x in u["xor"].items():
            per = ", ".join(f"{lang} {v['recall']:.4f}" for lang, v in x["per_lang"].items())
            lines += ["", f"{r['dataset']} {m} per language (tokenizer {x['tokenizer']}"
                      + ("; not comparable with published numbers, which use NLTK" if x["tokenizer"] != "nltk" else "")
                      + f"): {per}"]
    missing = [r for r in rows if r["status"] != "ran"]
    if missing:
        lines += ["", f"Not available locally, not run ({len(missing)}):", "",
                  "| dataset | split | looked in | missing there | download sources |", "|---|---|---|---|---|"]
        for r in missing:
            lacks = "; ".join(f"{k}: {', '.join(v)}" if k else ", ".join(v) for k, v in r["missing"].items())
            lines.append(f"| {r['dataset']} | {r['split']} | {r['local']} | {lacks} | {'; '.join(r['sources'])} |")
    if result["sources"]:
        lines += ["", "Sources of the published numbers:", ""]
        lines += [f"- `{k}`: {v}" for k, v in result["sources"].items()]
    return "\n".join(lines) + "\n"
