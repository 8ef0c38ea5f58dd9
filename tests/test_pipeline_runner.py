"""The runner with real, cheap stages (BM25, a BM25 teacher, eval) on a tiny BEIR folder:
caching, what reruns when one parameter changes, and kill -9 in the middle of a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrieval_kd.artifacts import read_json
from retrieval_kd.errors import RkdError
from retrieval_kd.pipeline.load import load_pipeline
from retrieval_kd.pipeline.plan import plan
from retrieval_kd.pipeline.runner import describe_plan, run_stages
from tests.test_pipeline import write_corpus

PIPE = """\
name: tiny
datasets:
  tiny: {source: tiny}
retrieve:
  bm25: {kind: bm25, dataset: tiny, splits: [train, test], k: 30}
  bm25-r: {kind: bm25, dataset: tiny, splits: [test], k: 30, method: robertson, k1: 1.2}
teachers:
  bm25t:
    dataset: tiny
    splits: [train, test]
    candidates: bm25
    top_k: 10
    chunk_size: 20
    teacher: {kind: bm25, k1: 1.5, b: 0.6}
evals:
  test:
    dataset: tiny
    split: test
    baseline: BM25
    systems: {BM25: "retrieve:bm25", BM25 robertson: "retrieve:bm25-r", rerank: "teacher:bm25t"}
"""


def setup(d: Path, text: str = PIPE, **corpus) -> Path:
    if not (d / "tiny").exists():
        write_corpus(d / "tiny", **corpus)
    p = d / "p.yaml"
    p.write_text(text)
    return p


def statuses(record: dict) -> dict[str, str]:
    return {s["id"]: s["status"] for s in record["stages"]}


def quiet(_msg: str) -> None:
    pass


def run(path: Path, root: Path, **kw) -> dict:
    return run_stages(load_pipeline(path), root, echo=quiet, **kw)


def outputs(root: Path) -> dict[str, bytes]:
    """Every finished stage's run file and eval results, keyed by stage id."""
    rec = read_json(root / "run.json")
    out = {}
    for s in rec["stages"]:
        d = root / s["dir"]
        if (d / "run.trec").is_file():
            out[s["id"]] = (d / "run.trec").read_bytes()
        if (d / "results.json").is_file():
            out[s["id"]] = json.dumps([r["metrics"] for r in read_json(d / "results.json")["results"]]).encode()
    return out


@pytest.mark.slow
def test_second_run_is_all_cached_and_record_is_complete(tmp_path):
    p = setup(tmp_path)
    root = tmp_path / "runs"
    first = run(p, root)
    assert set(statuses(first).values()) == {"ran"} and first["status"] == "complete"
    # the run record holds the process's memory: each ran stage's resident set after it, the peak
    mem = [s["memory"] for s in first["stages"]]
    assert all(0 < m["rss_mb"] <= m["peak_rss_mb"] for m in mem)
    assert first["totals"]["peak_rss_mb"] >= max(m["peak_rss_mb"] for m in mem)
    second = run(p, root)
    assert set(statuses(second).values()) == {"cached"}
    assert outputs(root) and len(outputs(root)) == 6
    rec = read_json(root / "run.json")
    for s in rec["stages"]:
        assert s["key"] and s["wall_s"] is not None and (root / s["dir"] / "stage.json").is_file()
    score = next(s for s in rec["stages"] if s["id"] == "teacher:bm25t@test")
    assert score["result"]["throughput"]["pairs_per_s"] > 0 and score["result"]["store"].startswith("stores/")
    bm25 = next(s for s in rec["stages"] if s["id"] == "retrieve:bm25@test")
    assert bm25["result"]["throughput"]["queries_per_s"] > 0
    assert (root / "pipeline.yaml").read_text() == p.read_text()


