"""``rkd verify``: find the artifacts under a path and check each against its recorded digests.

An artifact is a folder holding a ``manifest.json`` (index, score store, trained model, run,
generated queries) or a fetched model's ``.rkd-fetch.json``; a pipeline stage folder
(``stage.json``) with no artifact inside is listed as well, as one without digests. Hidden
folders (work folders, temporary folders) are not searched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from retrieval_kd.artifacts import MANIFEST, read_json
from retrieval_kd.digests import Problem, Recorded, recorded_files, verify_files
from retrieval_kd.errors import NotFoundError

FETCH_RECORD = ".rkd-fetch.json"  # retrieval_kd.models.fetch.FETCH_RECORD (not imported: it loads the registry)
STAGE_FILE = "stage.json"  # retrieval_kd.pipeline.runner.STAGE_FILE
Status = Literal["ok", "damaged", "unrecorded"]


@dataclass(frozen=True)
class Verdict:
    """One artifact's result: ``ok``, ``damaged`` (a file does not match) or ``unrecorded``."""

    path: Path
    kind: str
    status: Status
    detail: str


def find_artifacts(root: str | Path) -> list[Path]:
    """The artifact folders under ``root`` (``root`` itself included), sorted."""
    root = Path(root)
    found: list[Path] = []
    stages: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if MANIFEST in filenames or FETCH_RECORD in filenames:
            found.append(here)
        elif STAGE_FILE in filenames:
            stages.append(here)
    found += [s for s in stages if not any(f.is_relative_to(s) for f in found)]
    return sorted(found)


def owning_artifact(path: str | Path) -> Path | None:
    """The artifact folder a file belongs to (the nearest parent with a record)."""
    for d in Path(path).resolve().parents:
        if (d / MANIFEST).is_file() or (d / FETCH_RECORD).is_file():
            return d
    return None


def _extra_parts(folder: Path, recorded: Recorded) -> list[Problem]:
    """Score-store parts the manifest does not record (they would be read as rows)."""
    d = folder / "scores"
    parts = sorted(d.glob("part-*.parquet")) if d.is_dir() else []
    return [Problem(p.relative_to(folder).as_posix(), "a part the manifest does not record")
            for p in parts if p.relative_to(folder).as_posix() not in recorded]


def _registry_problem(record: dict, files: Recorded) -> list[Problem]:
    """A fetched model whose recorded weights are not the registry's."""
    from retrieval_kd.models.registry import model_registry

    spec = model_registry().get(str(record.get("name")))
    if spec is None:
        return []
    got = (files.get(spec.weight_file) or {}).get("sha256")
    if got != spec.sha256:
        return [Problem(FETCH_RECORD, f"records weights {str(got)[:12]}, the registry expects {spec.sha256[:12]}")]
    return []


def verify_artifact(folder: str | Path, *, quick: bool = False) -> Verdict:
    """Check one artifact folder. ``quick`` trusts hashes already verified for unchanged files
    (size always compared); otherwise every recorded file is hashed again."""
    folder = Path(folder)
    fetched = not (folder / MANIFEST).is_file() and (folder / FETCH_RECORD).is_file()
    record_path = folder / (FETCH_RECORD if fetched else MANIFEST)
    if not record_path.is_file():
        return Verdict(folder, "pipeline stage", "unrecorded", "no recorded digests (no manifest)")
    try:
        record = read_json(record_path)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        return Verdict(folder, "?", "damaged", f"{record_path.name}: not readable ({e})")
    kind = "model (fetched)" if fetched else str(record.get("kind", "?"))
    files = recorded_files(record)
    if kind == "scores" and record.get("status") != "complete":
        return Verdict(folder, kind, "unrecorded",
                       f"store is {record.get('status', 'incomplete')}: digests are recorded once complete")
    if not files:
        return Verdict(folder, kind, "unrecorded", "no recorded digests (made before digests were recorded)")
    problems = verify_files(folder, files, use_cache=quick, cache_file=record_path if fetched else None)
    if kind == "scores":
        problems += _extra_parts(folder, files)
    if fetched:
        problems += _registry_problem(record, files)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return Verdict(folder, kind, "damaged", "; ".join(map(str, problems[:3])) + more)
    sized = all(isinstance((f or {}).get("size"), int) for f in files.values())
    noun = "file" if len(files) == 1 else "files"
    return Verdict(folder, kind, "ok", f"{len(files)} {noun}" + ("" if sized else " (sha256 only)"))


def verify_path(path: str | Path, *, quick: bool = False) -> list[Verdict]:
    """Every artifact under ``path`` (a file: the artifact holding it), checked."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        owner = owning_artifact(path)
        if owner is None:
            raise NotFoundError(f"{path}: not inside an artifact folder (no {MANIFEST} above it)")
        return [verify_artifact(owner, quick=quick)]
    found = find_artifacts(path)
    if not found:
        raise NotFoundError(f"{path}: no artifact inside (no {MANIFEST}, fetched model or pipeline stage)")
    return [verify_artifact(f, quick=quick) for f in found]
