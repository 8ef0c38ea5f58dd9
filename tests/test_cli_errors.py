"""User mistakes at the ``rkd`` command line: one clear error line, the right exit status, and
no half-made store left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval_kd.scores.stage import score_stage
from retrieval_kd.teachers.spec import parse_teacher

RKD = [sys.executable, "-m", "retrieval_kd.cli.main"]


def rkd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*RKD, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def one_error(r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]  # (a progress line may precede it)
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    assert needle in " ".join(errors[0].split()), r.stderr


@pytest.fixture
def tiny(tmp_path: Path, tiny_ds: Path) -> tuple[Path, Path]:
    """A tiny BEIR folder and a TREC run over its test queries."""
    ds = tiny_ds
    run = tmp_path / "cand.trec"
    run.write_text("q1 Q0 d1 1 3.0 x\nq1 Q0 d2 2 2.0 x\nq2 Q0 d2 1 3.0 x\nq2 Q0 d3 2 1.0 x\n")
    return ds, run


def bm25_store(ds: Path, run: Path, root: Path):
    spec = parse_teacher({"kind": "bm25"})
    return score_stage(str(ds), "test", run, spec, root=root, top_k=2, progress=False)


@pytest.mark.slow
def test_verify_exits_1_on_a_mismatch(tiny, tmp_path):
    ds, run = tiny
    store = bm25_store(ds, run, tmp_path / "scores")
    assert rkd("scores", "verify", str(store.path), "-d", str(ds), cwd=tmp_path).returncode == 0
    text = (ds / "corpus.jsonl").read_text().replace("tumor cells grow fast", "tumor cells shrink")
    (ds / "corpus.jsonl").write_text(text)
    r = rkd("scores", "verify", str(store.path), "-d", str(ds), cwd=tmp_path)
    assert r.returncode == 1 and "mismatch" in r.stdout + r.stderr


@pytest.mark.slow
def test_teacher_that_cannot_load_is_one_line_and_leaves_no_store(tiny, tmp_path):
    ds, run = tiny
    r = rkd("score", "-d", str(ds), "-c", str(run), "--teacher", "bi-encoder", "-m",
            "no-such-org/no-such-model", "--root", "scores", cwd=tmp_path)
    one_error(r, "cannot load the bi-encoder teacher 'no-such-org/no-such-model'")
    assert not (tmp_path / "scores").exists() or not any((tmp_path / "scores").iterdir())


def test_missing_teacher_file_is_one_line(tiny, tmp_path):
    ds, run = tiny
    r = rkd("score", "-d", str(ds), "-c", str(run), "-t", "nope.yaml", cwd=tmp_path)
    one_error(r, "nope.yaml: teacher spec file not found")


def test_export_refuses_an_unfinished_store(tiny, tmp_path):
    ds, run = tiny
    store = bm25_store(ds, run, tmp_path / "scores")
    man = json.loads((store.path / "manifest.json").read_text())
    (store.path / "manifest.json").write_text(json.dumps({**man, "status": "running"}))
    r = rkd("scores", "export", str(store.path), "trec", "out.trec", cwd=tmp_path)
    one_error(r, "score store is running")
    assert not (tmp_path / "out.trec").exists()


@pytest.mark.slow
def test_eval_mistakes_are_one_line(tiny, tmp_path):
    ds, run = tiny
    other = tmp_path / "other.trec"
    other.write_text("zz Q0 d1 1 1.0 x\n")
    one_error(rkd("eval", str(other), "-d", str(ds), cwd=tmp_path), "retrieves nothing for any of the 2 judged")
    one_error(rkd("eval", str(run), "-d", str(ds), "--metrics", "ndcg@10,bogus@3", cwd=tmp_path),
              "Metric bogus not supported")


@pytest.mark.slow
def test_eval_tells_apart_runs_of_the_same_name(tiny, tmp_path):
    ds, run = tiny
    for d in ("a", "b"):
        r = rkd("retrieve", "bm25", "-d", str(ds), "-o", f"runs/{d}", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    r = rkd("eval", "runs/a", "runs/b", "-d", str(ds), "-o", "res", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names = [x["system"] for x in json.loads((tmp_path / "res.json").read_text())["results"]]
    assert names == ["bm25 (runs/a)", "bm25 (runs/b)"]


def test_error_text_with_brackets_is_printed_as_written(tiny, tmp_path):
    """An error message is text, never rich markup: '[j, k]' must survive to the terminal."""
    ds, run = tiny
    r = rkd("train", "-f", "bi-encoder", "-m", "splade-tiny", "--label-only", "--candidates", str(run),
            "-d", str(ds), "-s", "test", "--query-folds", "5/3", "-o", str(tmp_path / "m"), cwd=tmp_path)
    one_error(r, "need [j, k] with k >= 2")
    assert not (tmp_path / "m").exists()
