"""``rkd score --ray``: teacher scoring on Ray workers fills the same store as one process, and
survives a killed worker (Ray reruns its chunk) and a killed driver (the store's resume).

The slow tests start a real local Ray (``ray[default]``, the ``scale`` extra; ~5-10 s each on
2 cores). The kill trials run :mod:`tests.ray_worker` as the driver subprocess: its workers' BM25
teacher logs ``<pid> <qid>`` per chunk and sleeps, so the test knows which process to kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retrieval_kd.scores.store import ScoreStore
from tests import store_worker
from tests.test_score_store import make_beir

REPO = Path(__file__).resolve().parents[1]
N_QUERIES, N_DOCS = 9, 12  # make_beir's: one query per chunk, 9 chunks


def has_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


needs_ray = pytest.mark.skipif(not has_ray(), reason="needs Ray: pip install 'retrieval-kd[scale]'")


def table(store: ScoreStore):
    return store.table().to_pandas().sort_values(["qid", "docid"]).reset_index(drop=True)


def assert_same_rows(store: ScoreStore, reference: ScoreStore) -> None:
    """Same (qid, docid) rows exactly once each, same ranks and labels, scores allclose."""
    a, b = table(store), table(reference)
    assert len(a) == len(b) == store.manifest["n_rows"]
    assert not a.duplicated(["qid", "docid"]).any()
    assert list(zip(a.qid, a.docid)) == list(zip(b.qid, b.docid))
    np.testing.assert_allclose(a.score.to_numpy(), b.score.to_numpy(), rtol=1e-9, atol=1e-12)
    assert a[["rank", "label"]].equals(b[["rank", "label"]])


def env() -> dict[str, str]:
    # PYTHONPATH: the local Ray's workers inherit it and import tests.ray_worker's teacher
    return {**os.environ, "PYTHONPATH": str(REPO)}


def rkd(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "retrieval_kd.cli.main", *map(str, args)], cwd=REPO,
                          env=env(), capture_output=True, text=True, timeout=timeout)


def driver(data: Path, root: Path, delay: float, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.ray_worker", str(data), str(root), str(delay),
                             str(log), "2"], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def log_lines(log: Path) -> list[tuple[int, str]]:
    if not log.is_file():
        return []
    return [(int(p), q) for p, q in (ln.split() for ln in log.read_text().splitlines() if ln.strip())]


def wait_for(cond, timeout: float = 120, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def tiny(tmp_path) -> Path:
    return make_beir(tmp_path / "tiny", n_docs=N_DOCS, n_queries=N_QUERIES)


@pytest.fixture
def reference(tiny, tmp_path) -> ScoreStore:
    """The one-process store of :mod:`tests.ray_worker`'s request."""
    store = store_worker.run(str(tiny), str(tmp_path / "ref"), 0.0)
    assert store.complete
    return store


def test_ray_is_optional_and_missing_ray_is_one_clear_error(tiny, tmp_path, monkeypatch):
    from retrieval_kd.cli.main import app

    code = "import sys, retrieval_kd.cli.main, retrieval_kd.scores.ray_scoring; assert 'ray' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0  # importing needs no Ray

    run = tmp_path / "cand.trec"
    run.write_text("q0 Q0 d1 1 3.0 x\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    r = CliRunner().invoke(app, ["score", "-d", str(tiny), "-c", str(run), "--teacher", "bm25",
                                 "--root", str(tmp_path / "s"), "--ray", "local"])
    assert r.exit_code != 0
    err = r.output + str(r.exception or "")
    assert "retrieval-kd[scale]" in err, err
    assert not (tmp_path / "s").exists()
    r = CliRunner().invoke(app, ["score", "-d", str(tiny), "-c", str(run), "--teacher", "bm25",
                                 "--root", str(tmp_path / "s"), "--ray-workers", "2"])
    assert r.exit_code != 0 and "need --ray" in r.output + str(r.exception or "")


