"""What stage adapters share: reading an upstream stage's result, run file or model.

The built-in adapters live with their sections (retrieval_kd/pipeline/kinds/, and the queries
section in retrieval_kd/queries/stage.py); the names they had here still resolve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import read_json
from retrieval_kd.data.runfiles import RUN_FILE
from retrieval_kd.errors import RkdError

STAGE_FILE = "stage.json"


def rate(n: float, seconds: float | None) -> float | None:
    """``n`` per second (None without a positive time)."""
    return round(n / seconds, 3) if seconds and seconds > 0 else None


def run_queries(man: dict[str, Any]) -> int:
    """The number of queries of the run file a stage manifest lists."""
    return int(man.get("outputs", {}).get(RUN_FILE, {}).get("queries") or 0)


def stage_result(d: Path) -> dict[str, Any]:
    """The result an upstream stage's adapter returned (from its ``stage.json``)."""
    p = d / STAGE_FILE
    return read_json(p).get("result", {}) if p.is_file() else {}


def run_file_of(d: Path) -> Path:
    """The TREC run a stage directory holds."""
    rel = stage_result(d).get("run", RUN_FILE)
    f = d / rel
    if not f.is_file():
        raise RkdError(f"{d}: holds no run file ({rel})")
    return f


def model_dir_of(d: Path) -> Path:
    """The trained model a student stage directory holds."""
    rel = stage_result(d).get("model")
    if not rel or not (d / rel).exists():
        raise RkdError(f"{d}: holds no trained model")
    return d / rel


_MOVED = {
    "retrieve": ("retrieve_bm25", "retrieve_dense", "retrieve_fusion"),
    "scores": ("score", "release_teacher", "_LOADED_TEACHER", "_substitute_students", "_teacher_factory"),
    "students": ("train", "train_config_data", "PIPELINE_TRAIN_KEYS", "SAVE_STEPS"),
    "indexes": ("index", "search", "_index_params"),
    "evals": ("evaluate",),
}


def __getattr__(name: str) -> Any:
    for module, names in _MOVED.items():
        if name in names:
            import importlib

            return getattr(importlib.import_module(f"retrieval_kd.pipeline.kinds.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
