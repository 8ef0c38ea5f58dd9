"""The run-file convention every stage shares: a run directory holds ``run.trec`` (a TREC run)
beside its ``manifest.json``; a path naming a run is that directory or a bare TREC file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import read_manifest

RUN_FILE = "run.trec"


def run_path(path: str | Path) -> Path:
    """The TREC file ``path`` names: ``path/run.trec`` for a run directory, else ``path``."""
    p = Path(path)
    return p / RUN_FILE if p.is_dir() else p


def locate_run(path: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """Accept a run directory (``run.trec`` + ``manifest.json``) or a bare TREC run file."""
    p = Path(path)
    if p.is_dir():
        return p / RUN_FILE, read_manifest(p)
    return p, read_manifest(p.parent)