@needs_ray
@pytest.mark.slow
def test_cli_ray_store_equals_one_process_store(tiny, tmp_path):
    """``rkd score --ray local --ray-workers 2`` = ``rkd score``: the same store id (the id hashes
    the teacher and the inputs, not where the scores were computed) and the same rows."""
    run = tmp_path / "cand.trec"
    rng = np.random.default_rng(1)
    run.write_text("".join(f"q{q} Q0 d{d} {r} {10 - r / 10:.2f} x\n" for q in range(N_QUERIES)
                           for r, d in enumerate(rng.permutation(N_DOCS)[:8], 1)))
    args = ["score", "-d", tiny, "-c", run, "--teacher", "bm25", "--chunk-size", "8", "--positives"]
    one = rkd(*args, "--root", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = rkd(*args, "--root", tmp_path / "ray", "--ray", "local", "--ray-workers", "2")
    assert two.returncode == 0, two.stderr
    a, b = (ScoreStore(Path(r.stdout.strip().splitlines()[-1])) for r in (one, two))
    assert a.path.name == b.path.name and a.id == b.id
    assert a.complete and b.complete
    assert len(b.parts()) == len(a.parts()) >= 9  # the same chunks (one query each)
    assert_same_rows(b, a)
    assert b.manifest["teacher_loaded"] == a.manifest["teacher_loaded"]  # as the workers loaded it


@needs_ray
@pytest.mark.slow
def test_teacher_that_cannot_load_is_its_own_error_and_leaves_no_store(tiny, tmp_path):
    run = tmp_path / "cand.trec"
    run.write_text("q0 Q0 d1 1 3.0 x\nq1 Q0 d2 1 3.0 x\n")
    r = rkd("score", "-d", tiny, "-c", run, "--teacher", "cross-encoder", "-m", tmp_path / "no-model",
            "--root", tmp_path / "s", "--ray", "local", "--ray-workers", "1")
    assert r.returncode != 0
    assert "error: cannot load the cross-encoder teacher" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


@needs_ray
@pytest.mark.slow
def test_killed_worker_chunk_is_rerun_and_written_once(tiny, tmp_path, reference):
    log, root = tmp_path / "log", tmp_path / "root"
    proc = driver(tiny, root, 2.0, log)  # 2 s per chunk: time to kill the worker inside it
    try:
        wait_for(lambda: len(log_lines(log)) >= 3, what="a third chunk started")
        victim, qid = log_lines(log)[-1]  # a worker asleep in this chunk
        os.kill(victim, signal.SIGKILL)
        out, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    store = ScoreStore(root / reference.path.name)
    assert store.complete
    assert_same_rows(store, reference)
    lines = log_lines(log)
    assert not any(p == victim for p, _ in lines[lines.index((victim, qid)) + 1:])
    # the killed worker's chunk was scored again, by another process; every chunk was scored
    assert [p for p, q in lines if q == qid].count(victim) == 1 and len([q for _, q in lines if q == qid]) == 2
    assert {q for _, q in lines} == {f"q{i}" for i in range(N_QUERIES)}


@needs_ray
@pytest.mark.slow
def test_killed_driver_resumes_on_rerun(tiny, tmp_path, reference):
    log, root = tmp_path / "log", tmp_path / "root"
    store = ScoreStore(root / reference.path.name)
    proc = driver(tiny, root, 1.0, log)
    try:
        wait_for(lambda: len(store.parts()) >= 3, what="three chunks written")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    workers = {p for p, _ in log_lines(log)}
    # the local Ray the driver started dies with it: no worker left running
    wait_for(lambda: not any(alive(p) for p in workers), timeout=60, what="the Ray workers to exit")
    assert not store.complete
    before = {p.name: p.stat().st_mtime_ns for _, _, p in store.parts()}
    assert 3 <= len(before) < N_QUERIES

    n_logged = len(log_lines(log))
    proc = driver(tiny, root, 0.0, log)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    assert store.complete
    assert_same_rows(store, reference)
    after = {p.name: p.stat().st_mtime_ns for _, _, p in store.parts()}
    assert {k: after[k] for k in before} == before  # the parts written before the kill are kept
    assert len(log_lines(log)) - n_logged == N_QUERIES - len(before)  # only the missing chunks
    assert not list((store.path / "scores").glob(".part-*"))


def test_an_unreachable_ray_address_is_one_line_at_once():
    import socket

    from retrieval_kd.errors import RkdError
    from retrieval_kd.scores.ray_scoring import check_reachable

    with socket.socket() as s:  # a port nobody listens on: bind, then close before connecting
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RkdError, match=r"no Ray head answers there"):
        check_reachable(f"127.0.0.1:{port}", timeout=2)
    with pytest.raises(RkdError, match=r"ray://127\.0\.0\.1"):
        check_reachable(f"ray://127.0.0.1:{port}", timeout=2)
    check_reachable("auto")  # not HOST:PORT: left to Ray
