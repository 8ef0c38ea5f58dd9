"""The report's figures (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

from retrieval_kd.report.collect import EvalTable, LossCurve


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def quality_latency(table: EvalTable, metric: str, path: Path) -> Path | None:
    """nDCG@10 (or ``metric``) against mean query latency, one point per system."""
    pts = [(r.latency_ms, r.metrics[metric], r.name) for r in table.rows
           if r.latency_ms is not None and r.latency_ms > 0 and metric in r.metrics]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for x, y, name in pts:
        ax.scatter([x], [y], s=36)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("query latency (ms / query, log scale)")
    from retrieval_kd.report.render import metric_label

    ax.set_ylabel(metric_label(metric))
    ax.set_title(f"{table.dataset} / {table.split}: {metric_label(metric)} vs query latency")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def loss_curves(curves: list[LossCurve], path: Path) -> Path | None:
    """One panel per training stage (losses differ in scale: Margin-MSE, KL, contrastive)."""
    if not curves:
        return None
    plt = _plt()
    cols = min(2, len(curves))
    rows = (len(curves) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.2 * rows), dpi=120, squeeze=False)
    for ax, c in zip(axes.flat, curves):
        marker = "o" if len(c.steps) < 3 else None  # a log of one point still shows
        ax.plot(c.steps, c.losses, linewidth=1.2, marker=marker)
        ax.set_title(c.stage_id, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(c.label, fontsize=8)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