@pytest.mark.slow
def test_changing_one_parameter_reruns_that_stage_and_its_dependents_only(tmp_path):
    p = setup(tmp_path)
    root = tmp_path / "runs"
    run(p, root)
    before = outputs(root)
    p.write_text(PIPE.replace("method: robertson, k1: 1.2", "method: robertson, k1: 1.6"))
    rows = {r["id"]: r for r in describe_plan(plan(load_pipeline(p)), root)}
    assert rows["retrieve:bm25-r@test"]["status"] == "run" and rows["retrieve:bm25-r@test"]["why"].startswith("changed")
    rec = run(p, root)
    assert statuses(rec) == {
        "retrieve:bm25@train": "cached", "retrieve:bm25@test": "cached", "retrieve:bm25-r@test": "ran",
        "teacher:bm25t@train": "cached", "teacher:bm25t@test": "cached", "eval:test": "ran"}
    after = outputs(root)
    assert after["retrieve:bm25@test"] == before["retrieve:bm25@test"]
    assert after["retrieve:bm25-r@test"] != before["retrieve:bm25-r@test"]

    # the teacher's parameter: both of its splits and the eval rerun, the first stages do not
    p.write_text(PIPE.replace("k1: 1.5, b: 0.6", "k1: 1.5, b: 0.7").replace("k1: 1.2", "k1: 1.6"))
    rec = run(p, root)
    assert [k for k, v in statuses(rec).items() if v == "ran"] == [
        "teacher:bm25t@train", "teacher:bm25t@test", "eval:test"]

    # back to the first version: every stage's output is still on disk under its old key
    p.write_text(PIPE)
    assert set(statuses(run(p, root)).values()) == {"cached"}
    assert outputs(root) == before


@pytest.mark.slow
def test_runtime_knobs_and_display_only_changes(tmp_path):
    p = setup(tmp_path)
    root = tmp_path / "runs"
    run(p, root)
    p.write_text(PIPE.replace("chunk_size: 20", "chunk_size: 7"))  # store layout only, same scores
    assert set(statuses(run(p, root)).values()) == {"cached"}
    p.write_text(PIPE.replace("rerank:", "teacher rerank:"))  # the eval's names: only the eval
    assert [k for k, v in statuses(run(p, root)).items() if v == "ran"] == ["eval:test"]


@pytest.mark.slow
def test_changed_dataset_file_reruns_every_stage_that_reads_it(tmp_path):
    p = setup(tmp_path)
    root = tmp_path / "runs"
    run(p, root)
    qrels = tmp_path / "tiny" / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text().replace("\t1\n", "\t2\n", 1))
    assert set(statuses(run(p, root)).values()) == {"ran"}


def test_only_runs_a_stage_and_what_it_needs(tmp_path):
    p = setup(tmp_path)
    root = tmp_path / "runs"
    rec = run(p, root, only=["teacher:bm25t@test"])
    st = statuses(rec)
    assert st["retrieve:bm25@test"] == "ran" and st["teacher:bm25t@test"] == "ran"
    assert st["eval:test"] == "not selected" and st["retrieve:bm25@train"] == "not selected"
    assert rec["status"] == "partial"
    with pytest.raises(RkdError, match="no stage matches"):
        run(p, root, only=["student:x"])


def test_a_failing_stage_is_recorded_and_leaves_no_output(tmp_path):
    p = setup(tmp_path, PIPE.replace("source: tiny", "source: tiny2"))
    write_corpus(tmp_path / "tiny2")
    root = tmp_path / "runs"
    (tmp_path / "tiny2" / "corpus.jsonl").write_text("not json\n")
    with pytest.raises(Exception, match="corpus.jsonl"):
        run(p, root)
    rec = read_json(root / "run.json")
    assert rec["status"] == "failed"
    failed = [s for s in rec["stages"] if s["status"] == "failed"]
    assert len(failed) == 1 and "corpus.jsonl" in failed[0]["error"]
    assert not (root / failed[0]["dir"]).exists()


def test_a_second_runner_on_the_same_root_is_refused(tmp_path):
    import fcntl

    p = setup(tmp_path)
    root = tmp_path / "runs"
    root.mkdir()
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(RkdError, match="another 'rkd run'"):
            run(p, root)


# ------------------------------------------------------------------ real process, kill -9

RKD = [sys.executable, "-m", "retrieval_kd.cli.main"]


def rkd(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*RKD, *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=600, **kw)


def finished_dirs(root: Path) -> set[str]:
    d = root / "stages"
    return {p.name for p in d.iterdir() if not p.name.startswith(".")} if d.is_dir() else set()


