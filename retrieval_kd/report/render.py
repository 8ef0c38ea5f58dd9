"""Render a run's record as Markdown and HTML (with PNG figures) under ``<run>/report/``.

Every number in the system tables is the one the eval stage computed with
``evaluate_run`` (what ``rkd eval`` prints for the same run files); :func:`verify` recomputes
them from the run files to prove it.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import atomic_dir, atomic_write_text, read_json
from retrieval_kd.errors import IntegrityError
from retrieval_kd.eval.compare import STAT_TESTS
from retrieval_kd.eval.results import mean_sd_text, p_value_text
from retrieval_kd.report.collect import EvalTable, RunReport, SystemRow, collect
from retrieval_kd.report.plots import loss_curves, quality_latency

REPORT_DIR = "report"
STAGE_HEAD = ["stage", "kind", "status", "wall s", "cpu s", "throughput", "backend", "key"]
_LABELS = {"ndcg": "nDCG", "mrr": "MRR", "recall": "R", "precision": "P", "map": "MAP",
           "hit_rate": "Hit", "r-precision": "R-Prec"}


def metric_label(m: str) -> str:
    name, _, cut = m.partition("@")
    label = _LABELS.get(name, name)
    return f"{label}@{cut}" if cut else label


def _marker(row: SystemRow, metric: str) -> str:
    s = row.significance.get(metric)
    if not s or not s.get("significant"):
        return ""
    return " ▲" if s["delta"] > 0 else " ▼"


def _p(row: SystemRow, metric: str) -> str:
    s = row.significance.get(metric)
    if not s:
        return "–"
    return p_value_text(s)


def _num(v: Any, fmt: str = ".1f") -> str:
    return "–" if v is None else format(v, fmt)


def _throughput(t: dict[str, Any]) -> str:
    return ", ".join(f"{v:,.1f} {k.replace('_per_s', '')}/s" if k.endswith("_per_s") else f"{k}={v}"
                     for k, v in t.items()) or "–"


def _metric(r: SystemRow, m: str) -> str:
    """A row's metric: the value, or for a seeded system ``mean ± sd (n seeds)``."""
    return mean_sd_text(r.metrics[m], r.sd.get(m), len(r.seeds)) if r.seeds else f"{r.metrics[m]:.4f}"


def _system_rows(t: EvalTable) -> list[list[str]]:
    rows = []
    for r in t.rows:
        name = f"{r.name} (baseline)" if r.baseline else r.name
        rows.append([name, r.ref, *[f"{_metric(r, m)}{_marker(r, m)}" for m in t.metrics],
                     _num(r.latency_ms)])
    return rows


def _count(n: int | None) -> str:
    """A parameter count, short: 4.4M, 22.7M, 308M, 1.5B."""
    if n is None:
        return "–"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            v = n / div
            return f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return str(n)


def _family_head(t: EvalTable) -> list[str]:
    m = metric_label(t.metrics[0])
    return ["family", "regime", f"init {m}", f"twin {m}", f"distilled {m}", f"teacher {m}",
            "distilled − twin (p)", "gap closed", "params distilled", "params teacher",
            "ms / query distilled", "ms / query teacher"]


def _family_rows(t: EvalTable) -> list[list[str]]:
    """One row per family, on the eval's first metric (families.json holds every metric)."""
    m, rows = t.metrics[0], []
    for name, f in (t.families or {}).get("families", {}).items():
        roles = f["roles"]

        def val(role: str) -> str:
            r = roles.get(role)
            if not r:
                return "–"
            s = r["metrics"][m]
            return mean_sd_text(s["mean"], s["sd"], s["n_seeds"]) if r.get("seeds") else f"{s['mean']:.4f}"

        d, g = f["distilled_vs_twin"][m], f["gap_closed"][m]
        p = p_value_text(d)
        dist, teach = roles["distilled"], roles.get("teacher", {})
        rows.append([name, f["regime"] or "–", val("init"), val("twin"), val("distilled"), val("teacher"),
                     f"{d['delta']:+.4f} (p {p})", "–" if g is None else f"{100 * g:.1f}%",
                     _count(dist.get("parameters")), _count(teach.get("parameters")),
                     _num(dist.get("latency_ms_per_query")), _num(teach.get("latency_ms_per_query"))])
    return rows


