"""Folders the tool did not create are never used or deleted: a user's folder where ``rkd index``
or ``rkd train`` keeps its work, or where its output goes, is refused with one line and left as
it was; the tool's own work folders carry a marker, and those from before markers are still
recognised and resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval_kd.workdirs import MARKER, ForeignFolderError, claim, release
from tests.beir import random_beir
from tests.test_disk_full import one_line
from tests.test_index_tiny import tiny_st
from tests.test_train_support import train_env  # noqa: F401 - fixture

RKD = [sys.executable, "-m", "retrieval_kd.cli.main"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def rkd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*RKD, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600, check=False)


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine\n")
    (path / "sub").mkdir()
    (path / "sub" / "data.bin").write_bytes(b"\x00\x01")
    return path


def untouched(path: Path) -> bool:
    return ((path / "notes.txt").read_text() == "mine\n" and (path / "sub" / "data.bin").read_bytes() == b"\x00\x01"
            and sorted(p.name for p in path.iterdir()) == ["notes.txt", "sub"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("workdirs")
    return {"ds": random_beir(root / "ds", n_docs=40), "st": tiny_st(root / "st")}


def index(tiny, *extra: str, cwd: Path) -> subprocess.CompletedProcess:
    return rkd("index", "dense", "-m", str(tiny["st"]), "-d", str(tiny["ds"]), "--chunk-size", "10", *extra, cwd=cwd)


@pytest.mark.slow
def test_index_refuses_a_user_folder_at_its_work_path_and_leaves_it(tiny, tmp_path):
    mine = user_folder(tmp_path / "idx" / ".x.work")  # where the default work folder goes
    r = index(tiny, "-o", "idx/x", cwd=tmp_path)
    assert r.returncode == 2
    one_line(r.stderr, "idx/.x.work: exists and was not created by rkd", "left untouched")
    assert untouched(mine) and not (tmp_path / "idx" / "x").exists()
    other = user_folder(tmp_path / "scratch")
    r = index(tiny, "-o", "idx/y", "--work-dir", "scratch", cwd=tmp_path)
    assert r.returncode == 2
    one_line(r.stderr, "scratch: exists and was not created by rkd", "--work-dir")
    assert untouched(other)


@pytest.mark.slow
def test_index_uses_an_empty_folder_given_as_work_dir_and_keeps_it(tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    r = index(tiny, "-o", "idx/x", "--work-dir", "empty", "--keep-embeddings", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())  # emptied, not removed
    assert len(list((tmp_path / "idx" / "x" / "embeddings").glob("chunk-*"))) == 4
    assert not (tmp_path / "idx" / "x" / "embeddings" / MARKER).exists()


@pytest.mark.slow
def test_index_and_train_refuse_to_replace_an_output_that_is_not_theirs(tiny, train_env, tmp_path):  # noqa: F811
    mine = user_folder(tmp_path / "out")
    r = index(tiny, "-o", "out", cwd=tmp_path)
    assert r.returncode == 2
    one_line(r.stderr, "out: exists and is not one (no rkd manifest.json)", "left untouched")
    assert untouched(mine)
    r = rkd("train", "-f", "bi-encoder", "-m", str(train_env["bi-encoder"]), "--scores", str(train_env["store"]),
            "-d", str(train_env["dataset"]), "-s", "train", "--max-steps", "1", "--batch-size", "4", "-o", "out",
            "--restart", cwd=tmp_path)
    assert r.returncode == 2
    one_line(r.stderr, "out: exists and is not one", "training would replace it")
    assert untouched(mine)


@pytest.mark.slow
def test_train_refuses_a_user_folder_at_its_work_path_even_with_restart(train_env, tmp_path):  # noqa: F811
    mine = user_folder(tmp_path / "models" / ".m.work")
    for extra in ((), ("--restart",)):
        r = rkd("train", "-f", "bi-encoder", "-m", str(train_env["bi-encoder"]), "--scores", str(train_env["store"]),
                "-d", str(train_env["dataset"]), "-s", "train", "--max-steps", "1", "--batch-size", "4",
                "-o", "models/m", *extra, cwd=tmp_path)
        assert r.returncode == 2
        one_line(r.stderr, "models/.m.work: exists and was not created by rkd")
        assert untouched(mine) and not (tmp_path / "models" / "m").exists()


# ------------------------------------------------------------------ in process


def test_a_chunk_folder_from_before_markers_is_recognised_and_resumed(tmp_path):
    from retrieval_kd.index.chunks import ChunkStore

    first = ChunkStore(tmp_path / "w", {"m": 1}, 10, 4)
    first.write_chunk(0, {"emb": np.ones((4, 2), np.float32)})
    (tmp_path / "w" / MARKER).unlink()  # as an earlier version left it
    again = ChunkStore(tmp_path / "w", {"m": 1}, 10, 4)
    assert again.done_chunks() == [0] and (tmp_path / "w" / MARKER).is_file()
    (tmp_path / "w" / MARKER).unlink()
    (tmp_path / "w" / "README").write_text("not ours")  # then it is not recognisably the tool's
    with pytest.raises(ForeignFolderError, match="was not created by rkd"):
        ChunkStore(tmp_path / "w", {"m": 1}, 10, 4)
    assert (tmp_path / "w" / "chunk-000000").is_dir()


def test_claim_and_release(tmp_path):
    made = claim(tmp_path / "new", "test")
    assert json.loads((made / MARKER).read_text())["created"] is True
    (made / "x").write_text("work")
    release(made)
    assert not made.exists()
    mine = user_folder(tmp_path / "mine")
    with pytest.raises(ForeignFolderError):
        claim(mine, "test", option="--work-dir")
    release(mine)  # not marked: never removed
    assert untouched(mine)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ForeignFolderError, match="a file sits where"):
        claim(tmp_path / "file", "test")