def kill_when(cmd: list[str], cwd: Path, ready, timeout: float = 300) -> bool:
    """Start ``cmd``; SIGKILL it as soon as ``ready()`` holds. False if it ended first."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    try:
        while proc.poll() is None and time.time() - t0 < timeout:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.002)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


BIG = PIPE.replace("top_k: 10", "top_k: 25").replace("chunk_size: 20", "chunk_size: 25")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["between stages", "inside the score stage"])
def test_kill_9_then_rerun_skips_finished_stages_and_matches_an_uninterrupted_run(tmp_path, where):
    p = setup(tmp_path, BIG, n_docs=400, n_queries=240)
    ref = rkd("run", str(p), "--root", "ref", "--no-report", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    root = tmp_path / "killed"

    def parts() -> list[Path]:
        return list((root / "stages").glob(".work-teacher-*/stores/*/scores/part-*.parquet"))

    ready = (lambda: len(finished_dirs(root)) >= 2) if where == "between stages" else (lambda: len(parts()) >= 1)
    killed = kill_when([*RKD, "run", str(p), "--root", "killed", "--no-report"], tmp_path, ready)
    assert killed, "the run ended before it could be killed"
    done_at_kill = finished_dirs(root)
    assert 1 <= len(done_at_kill) < 6
    rec = read_json(root / "run.json")
    assert rec["status"] == "running"

    again = rkd("run", str(p), "--root", "killed", "--no-report", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    rec = read_json(root / "run.json")
    by_dir = {s["dir"].split("/", 1)[1]: s["status"] for s in rec["stages"]}
    assert all(by_dir[d] == "cached" for d in done_at_kill)
    assert sum(v == "ran" for v in by_dir.values()) == 6 - len(done_at_kill)
    assert rec["status"] == "complete"
    assert outputs(root) == outputs(tmp_path / "ref")
    assert not [q for q in (root / "stages").iterdir() if q.name.startswith(".")]
    assert not [q for q in root.iterdir() if ".tmp-" in q.name]


@pytest.mark.slow
def test_cli_dry_run_prints_the_plan_with_cached_stages(tmp_path):
    p = setup(tmp_path)
    r = rkd("run", str(p), "--root", "r", "--only", "retrieve:bm25", "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = rkd("run", str(p), "--root", "r", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.split() and ":" in ln.split()[0]}
    assert "cached" in lines["retrieve:bm25@train"] and "cached" in lines["retrieve:bm25@test"]
    assert "run (new)" in lines["eval:test"] and "teacher:bm25t@test" in lines["eval:test"]
    assert "2 cached, 4 to run" in r.stdout


def test_cli_reports_pipeline_errors_with_file_and_line(tmp_path):
    p = setup(tmp_path, PIPE.replace("top_k: 10", "top_k: ten"))
    r = rkd("run", str(p), "--dry-run", cwd=tmp_path)
    assert r.returncode == 2
    line = next(i for i, t in enumerate(p.read_text().splitlines(), 1) if "top_k: ten" in t)
    assert f"{p}:{line}: teachers.bm25t.top_k" in r.stdout + r.stderr


@pytest.mark.slow
def test_score_stages_with_one_teacher_spec_load_it_once(tmp_path, monkeypatch):
    import retrieval_kd.teachers.spec as spec_mod
    from retrieval_kd.pipeline import adapters
    from retrieval_kd.scores.stage import score_stage

    built = []
    real = spec_mod.build_teacher

    def counting(spec):
        built.append(spec.kind)
        return real(spec)

    monkeypatch.setattr(spec_mod, "build_teacher", counting)
    adapters._LOADED_TEACHER.clear()
    p = setup(tmp_path)
    root = tmp_path / "runs"
    run(p, root)
    assert built == ["bm25"]  # teacher:bm25t@train and @test: one load
    # the reused teacher scores exactly what a fresh one does
    rec = read_json(root / "run.json")
    for split in ("train", "test"):
        st = next(s for s in rec["stages"] if s["id"] == f"teacher:bm25t@{split}")
        cand = next(s for s in rec["stages"] if s["id"] == f"retrieve:bm25@{split}")
        spec = spec_mod.parse_teacher({"kind": "bm25", "k1": 1.5, "b": 0.6})
        fresh = score_stage(str(tmp_path / "tiny"), split, root / cand["dir"], spec, root=tmp_path / f"s-{split}",
                            top_k=10, chunk_size=20, progress=False)
        got = {(q, d): s for q, h in fresh.scores().items() for d, s in h.items()}
        from retrieval_kd.data.trec import load_trec_run

        want = {(q, d): s for q, h in load_trec_run(root / st["dir"] / "run.trec").items() for d, s in h.items()}
        assert want and got.keys() == want.keys()
        assert all(abs(got[k] - want[k]) < 1e-9 for k in got)


@pytest.mark.slow
def test_cli_says_when_an_only_run_leaves_the_report_as_it_was(tmp_path):
    p = setup(tmp_path)
    r = rkd("run", str(p), "--root", "r", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r" / "report" / "report.md").is_file()
    p.write_text(PIPE.replace("top_k: 10", "top_k: 9"))  # the teacher changes, the eval is out of date
    r = rkd("run", str(p), "--root", "r", "--only", "teacher:bm25t", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "report not rewritten (no eval stage in this run)" in " ".join((r.stdout + r.stderr).split())
