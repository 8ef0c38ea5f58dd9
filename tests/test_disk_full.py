"""A full disk during ``rkd index``, ``rkd train`` and ``rkd score`` (real processes, a real small
file system, see ``tests/small_disk.py``): one error line naming the path and the space, no
traceback, the finished work kept; the same command run again once there is space completes
to the artifact an uninterrupted run writes. Plus the one-line translation itself."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval_kd.storage import StorageError, describe, writing
from tests import small_disk
from tests.beir import random_beir
from tests.test_index_tiny import tiny_st
from tests.test_train_support import train_env  # noqa: F401 - fixture

RKD = [sys.executable, "-m", "retrieval_kd.cli.main"]
REPO = Path(__file__).resolve().parents[1]
ENV = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def one_line(stderr: str, *needles: str) -> str:
    """The single ``error:`` line, last on stderr, holding every needle; no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr[-3000:]
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def disk_error(stderr: str, disk: str) -> str:
    line = one_line(stderr, disk)
    assert any(w in line for w in ("no space left", "file too large", "cut short")), line
    assert "free there now" in line, line
    return line


def files_of(folder: Path) -> dict[str, bytes]:
    """Every visible file but the manifest (it records times), by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "manifest.json" and not any(s.startswith(".") for s in p.parts[len(folder.parts):])}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("disk-full")
    ds = random_beir(root / "ds")
    run = root / "cand.trec"
    lines = [f"q{q} Q0 d{(q * 7 + r) % 120} {r + 1} {100 - r} x" for q in range(12) for r in range(30)]
    run.write_text("\n".join(lines) + "\n")
    return {"root": root, "ds": ds, "st": tiny_st(root / "st"), "run": run}


def reference_then_full(args: list[str], out: str, tmp_path: Path, *, free: int, limit: int):
    """An uninterrupted run into ``tmp_path/ref``, then the same on a disk that fills up and is freed
    (``small_disk.full_then_free``); asserts the full run is one disk line and the rerun exits 0."""
    ref = tmp_path / "ref"
    r = subprocess.run([*RKD, *args, "-o", str(ref)], env={**os.environ, **ENV}, cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    t = small_disk.full_then_free(tmp_path / "t", [*RKD, *args, "-o", "{disk}/" + out], free=free,
                                  limit=limit, cwd=tmp_path, env=ENV)
    assert t.full.rc == 2, t.full.stderr[-3000:]
    disk_error(t.full.stderr, str(t.disk.parent / "disk"))
    assert t.again.rc == 0, t.again.stderr[-3000:]
    return ref, t


@pytest.mark.slow
def test_index_on_a_full_disk_is_one_line_and_the_rerun_completes(tiny, tmp_path):
    args = ["index", "dense", "-m", str(tiny["st"]), "-d", str(tiny["ds"]), "--chunk-size", "10",
            "--index", "hnsw", "--hnsw-m", "8"]
    # tmpfs: 24 KiB left runs out while encoding (12 chunks); fsize: the 16 KiB index file is too large
    ref, t = reference_then_full(args, "idx", tmp_path, free=24 << 10, limit=8 << 10)
    assert files_of(t.disk / "idx") == files_of(ref)  # the same index as an uninterrupted build
    man = json.loads((t.disk / "idx" / "manifest.json").read_text())
    assert man["stats"]["encode"]["chunks_resumed"] > 0  # the chunks of the first run were kept
    assert not (t.disk / ".idx.work").exists() and not list(t.disk.glob(".idx.tmp-*"))


@pytest.mark.slow
def test_train_on_a_full_disk_is_one_line_and_the_rerun_completes(train_env, tmp_path):  # noqa: F811
    args = ["train", "-f", "bi-encoder", "-m", str(train_env["bi-encoder"]), "--scores", str(train_env["store"]),
            "-d", str(train_env["dataset"]), "-s", "train", "--loss", "kl", "--kl-passages", "4",
            "--negatives", "3", "--rank-window", "2:25", "--batch-size", "4", "--max-steps", "6",
            "--save-steps", "2", "--max-length", "32"]
    # tmpfs: 400 KiB hold one checkpoint (~260 KiB), not two; fsize: optimizer.pt (~150 KiB) is too large
    ref, t = reference_then_full(args, "m", tmp_path, free=400 << 10, limit=100 << 10)
    assert (t.disk / "m" / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    man = json.loads((t.disk / "m" / "manifest.json").read_text())
    assert man["outputs"]["global_step"] == 6
    if t.mode == "tmpfs":  # the first run's checkpoint was kept and resumed from
        assert man["sessions"][-1]["resumed_from"], man["sessions"]
    assert not (t.disk / ".m.work").exists()


@pytest.mark.slow
def test_score_on_a_full_disk_is_one_line_and_the_rerun_completes(tiny, tmp_path):
    from retrieval_kd.scores.store import ScoreStore

    args = ["score", "-d", str(tiny["ds"]), "-c", str(tiny["run"]), "--top-k", "30", "--teacher", "bm25",
            "--chunk-size", "30"]
    r = subprocess.run([*RKD, *args, "--root", str(tmp_path / "ref")], env={**os.environ, **ENV},
                                  cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    (ref,) = [p for p in (tmp_path / "ref").iterdir() if not p.name.startswith(".")]
    # tmpfs: 12 KiB hold a few of the 12 parts; fsize: a part (~4 KiB) is too large for 2 KiB
    t = small_disk.full_then_free(tmp_path / "t", [*RKD, *args, "--root", "{disk}/scores"], free=12 << 10,
                                  limit=2 << 10, cwd=tmp_path, env=ENV)
    assert t.full.rc == 2, t.full.stderr[-3000:]
    disk_error(t.full.stderr, str(t.disk.parent / "disk"))
    assert t.again.rc == 0, t.again.stderr[-3000:]
    store = ScoreStore(t.disk / "scores" / ref.name)
    assert store.complete
    assert store.table().to_pylist() == ScoreStore(ref).table().to_pylist()
    assert not list((store.path / "scores").glob(".part-*"))


# ------------------------------------------------------------------ the translation, in process


def test_describe_names_the_path_and_the_space():
    line = describe(OSError(errno.ENOSPC, "No space left on device"), "/tmp/x", need=3 << 20)
    assert line.startswith("/tmp/x: no space left") and "free there now" in line and "3.0 MiB" in line
    numpy_short = OSError("38400 requested and 3040 written")  # numpy's tofile, no errno
    assert "cut short" in describe(numpy_short, "/tmp/y")
    faiss = RuntimeError("Error in faiss::write_index: write error in /a/index.faiss: 1 != 2 (No space left on device)")
    assert "no space left" in describe(faiss, "/a")
    torch_like = RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
                              "file data/0: file write failed")
    assert "cut short" in describe(torch_like, "/b")
    assert "cut short" in describe(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                                                "101632 vs 101524"), "/b")  # torch.save past a size limit
    assert "file too large" in describe(OSError(errno.EFBIG, "File too large"), "/c")
    denied = describe(PermissionError(errno.EACCES, "Permission denied", "/etc/x"), "/elsewhere")
    assert denied == "/etc/x: permission denied"  # the error's own file wins
    assert describe(ValueError("no file involved")) is None
    assert describe(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")) is None  # network


def test_writing_turns_file_errors_into_one_line_and_lets_others_through(tmp_path):
    with pytest.raises(StorageError, match=f"^{tmp_path}: no space left"):
        with writing(tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(KeyError):
        with writing(tmp_path):
            raise KeyError("not a file error")