def _family_notes(t: EvalTable) -> list[str]:
    fams = (t.families or {}).get("families", {})
    systems = "; ".join(f"**{n}**: " + ", ".join(f"{r} = {v['system']}" for r, v in f["roles"].items())
                        for n, f in fams.items())
    alpha = (t.families or {}).get("alpha", t.alpha)
    return [f"Systems — {systems}.",
            (f"distilled − twin: {(t.families or {}).get('test')} (* p < {alpha:g}); gap closed: "
             f"(distilled − init) / (teacher − init) on {metric_label(t.metrics[0])} (– without an init or a "
             "teacher, or when the teacher is not above the init); parameters from the models' safetensors "
             "(a teacher ensemble: its members' sum, BM25 0); ms / query: the mean over seeds.")]


def _eval_caption(t: EvalTable) -> str:
    q = f", {t.judged_queries} judged queries" if t.judged_queries is not None else ""
    iii = t.protocol.get("ignore_identical_ids")
    return f"{t.dataset} / {t.split}{q}; ranx, ignore_identical_ids={iii}"


def _sig_note(t: EvalTable) -> str:
    if not t.baseline:
        return ""
    test = t.test or f"{STAT_TESTS.get(t.stat_test, t.stat_test)} via ranx compare"
    return f"▲ / ▼: significantly better / worse than **{t.baseline}** ({test}, p < {t.alpha:g})."


def _stage_rows(rep: RunReport) -> list[list[str]]:
    return [[s["id"], s["kind"], s["status"], _num(s["wall_s"]), _num(s.get("cpu_s")),
             _throughput(s["throughput"]), s.get("backend") or "–", s["key"]] for s in rep.stages]


def _md_table(head: list[str], rows: list[list[str]], right: set[int]) -> str:
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def _summary(rep: RunReport) -> list[tuple[str, str]]:
    rec = rep.record
    tot = rec.get("totals", {})
    compute = sum(s["wall_s"] or 0 for s in rep.stages)
    return [
        ("pipeline", (f"{rec['pipeline']['name']} ({rec['pipeline']['file']}, sha256 "
                      f"{rec['pipeline']['sha256'][:12]})")),
        ("status", f"{rec.get('status')}; started {rec.get('started')}, last update {rec.get('updated')}"),
        ("stages", (f"{tot.get('stages', len(rep.stages))} — ran {tot.get('ran', 0)}, "
                    f"cached {tot.get('cached', 0)} in the last invocation")),
        ("wall time", f"{tot.get('wall_s', 0):.1f}s last invocation; {compute:.1f}s of stage compute in all"),
        *([("memory", f"peak resident set {tot['peak_rss_mb'] / 1024:.2f} GiB in the last invocation "
                      f"(resident at its end: {tot.get('rss_mb', 0) / 1024:.2f} GiB)")]
          if tot.get("peak_rss_mb") else []),
    ]


