"""One writer per output: the lock itself (who holds it, bounded waits, a killed holder's lock
taken over, a forked child still holding it) and two writers at once on ``rkd index``,
``rkd train``, ``rkd score`` and ``rkd run``, each a real process: the second one fails at once
with one line naming the first, or waits for it and ends with the same one artifact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from retrieval_kd.locks import LockedError, hold, lock_file_for, read_holder
from tests.beir import random_beir
from tests.test_disk_full import one_line
from tests.test_index_tiny import tiny_st
from tests.test_train_support import tiny_config, train_env  # noqa: F401 - fixture

PY = sys.executable
RKD = [PY, "-m", "retrieval_kd.cli.main"]
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def start(code: str, *args: str, cwd: Path) -> subprocess.Popen:
    """A Python process running ``code`` (stderr to a file beside, read by ``err``)."""
    log = open(cwd / f"proc-{time.monotonic_ns()}.err", "w+")  # noqa: SIM115 - closed with the process
    p = subprocess.Popen([PY, "-c", textwrap.dedent(code), *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL,
                         stderr=log, text=True)
    p.log = log  # type: ignore[attr-defined]
    return p


def err(p: subprocess.Popen) -> str:
    p.log.flush()  # type: ignore[attr-defined]
    return Path(p.log.name).read_text()  # type: ignore[attr-defined]


def wait_for(cond: Callable[[], bool], what: str, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended before {what}: {err(proc)[-3000:]}")
        assert time.time() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.05)


def held_by(lock: Path, pid: int) -> Callable[[], bool]:
    return lambda: (read_holder(lock) or {}).get("pid") == pid


def rkd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*RKD, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600, check=False)


def rkd_bg(*args: str, cwd: Path) -> subprocess.Popen:
    log = open(cwd / f"rkd-{time.monotonic_ns()}.err", "w+")  # noqa: SIM115
    p = subprocess.Popen([*RKD, *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=log, text=True)
    p.log = log  # type: ignore[attr-defined]
    return p


def finish(p: subprocess.Popen, timeout: float = 600) -> str:
    p.wait(timeout=timeout)
    out = err(p)
    assert p.returncode == 0, out[-3000:]
    return out


# ------------------------------------------------------------------ the lock


HOLD = """
    import os, sys, time
    from pathlib import Path
    from retrieval_kd.locks import hold
    lock, release, fork = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "fork"
    with hold(lock, "test"):
        if fork and os.fork() == 0:  # the child inherits the locked descriptor and outlives us
            while not release.exists():
                time.sleep(0.05)
            os._exit(0)
        if fork:
            os._exit(0)
        while not release.exists():
            time.sleep(0.05)
"""


def test_a_second_holder_fails_at_once_naming_the_first_or_waits_bounded(tmp_path):
    lock, release = tmp_path / "x.lock", tmp_path / "go"
    a = start(HOLD, str(lock), str(release), "-", cwd=tmp_path)
    try:
        wait_for(held_by(lock, a.pid), "lock", a)
        rec = read_holder(lock)
        assert rec["host"] and rec["started"] and "-c" in rec["command"]
        t0 = time.monotonic()
        with pytest.raises(LockedError, match=rf"^out: busy: locked by pid {a.pid} on .* since .*--lock-wait"):
            with hold(lock, "out: busy", wait=0):
                pass
        assert time.monotonic() - t0 < 2  # at once
        t0 = time.monotonic()
        with pytest.raises(LockedError, match=rf"locked by pid {a.pid} .* after waiting 0.6s"):
            with hold(lock, "out: busy", wait=0.6):
                pass
        assert time.monotonic() - t0 >= 0.6
        threading.Timer(0.5, release.touch).start()  # the holder lets go while we wait
        with hold(lock, "out: busy", wait=60):
            assert read_holder(lock)["pid"] == os.getpid()
            with hold(lock, "re-entered"):  # the same process again: no deadlock
                pass
            assert lock.exists()
        assert not lock.exists()  # removed on release
    finally:
        release.touch()
        a.wait(timeout=60)


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path, capsys):
    lock, release = tmp_path / "x.lock", tmp_path / "go"
    a = start(HOLD, str(lock), str(release), "-", cwd=tmp_path)
    wait_for(held_by(lock, a.pid), "lock", a)
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=60)
    assert read_holder(lock)["pid"] == a.pid  # the kernel released the flock; the record stays
    with hold(lock, "busy"):
        assert read_holder(lock)["pid"] == os.getpid()
    assert f"taking over the lock left by pid {a.pid}" in " ".join(capsys.readouterr().err.split())


def test_a_forked_child_of_a_dead_holder_still_holds_the_lock_and_is_named(tmp_path):
    lock, release = tmp_path / "x.lock", tmp_path / "go"
    a = start(HOLD, str(lock), str(release), "fork", cwd=tmp_path)
    try:
        wait_for(lambda: a.poll() is not None, "exit of the holder")
        assert (read_holder(lock) or {}).get("pid") == a.pid
        with pytest.raises(LockedError, match="no longer running: a child process it started still holds"):
            with hold(lock, "busy"):
                pass
    finally:
        release.touch()
    with hold(lock, "busy", wait=60):  # once the child is gone
        pass


# ------------------------------------------------------------------ two writers: index


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("locks")
    return {"ds": random_beir(root / "ds"), "st": tiny_st(root / "st")}


SLOW_INDEX = """
    import sys, time
    from pathlib import Path
    from retrieval_kd.index.build import build_index
    from retrieval_kd.index.faiss_index import FaissParams

    def hold_on(i):  # mid-encoding, until the test lets go
        while i == 1 and not Path(sys.argv[4]).exists():
            time.sleep(0.05)

    build_index("dense", sys.argv[1], sys.argv[2], sys.argv[3], chunk_size=10,
                faiss_params=FaissParams(index="flat"), after_chunk=hold_on)
