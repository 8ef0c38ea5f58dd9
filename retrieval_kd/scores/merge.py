"""Join the shards of one scoring request into a complete store."""

from __future__ import annotations

import shutil
from pathlib import Path

from retrieval_kd.artifacts import MANIFEST, atomic_dir, now_iso, write_json
from retrieval_kd.digests import file_digests
from retrieval_kd.errors import IntegrityError, RkdError
from retrieval_kd.locks import output_lock
from retrieval_kd.scores.store import SCORES_DIR, ScoreStore, check_rows


def merge_shards(shards: list[str | Path], root: str | Path | None = None) -> ScoreStore:
    """Merge complete shards of the same request (same teacher, inputs and shard count).

    Refuses shards of different requests, incomplete shards, and missing or repeated shard
    indexes. The merged store is written atomically as ``<root>/<store id>``.
    """
    stores = [ScoreStore(Path(s)) for s in shards]
    if not stores:
        raise RkdError("no shards given")
    mans = [s.manifest for s in stores]
    ids = {m["store_id"] for m in mans}
    if len(ids) != 1:
        raise IntegrityError(f"shards belong to different requests (store ids {sorted(ids)}): "
                             "teacher or inputs differ")
    for s, m in zip(stores, mans):
        if not m.get("shard"):
            raise RkdError(f"{s.path}: not a shard")
        if m.get("status") != "complete":
            raise RkdError(f"{s.path}: shard {m['shard']['index']} is not complete; rerun it first")
    counts = {m["shard"]["count"] for m in mans}
    idx = sorted(m["shard"]["index"] for m in mans)
    if len(counts) != 1 or idx != list(range(counts.pop())):
        raise RkdError(f"shards given: {idx}; need each index 0..n-1 exactly once")
    sid = ids.pop()
    final = Path(root) if root else stores[0].path.parent
    final = final / sid
    total = sum(m["n_rows"] for m in mans)
    for s in stores:
        s.check_files()
    # the same lock as `rkd score` writing this store unsharded: one writer of <root>/<store id>
    with output_lock(final, f"{final}: another process is writing this store"), atomic_dir(final) as tmp:
        (tmp / SCORES_DIR).mkdir()
        for s, m in zip(stores, mans):
            for a, b, p in s.parts():
                shutil.copyfile(p, tmp / SCORES_DIR / f"part-s{m['shard']['index']:03d}-{p.name[5:]}")
        record = {**mans[0], "shard": None, "n_rows": total, "status": "complete",
                  "merged": now_iso(), "merged_from": [str(s.path) for s in stores],
                  "sessions": [x for m in mans for x in m.get("sessions", [])]}
        record["files"] = file_digests(tmp)
        write_json(tmp / MANIFEST, record)
        check_rows(ScoreStore(tmp), total)
    return ScoreStore(final)