def render_markdown(rep: RunReport, figures: dict[str, str]) -> str:
    lines = [f"# Run report: {rep.record['pipeline']['name']}", ""]
    lines += [f"- **{k}**: {v}" for k, v in _summary(rep)] + [""]
    for t in rep.evals:
        lines += [f"## Evaluation `{t.name}`", "", f"{_eval_caption(t)}", ""]
        head = ["system", "reference", *[metric_label(m) for m in t.metrics], "ms / query"]
        lines += [_md_table(head, _system_rows(t), set(range(2, len(head)))), ""]
        if t.baseline:
            lines += [_sig_note(t), ""]
            prow = [[r.name, *[_p(r, m) for m in t.metrics]] for r in t.rows if not r.baseline]
            lines += [f"p-values against {t.baseline} (* p < {t.alpha:g}):", "",
                      _md_table(["system", *[metric_label(m) for m in t.metrics]], prow,
                                set(range(1, len(t.metrics) + 1))), ""]
        notes = sorted({f"{r.name}: {r.latency_note}" for r in t.rows if r.latency_note})
        if notes:
            lines += ["Latency: " + "; ".join(notes) + ".", ""]
        runs = [f"{r.name}: {r.run_note}" for r in t.rows if r.run_note]
        if runs:
            lines += ["Rerankers: " + "; ".join(runs) + ".", ""]
        if t.families:
            head = _family_head(t)
            lines += ["### Students by family", "", _md_table(head, _family_rows(t), set(range(2, len(head)))), ""]
            lines += [x for n in _family_notes(t) for x in (n, "")]
        if f"quality_latency:{t.name}" in figures:
            lines += [f"![quality vs latency]({figures[f'quality_latency:{t.name}']})", ""]
    lines += ["## Stages", ""]
    lines += [_md_table(STAGE_HEAD, _stage_rows(rep), {3, 4}), ""]
    lines += [("`wall s` / `cpu s`: the stage's own wall-clock and process CPU time (for a cached stage, "
              "those of the run that produced it; for a resumed stage, its last attempt); cpu s above wall s "
              "means several cores were busy, "
              "far below means the machine was shared. `backend`: the inference backend the stage's models ran "
              "on (torch with its dtype, or onnx / openvino with their variant; – for stages without one)."), ""]
    if "loss" in figures:
        lines += ["## Training loss", "", f"![training loss]({figures['loss']})", ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.2em}th,td{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;color:#555;padding-bottom:4px}.note{color:#555;font-size:0.9em}
img{max-width:100%}code{background:#f3f3f3;padding:0 3px}"""


def _html_table(head: list[str], rows: list[list[str]], right: set[int], caption: str = "") -> str:
    e = html.escape
    cap = f"<caption>{e(caption)}</caption>" if caption else ""
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td class='n'>{e(c)}</td>" if i in right else f"<td>{e(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table>{cap}<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _md_inline(text: str) -> str:
    """Escape, then render the **bold** the notes use."""
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def render_html(rep: RunReport, figures: dict[str, str]) -> str:
    e = html.escape
    name = rep.record["pipeline"]["name"]
    out = [(f"<!doctype html><html><head><meta charset='utf-8'><title>Run report: {e(name)}</title>"
            f"<style>{_CSS}</style></head><body>"), f"<h1>Run report: {e(name)}</h1><ul>"]
    out += [f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in _summary(rep)] + ["</ul>"]
    for t in rep.evals:
        out.append(f"<h2>Evaluation <code>{e(t.name)}</code></h2>")
        head = ["system", "reference", *[metric_label(m) for m in t.metrics], "ms / query"]
        out.append(_html_table(head, _system_rows(t), set(range(2, len(head))), _eval_caption(t)))
        if t.baseline:
            out.append(f"<p class='note'>{_md_inline(_sig_note(t))}</p>")
            prow = [[r.name, *[_p(r, m) for m in t.metrics]] for r in t.rows if not r.baseline]
            out.append(_html_table(["system", *[metric_label(m) for m in t.metrics]], prow,
                                   set(range(1, len(t.metrics) + 1)),
                                   f"p-values against {t.baseline} (* p < {t.alpha:g})"))
        notes = sorted({f"{r.name}: {r.latency_note}" for r in t.rows if r.latency_note})
        if notes:
            out.append(f"<p class='note'>Latency: {e('; '.join(notes))}.</p>")
        runs = [f"{r.name}: {r.run_note}" for r in t.rows if r.run_note]
        if runs:
            out.append(f"<p class='note'>Rerankers: {e('; '.join(runs))}.</p>")
        if t.families:
            head = _family_head(t)
            out.append("<h3>Students by family</h3>")
            out.append(_html_table(head, _family_rows(t), set(range(2, len(head)))))
            out += [f"<p class='note'>{_md_inline(n)}</p>" for n in _family_notes(t)]
        if f"quality_latency:{t.name}" in figures:
            out.append(f"<img src='{e(figures[f'quality_latency:{t.name}'])}' alt='quality vs latency'>")
    out.append("<h2>Stages</h2>")
    out.append(_html_table(STAGE_HEAD, _stage_rows(rep), {3, 4}))
    out.append("<p class='note'>wall s / cpu s: the stage's own wall-clock and process CPU time (for a "
               "cached stage, those of the run that produced it; for a resumed stage, its last attempt); "
               "backend: the inference backend the stage's models ran on.</p>")
    if "loss" in figures:
        out.append(f"<h2>Training loss</h2><img src='{e(figures['loss'])}' alt='training loss'>")
    out.append("</body></html>")
    return "\n".join(out)


def verify(rep: RunReport) -> int:
    """Recompute every reported metric from its run files with ``evaluate_run`` (a seeded
    system's: each seed's, and their mean), and check the family table's against them; a
    mismatch is an IntegrityError. Returns the number of values checked."""
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.data.trec import load_trec_run
    from retrieval_kd.eval.metrics import evaluate_run

    checked = 0
    for t in rep.evals:
        stage = next(s for s in rep.record["stages"] if s["id"] == t.stage_id)
        cfg = read_json(rep.root / stage["dir"] / "stage.json")["config"]
        ds = load_dataset(cfg["dataset"], cfg["split"])
        for r in t.rows:
            per = [evaluate_run(ds.qrels, load_trec_run(f), t.metrics, ignore_identical_ids=cfg["ignore_identical_ids"],
                                relevance_level=ds.relevance_level)
                   for f in r.run_files]
            for m in t.metrics:
                got = sum(x[m] for x in per) / len(per)
                if round(got, 4) != r.metrics[m] or (r.seeds and [round(x[m], 4) for x in per] != r.per_seed[m]):
                    raise IntegrityError(f"{t.name}/{r.name}: {m} is {r.metrics[m]} in the report but "
                                         f"{got:.4f} from {', '.join(r.run_files)}")
                checked += 1
        rows = {r.name: r for r in t.rows}
        for fam, f in (t.families or {}).get("families", {}).items():
            for role, v in f["roles"].items():
                for m in t.metrics:
                    if round(v["metrics"][m]["mean"], 4) != rows[v["system"]].metrics[m]:
                        raise IntegrityError(f"{t.name}: family {fam}, {role} {v['system']}: {m} differs "
                                             "from the system's row")
                    checked += 1
    return checked


def write_report(root: str | Path, out: str | Path | None = None, *, check: bool = False
                 ) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the PNGs into ``out`` (default ``<root>/report``)."""
    root = Path(root)
    rep = collect(root)
    if check:
        verify(rep)
    out = Path(out) if out else root / REPORT_DIR
    with atomic_dir(out) as tmp:
        figures: dict[str, str] = {}
        for t in rep.evals:
            metric = t.metrics[0]
            png = quality_latency(t, metric, tmp / f"quality_latency-{t.name}.png")
            if png:
                figures[f"quality_latency:{t.name}"] = png.name
        if loss_curves(rep.losses, tmp / "loss_curves.png"):
            figures["loss"] = "loss_curves.png"
        atomic_write_text(tmp / "report.md", render_markdown(rep, figures))
        atomic_write_text(tmp / "report.html", render_html(rep, figures))
    paths = {"markdown": out / "report.md", "html": out / "report.html"}
    paths.update({k: out / v for k, v in figures.items()})
    return paths