"""


@pytest.mark.slow
def test_two_index_builds_on_one_output(tiny, tmp_path):
    out, release = tmp_path / "idx" / "x", tmp_path / "go"
    args = ["index", "dense", "-m", str(tiny["st"]), "-d", str(tiny["ds"]), "--chunk-size", "10", "-o", str(out)]
    a = start(SLOW_INDEX, str(tiny["ds"]), str(out), str(tiny["st"]), str(release), cwd=tmp_path)
    try:
        wait_for(lambda: (out.parent / ".x.work" / "chunk-000001").is_dir(), "encoding", a)
        assert read_holder(lock_file_for(out))["pid"] == a.pid
        b = rkd(*args, cwd=tmp_path)  # fails at once, naming the builder
        assert b.returncode == 2
        one_line(b.stderr, f"{out}: another process is building this index", f"locked by pid {a.pid}")
        c = rkd_bg("--lock-wait", "300", *args, cwd=tmp_path)  # waits for it instead
        wait_for(lambda: "waiting up to 300s" in err(c), "a waiting second build", c)
    finally:
        release.touch()
    finish(a)
    finish(c)
    rkd(*args[:-1], str(tmp_path / "ref"), cwd=tmp_path)
    assert (out / "index.faiss").read_bytes() == (tmp_path / "ref" / "index.faiss").read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["x"]  # no lock, work or temp left


@pytest.mark.slow
def test_a_killed_build_leaves_a_stale_lock_the_rerun_takes_over_and_resumes(tiny, tmp_path):
    out = tmp_path / "idx" / "x"
    a = start(SLOW_INDEX, str(tiny["ds"]), str(out), str(tiny["st"]), str(tmp_path / "never"), cwd=tmp_path)
    wait_for(lambda: (out.parent / ".x.work" / "chunk-000001").is_dir(), "encoding", a)
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=60)
    assert read_holder(lock_file_for(out))["pid"] == a.pid
    r = rkd("index", "dense", "-m", str(tiny["st"]), "-d", str(tiny["ds"]), "--chunk-size", "10",
            "--index", "flat", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"taking over the lock left by pid {a.pid}" in " ".join(r.stderr.split())
    man = json.loads((out / "manifest.json").read_text())
    assert man["stats"]["encode"]["chunks_resumed"] == 2


# ------------------------------------------------------------------ two writers: train


SLOW_TRAIN = """
    import sys, time
    from pathlib import Path
    from transformers import TrainerCallback
    from retrieval_kd.train.config import TrainConfig
    from retrieval_kd.train.stage import train_stage

    class HoldOn(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            (Path(sys.argv[2]).parent / "stepped").touch()
            while not Path(sys.argv[2]).exists():
                time.sleep(0.05)

    train_stage(TrainConfig.model_validate_json(open(sys.argv[1]).read()), progress=False, callbacks=[HoldOn()])
"""


@pytest.mark.slow
def test_two_trainings_into_one_output(train_env, tmp_path):  # noqa: F811
    out, release = tmp_path / "models" / "m", tmp_path / "go"
    cfg = tiny_config(train_env, "bi-encoder", out, max_steps=4, save_steps=2)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    a = start(SLOW_TRAIN, str(tmp_path / "cfg.json"), str(release), cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "stepped").exists(), "a training step", a)
        (tmp_path / "train.yaml").write_text(cfg.model_dump_json())  # JSON is YAML
        b = rkd("train", "-c", "train.yaml", cwd=tmp_path)
        assert b.returncode == 2
        one_line(b.stderr, f"{out}: another process is training into this output", f"locked by pid {a.pid}")
    finally:
        release.touch()
    finish(a)
    again = rkd("train", "-c", "train.yaml", cwd=tmp_path)  # the finished run is found, not redone
    assert again.returncode == 0, again.stderr[-3000:]
    man = json.loads((out / "manifest.json").read_text())
    assert man["outputs"]["global_step"] == 4 and len(man["sessions"]) == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]


# ------------------------------------------------------------------ two writers: score


SLOW_SCORE = """
    import sys, time
    from pathlib import Path
    from retrieval_kd.scores.stage import score_stage
    from retrieval_kd.teachers.bm25 import BM25Teacher
    from retrieval_kd.teachers.spec import parse_teacher

    class HoldOn(BM25Teacher):
        def score(self, pairs):
            (Path(sys.argv[3]).parent / "scoring").touch()
            while not Path(sys.argv[3]).exists():
                time.sleep(0.05)
            return super().score(pairs)

    score_stage(sys.argv[1], "test", sys.argv[2], parse_teacher({"kind": "bm25"}), root="scores", top_k=20,
                chunk_size=40, progress=False, teacher_factory=HoldOn)
"""


@pytest.mark.slow
def test_two_scorings_of_one_request(tiny, tmp_path):
    from retrieval_kd.scores.store import ScoreStore

    run, release = tmp_path / "cand.trec", tmp_path / "go"
    run.write_text("".join(f"q{q} Q0 d{(q + r) % 120} {r + 1} {50 - r} x\n" for q in range(12) for r in range(20)))
    args = ["score", "-d", str(tiny["ds"]), "-c", str(run), "--top-k", "20", "--teacher", "bm25", "--chunk-size", "40"]
    a = start(SLOW_SCORE, str(tiny["ds"]), str(run), str(release), cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "scoring").exists(), "scoring", a)
        (store_dir,) = [p for p in (tmp_path / "scores").iterdir() if not p.name.startswith(".")]
        b = rkd(*args, cwd=tmp_path)
        assert b.returncode == 2
        one_line(b.stderr, f"scores/{store_dir.name}: another process is scoring into this store", f"locked by pid {a.pid}")
        c = rkd_bg("--lock-wait", "300", "score", *args[1:], cwd=tmp_path)
        wait_for(lambda: "waiting up to 300s" in err(c), "a waiting second scoring", c)
    finally:
        release.touch()
    finish(a)
    finish(c)
    store = ScoreStore(store_dir)
    assert store.complete and len(store.manifest["sessions"]) == 1  # the waiter found it complete: no rescoring
    ref = rkd(*args, "--root", str(tmp_path / "ref"), cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert store.table().to_pylist() == ScoreStore(tmp_path / "ref" / store_dir.name).table().to_pylist()
    assert sorted(p.name for p in store_dir.parent.iterdir()) == [store_dir.name]


# ------------------------------------------------------------------ two runners: rkd run


HOLD_RUN = """
    import sys, time
    from pathlib import Path
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.runner import run_lock, run_stages

    root, release = Path(sys.argv[2]).resolve(), Path(sys.argv[3])
    with run_lock(root):  # the runner's own lock, held from before its first stage
        while not release.exists():
            time.sleep(0.05)
        run_stages(load_pipeline(Path(sys.argv[1])), root, echo=lambda m: None)
"""


@pytest.mark.slow
def test_two_runners_on_one_run_root(tmp_path):
    from tests.test_pipeline_runner import setup

    p, root, release = setup(tmp_path), tmp_path / "runs", tmp_path / "go"
    a = start(HOLD_RUN, str(p), str(root), str(release), cwd=tmp_path)
    try:
        wait_for(held_by(root / ".lock", a.pid), "the run lock", a)
        b = rkd("run", str(p), "--root", str(root), "--no-report", cwd=tmp_path)
        assert b.returncode == 2
        one_line(b.stderr, "another 'rkd run' is using this run root", f"locked by pid {a.pid}")
        c = rkd_bg("--lock-wait", "300", "run", str(p), "--root", str(root), "--no-report", cwd=tmp_path)
        wait_for(lambda: "waiting up to 300s" in err(c), "a waiting second runner", c)
    finally:
        release.touch()
    finish(a)
    finish(c)
    rec = json.loads((root / "run.json").read_text())
    assert rec["status"] == "complete" and {s["status"] for s in rec["stages"]} == {"cached"}
