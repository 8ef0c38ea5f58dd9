"""Gather what a report shows from a run root: systems and their metrics, stages, loss logs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import read_json
from retrieval_kd.errors import NotFoundError, RkdError

RUN_RECORD = "run.json"
STAGE_FILE = "stage.json"


@dataclass
class SystemRow:
    name: str
    ref: str
    stage_id: str
    metrics: dict[str, float]
    significance: dict[str, dict[str, Any]] = field(default_factory=dict)
    """metric -> {p_value, significant, delta} against the eval's baseline."""
    latency_ms: float | None = None
    latency_note: str | None = None
    run_note: str | None = None
    run_file: str | None = None
    baseline: bool = False


@dataclass
class EvalTable:
    name: str
    stage_id: str
    dataset: str
    split: str
    metrics: list[str]
    baseline: str | None
    stat_test: str
    alpha: float
    judged_queries: int | None
    rows: list[SystemRow]
    protocol: dict[str, Any]


@dataclass
class LossCurve:
    stage_id: str
    steps: list[float]
    losses: list[float]
    label: str = "loss"


@dataclass
class RunReport:
    root: Path
    record: dict[str, Any]
    evals: list[EvalTable]
    stages: list[dict[str, Any]]
    losses: list[LossCurve]


def load_record(root: Path) -> dict[str, Any]:
    p = root / RUN_RECORD
    if not p.is_file():
        raise NotFoundError(f"{root}: not a run directory (no {RUN_RECORD}; run 'rkd run PIPELINE' first)")
    return read_json(p)


def _stage_file(root: Path, entry: dict[str, Any]) -> dict[str, Any] | None:
    p = root / entry["dir"] / STAGE_FILE
    return read_json(p) if p.is_file() else None


def _stage_dirs(root: Path, record: dict[str, Any]) -> dict[str, Path]:
    return {e["id"]: root / e["dir"] for e in record["stages"]}


def _eval_table(root: Path, entry: dict[str, Any], sf: dict[str, Any], dirs: dict[str, Path]) -> EvalTable:
    d = root / entry["dir"]
    results = read_json(d / sf["result"].get("results", "results.json"))["results"]
    sig = read_json(d / sf["result"].get("significance", "significance.json"))
    cfg = sf["config"]
    rows = []
    for rec in results:
        name = rec["system"]
        up_id = sf["inputs"][name]["id"]
        up_dir = dirs.get(up_id)
        up = read_json(up_dir / STAGE_FILE) if up_dir and (up_dir / STAGE_FILE).is_file() else {}
        res = up.get("result", {})
        rows.append(SystemRow(
            name=name, ref=cfg["refs"][name], stage_id=up_id, metrics=rec["metrics"],
            significance=(sig.get("systems") or {}).get(name, {}),
            latency_ms=res.get("latency_ms_per_query"), latency_note=res.get("latency_note"),
            run_note=res.get("run_note"),
            run_file=str(up_dir / res.get("run", "run.trec")) if up_dir else rec["protocol"]["system"].get("run_file"),
            baseline=name == cfg.get("baseline")))
    proto = results[0]["protocol"] if results else {}
    return EvalTable(cfg["name"], entry["id"], proto.get("dataset", cfg["dataset"]), cfg["split"],
                     list(cfg["metrics"]), cfg.get("baseline"), cfg.get("stat_test", "student"),
                     cfg.get("alpha", 0.05), proto.get("judged_queries"), rows, proto)


def read_loss_log(path: Path) -> tuple[list[float], list[float]]:
    """(steps, losses) from a JSON list / JSONL of records with ``loss`` (and ``step`` or
    ``epoch``), or a JSON object holding such a list under ``log_history`` / ``losses``."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(data, dict):
        for k in ("log_history", "losses", "loss_log", "history"):
            if isinstance(data.get(k), list):
                data = data[k]
                break
    steps, losses = [], []
    if isinstance(data, list):
        for i, r in enumerate(data):
            if isinstance(r, dict) and isinstance(r.get("loss"), (int, float)):
                steps.append(float(r.get("step", r.get("global_step", r.get("epoch", i)))))
                losses.append(float(r["loss"]))
            elif isinstance(r, (int, float)):
                steps.append(float(i))
                losses.append(float(r))
    return steps, losses


def collect(root: str | Path) -> RunReport:
    root = Path(root)
    record = load_record(root)
    dirs = _stage_dirs(root, record)
    evals, stages, losses = [], [], []
    for entry in record["stages"]:
        sf = _stage_file(root, entry)
        res = (sf or {}).get("result", {})
        stages.append({"id": entry["id"], "kind": entry["kind"], "key": entry["key"],
                       "status": entry["status"], "wall_s": (sf or {}).get("wall_s", entry.get("wall_s")),
                       "cpu_s": (sf or {}).get("cpu_s"),
                       "throughput": {k: v for k, v in (res.get("throughput") or {}).items() if v is not None},
                       "finished": (sf or {}).get("finished")})
        if sf is None:
            continue
        if entry["kind"] == "eval":
            try:
                evals.append(_eval_table(root, entry, sf, dirs))
            except (KeyError, OSError, ValueError) as e:
                raise RkdError(f"{root / entry['dir']}: unreadable eval stage ({e})") from None
        if res.get("loss_log") and (root / entry["dir"] / res["loss_log"]).is_file():
            steps, vals = read_loss_log(root / entry["dir"] / res["loss_log"])
            if vals:
                losses.append(LossCurve(entry["id"], steps, vals))
    return RunReport(root, record, evals, stages, losses)
