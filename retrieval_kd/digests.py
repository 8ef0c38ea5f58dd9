"""File digests: how every artifact records its files and how loading checks them.

The convention, in one place: an artifact's record (``manifest.json``, or a fetched model's
``.rkd-fetch.json``) carries ``files = {relative path: {"size": bytes, "sha256": hex}}`` for
every file of its folder except the record itself and hidden names (sidecars, locks,
temporary files). Records written before this convention are read too: ``outputs`` entries
that carry a ``sha256`` (an index's files, a run's ``run.trec``) and ``outputs.files_sha256``.

Checking is cheap: the size of every file always, its sha256 once per (size, mtime, ctime,
inode). Each hash that matched is remembered as a stamp in ``.verified.json`` inside the
artifact (a fetched model keeps its stamps in its fetch record); a stamp is trusted only while
the file's stat is unchanged (and was not written in the same instant it was hashed), and only
for the sha256 the record asks for, so it can never vouch for a changed file or record.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from retrieval_kd.artifacts import MANIFEST, read_json_object, sha256_file, write_json
from retrieval_kd.errors import IntegrityError

FILES = "files"
VERIFIED = ".verified.json"
STAMPS = "verified"
"""The key holding the verification stamps, in ``.verified.json`` or in the file ``cache_file`` names."""
RACY_NS = 50_000_000
"""A file modified within this long of being hashed may have changed in the same timestamp tick:
its cached hash is not trusted (git's 'racily clean' rule)."""

Recorded = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Problem:
    """One file of an artifact that does not match its record."""

    rel: str
    what: str

    def __str__(self) -> str:
        return f"{self.rel}: {self.what}"


def _hidden(rel: PurePosixPath) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def file_digests(folder: str | Path, *, exclude: tuple[str, ...] = (MANIFEST,),
                 remember: bool = True, cache_file: Path | None = None) -> Recorded:
    """``{relative path: {"size", "sha256"}}`` of every file under ``folder`` (sorted), leaving out
    hidden names and the top-level names in ``exclude``. With ``remember`` the hashes also seed
    the verification stamps (``cache_file``, default ``folder/.verified.json``), so the first load
    need not hash the files again."""
    folder = Path(folder)
    out: Recorded = {}
    seen: dict[str, dict[str, Any]] = {}
    for p in sorted(folder.rglob("*")):
        rel = PurePosixPath(p.relative_to(folder).as_posix())
        if _hidden(rel) or (len(rel.parts) == 1 and rel.name in exclude) or not p.is_file():
            continue
        st, t = p.stat(), time.time_ns()
        sha = sha256_file(p)
        out[str(rel)] = {"size": st.st_size, "sha256": sha}
        seen[str(rel)] = {**_stat_key(st), "sha256": sha, "hashed_ns": t}
    if remember:
        _save_cache(cache_file or folder / VERIFIED, seen)
    return out


def recorded_files(record: dict[str, Any] | None) -> Recorded | None:
    """The files a record vouches for (``size`` None when only the sha256 is known), or None."""
    if not isinstance(record, dict):
        return None
    if isinstance(record.get(FILES), dict):
        return record[FILES]
    out: Recorded = {}
    outputs = record.get("outputs")
    if isinstance(outputs, dict):
        for rel, v in outputs.items():
            if isinstance(v, dict) and isinstance(v.get("sha256"), str):
                out[rel] = {"size": v.get("size", v.get("bytes")), "sha256": v["sha256"]}
        extra = outputs.get("files_sha256")
        if isinstance(extra, dict):
            out.update({rel: {"size": None, "sha256": s} for rel, s in extra.items() if isinstance(s, str)})
    return out or None


def _stat_key(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def _load_cache(path: Path) -> dict[str, dict[str, Any]]:
    stamps = read_json_object(path).get(STAMPS)
    return stamps if isinstance(stamps, dict) else {}


def _save_cache(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Store the stamps under ``path``'s ``verified`` key (the file's other keys are kept)."""
    try:
        write_json(path, {**read_json_object(path), STAMPS: entries})
    except OSError:  # a read-only artifact is still checked, just hashed again next time
        pass


def _trusted(entry: Any, st: os.stat_result, sha: str) -> bool:
    if not isinstance(entry, dict) or entry.get("sha256") != sha:
        return False
    key = _stat_key(st)
    if any(entry.get(k) != v for k, v in key.items()):
        return False
    return isinstance(entry.get("hashed_ns"), int) and entry["hashed_ns"] - st.st_mtime_ns > RACY_NS


def _unsafe(rel: str) -> bool:
    p = PurePosixPath(rel)
    return not rel or p.is_absolute() or ".." in p.parts or "\\" in rel or ":" in rel.split("/")[0]


def verify_files(folder: str | Path, recorded: Recorded, *, use_cache: bool = True,
                 remember: bool = True, skip: tuple[str, ...] = (),
                 cache_file: Path | None = None) -> list[Problem]:
    """Problems of ``folder``'s files against ``recorded`` (empty: all match). Sizes are always
    compared; a file is hashed unless the cache vouches for it (``use_cache=False``: hash all);
    matching hashes are remembered unless ``remember`` is False. Paths starting with a prefix in
    ``skip`` are not checked."""
    folder = Path(folder)
    cache_file = cache_file or folder / VERIFIED
    cache = _load_cache(cache_file) if use_cache or remember else {}
    keep = dict(cache)
    problems: list[Problem] = []
    for rel, want in recorded.items():
        if any(rel.startswith(s) for s in skip):
            continue
        want = want if isinstance(want, dict) else {}
        sha, size = want.get("sha256"), want.get("size")
        size = size if isinstance(size, int) and not isinstance(size, bool) else None
        if _unsafe(rel) or not isinstance(sha, str):
            problems.append(Problem(rel, "the record's entry is not a safe relative path with a sha256"))
            continue
        p = folder / rel
        try:
            st = p.stat()
        except OSError:
            problems.append(Problem(rel, "missing"))
            continue
        if not p.is_file():
            problems.append(Problem(rel, "not a regular file"))
            continue
        if size is not None and st.st_size != size:
            problems.append(Problem(rel, f"{st.st_size:,} bytes, the record says {size:,} "
                                         "(truncated or overwritten)"))
            continue
        if use_cache and _trusted(cache.get(rel), st, sha):
            continue
        t = time.time_ns()
        got = sha256_file(p)
        if got != sha:
            keep.pop(rel, None)
            problems.append(Problem(rel, f"sha256 {got[:12]} differs from the recorded {sha[:12]} "
                                         "(its content changed)"))
        else:
            keep[rel] = {**_stat_key(st), "sha256": got, "hashed_ns": t}
    if remember and keep != cache:
        _save_cache(cache_file, {k: v for k, v in keep.items() if k in recorded})
    return problems


def check_files(folder: str | Path, recorded: Recorded | None, what: str, *,
                skip: tuple[str, ...] = (), hint: str = "rebuild it") -> bool:
    """Raise one IntegrityError line naming the first damaged file of ``folder`` (``what``: the
    artifact, e.g. "index"). Returns False when nothing is recorded (made before digests)."""
    if not recorded:
        return False
    problems = verify_files(folder, recorded, skip=skip)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(f"{Path(folder) / first.rel}: {first.what}{more}; the {what} is damaged: "
                             f"{hint} (`rkd verify {folder}` lists every file)")
    return True
