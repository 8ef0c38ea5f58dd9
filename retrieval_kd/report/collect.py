"""Gather what a report shows from a run root: systems and their metrics, stages, loss logs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import read_json
from retrieval_kd.data.runfiles import RUN_FILE
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
    seeds: list[int] | None = None
    """A system trained with several seeds: ``metrics`` are the means over them."""
    sd: dict[str, float | None] = field(default_factory=dict)
    per_seed: dict[str, list[float]] = field(default_factory=dict)
    run_files: list[str] = field(default_factory=list)
    """Every seed's run (the one run of an unseeded system)."""
    parameters: int | None = None


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
    test: str | None = None
    """The significance test when it is not ranx's ``stat_test`` (seeded systems)."""
    families: dict[str, Any] | None = None
    """The eval stage's ``families.json``, when the eval has ``families``."""


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
    from retrieval_kd.pipeline.adapters import stage_result
    from retrieval_kd.pipeline.eval_stage import system_costs
    from retrieval_kd.pipeline.plan import seed_input

    d = root / entry["dir"]
    results = read_json(d / sf["result"].get("results", "results.json"))["results"]
    sig = read_json(d / sf["result"].get("significance", "significance.json"))
    families = read_json(d / sf["result"]["families"]) if sf["result"].get("families") else None
    cfg = sf["config"]
    rows = []
    for rec in results:
        name = rec["system"]
        seed_info = rec.get("seeds") or {}
        seeds = seed_info.get("seeds")
        up_ids = [sf["inputs"][seed_input(name, s) if seeds else name]["id"] for s in seeds or [None]]
        up_dirs = [dirs[i] for i in up_ids if i in dirs]
        res = stage_result(up_dirs[0]) if up_dirs else {}
        costs = system_costs(up_dirs) if up_dirs else {}
        system = rec["protocol"]["system"]
        runs = [str(u / stage_result(u).get("run", RUN_FILE)) for u in up_dirs] if up_dirs else \
            [r["run_file"] for r in system.get("runs", [])] or [system.get("run_file")]
        rows.append(SystemRow(
            name=name, ref=cfg["refs"][name], stage_id=up_ids[0].split("#")[0], metrics=rec["metrics"],
            significance=(sig.get("systems") or {}).get(name, {}),
            latency_ms=costs.get("latency_ms_per_query"), latency_note=res.get("latency_note"),
            run_note=res.get("run_note"), run_file=runs[0], baseline=name == cfg.get("baseline"),
            seeds=seeds, sd=seed_info.get("sd", {}), per_seed=seed_info.get("per_seed", {}), run_files=runs,
            parameters=costs.get("parameters")))
    proto = results[0]["protocol"] if results else {}
    return EvalTable(cfg["name"], entry["id"], proto.get("dataset", cfg["dataset"]), cfg["split"],
                     list(cfg["metrics"]), cfg.get("baseline"), cfg.get("stat_test", "student"),
                     cfg.get("alpha", 0.05), proto.get("judged_queries"), rows, proto, sig.get("test"), families)


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
                       "backend": res.get("backend"),
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
