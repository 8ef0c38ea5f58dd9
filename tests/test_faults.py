"""Fault trials: issue 17's acceptance suite, with real ``rkd`` processes.

Where each acceptance line is tested:

* kill -9 at >= 5 points each of ``rkd score``, ``rkd train``, ``rkd index`` and ``rkd run``, the
  rerun ending in the uninterrupted artifact: here, ``test_kill_9_score``, ``test_kill_9_index``,
  ``test_kill_9_train``, ``test_kill_9_run`` (and, older, one point each in
  ``test_score_store.py::test_kill9_at_several_points_then_resume_equals_uninterrupted``,
  ``test_train_stage.py::test_killed_run_resumes_from_its_last_checkpoint``,
  ``test_index_cli.py::test_sigkilled_encode_resumes_to_an_identical_index``,
  ``test_pipeline_runner.py::test_kill_9_then_rerun_skips_finished_stages_and_matches_an_uninterrupted_run``).
* two writers at once on each of score, train, index, run: ``test_locks.py``
  (``test_two_scorings_of_one_request``, ``test_two_trainings_into_one_output``,
  ``test_two_index_builds_on_one_output``, ``test_two_runners_on_one_run_root``; a killed
  holder's lock taken over: ``test_a_killed_build_leaves_a_stale_lock_the_rerun_takes_over_and_resumes``).
* corrupted / truncated index, ids, embeddings, store, model files: ``test_verify.py`` (``rkd search``
  on a flipped, truncated or bad-header ``index.faiss`` and swapped or truncated ids; a damaged work
  chunk encoded again; store parts flipped, truncated, unrecorded; a trained model's truncated
  tokenizer; the model cache's truncated and flipped files fetched again; ``rkd verify``), and here
  ``test_damaged_artifacts_are_named_by_rkd_verify_and_their_users``: every kind of file, flipped and
  cut short, through ``rkd verify`` and through the commands that read it (``rkd train`` on a store,
  ``rkd index`` with a model), one error line each, as real processes.
* a full disk for index, train and score: ``test_disk_full.py``.
* the flipped-byte and swapped-ids cases exit non-zero naming the file:
  ``test_verify.py::test_damaged_index_search_exits_with_one_line_naming_the_file``.
* inputs that never run code, keys never shown: ``test_security.py``; work folders the tool does not
  own: ``test_work_folders.py``.

How a kill point is chosen: ``tests/kill_hook.py`` runs the real command line with an audit hook
that sends the process SIGKILL at the N-th file-system event of a kind whose path matches a
pattern (before the operation, or ``~after`` it): the same place on every run, found without
polling, each hit recorded (event, path, events before it, seconds) and printed with ``-s``.
The points (the ``*_LANES`` tables) cover each command's phases: start-up, mid-way (chunks, parts,
checkpoints, stages done), a chunk / part / checkpoint half written, the output complete in its
temporary folder, in place with its work folder not yet (or half) removed, the lock left behind.

A trial passes when the process died by SIGKILL at its point, what it left holds no partial
artifact at the final path and nothing the reference lacks (score rows a subset of the reference's,
no (query, doc) twice; finished stages equal to the reference's), and the rerun exits 0 without a
traceback and ends in the uninterrupted reference artifact: index files byte-equal, trained model
files equal (``model.safetensors`` included; not the model card), score rows equal as a multiset,
run outputs equal; verified against its recorded digests; no lock, temporary or work folder left.
To share process start-up (each index and train process loads torch and a model) the points of a
command run in two lanes: a kill's rerun is the next trial's process, killed at a later point, and
a lane's last rerun completes. Every lane and the four reference runs go through one pool, two
processes at a time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.beir import random_beir
from tests.test_disk_full import files_of, one_line
from tests.test_index_tiny import tiny_st
from tests.test_train_support import train_env  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
TIMEOUT = 300

pytestmark = pytest.mark.slow  # every test reads the trials fixture: a few minutes of killed and rerun lanes

SCORE = ["score", "-d", "{ds}", "-c", "{cand}", "--top-k", "30", "--teacher", "bm25", "--chunk-size", "30",
         "--root", "scores"]
INDEX = ["index", "dense", "-m", "{st}", "-d", "{ds}", "--chunk-size", "10", "--keep-embeddings", "-o", "idx/x"]
TRAIN = ["train", "-f", "bi-encoder", "-m", "{init}", "--scores", "{store}", "-d", "{tds}", "-s", "train",
         "--loss", "kl", "--kl-passages", "4", "--negatives", "3", "--rank-window", "2:25", "--batch-size", "4",
         "--max-steps", "6", "--save-steps", "2", "--max-length", "32", "-o", "m"]
RUN = ["run", "{pipe}", "--root", "runs", "--no-report"]


def pipe(data: Path) -> str:
    """test_pipeline_runner's tiny pipeline (BM25 twice and a BM25 teacher on two splits) without
    its eval, its dataset read from ``data``."""
    from tests.test_pipeline_runner import PIPE

    return PIPE.split("evals:")[0].replace("name: tiny", "name: faults").replace("source: tiny", f"source: {data}")


# Kill points (``EVENT~REGEX~N[~after]``, see tests/kill_hook.py), two lanes per command; a point
# counts the events of its own process, which resumes what the lane's kills before it left.
SCORE_LANES = [
    [r"os.rename~manifest\.json$~1",  # the store folder made, its first manifest not yet in place
     r"os.rename~/part-\d+-\d+\.parquet$~7",  # six parts finished, the seventh written, not renamed
     r"os.rename~manifest\.json$~2"],  # every part, the complete manifest written, not renamed
    [r"os.rename~/part-\d+-\d+\.parquet$~1~after",  # one part finished
     r"os.remove~\.lock$~1"],  # the store complete, its lock file left behind
]
INDEX_LANES = [
    [r"os.rename~/\.rkd-work$~1",  # the work folder made, its marker written but not renamed
     r"os.rename~/files\.json$~4",  # three chunks done, the fourth's arrays on disk, not renamed
     r"os.rmdir~/chunk-\d+$~11~after"],  # the index in place, its work folder all but removed
    [r"os.rename~/chunk-\d+$~5~after",  # five chunks done
     r"os.rename~/\.x\.tmp-[^/ ]+ -> ~1"],  # the index complete in its temporary folder, not renamed
]
TRAIN_LANES = [
    [r"os.rename~/run\.json$~1",  # the work folder marked, no run state yet
     r"open~checkpoint-4/trainer_state\.json$~1",  # checkpoint-4 written but for its trainer state
     r"os.rename~(^|/)\.m\.tmp-[^/ ]+ -> ~1~after"],  # the model in place, its work folder not removed
    [r"open~checkpoint-2/modules\.json$~1",  # checkpoint-2 half written
     r"os.rename~/manifest\.json$~1"],  # the model saved in its temporary folder, no manifest yet
]
RUN_LANES = [
    [r"os.rename~/run\.json$~1",  # the run locked, pipeline.yaml copied, no run record yet
     r"os.rename~/part-\d+-\d+\.parquet$~3~after",  # inside the first teacher stage: three parts scored
     r"os.rename~ -> \S*/stages/teacher-bm25t@test-\w+$~1"],  # the last stage done in its work folder
    [r"os.rename~ -> \S*/stages/retrieve-bm25@test-\w+$~1~after",  # two stages done, record not updated
     r"os.remove~/\.lock$~1"],  # every stage done, the record complete, the run lock left
]


# ------------------------------------------------------------------ processes


def _args(template: list[str], inputs: dict[str, Path]) -> list[str]:
    return [a.format(**{k: str(v) for k, v in inputs.items()}) for a in template]


def _run(argv: list[str], cwd: Path, stdout: list[str] | None = None) -> tuple[int, str]:
    """Run ``argv`` in ``cwd``: its exit status and stderr (stdout appended to ``stdout``)."""
    cwd.mkdir(parents=True, exist_ok=True)
    logs = [cwd / f".{name}-{uuid.uuid4().hex}" for name in ("out", "err")]
    with open(logs[0], "w+") as out, open(logs[1], "w+") as err:
        p = subprocess.Popen(argv, cwd=cwd, env=ENV, stdout=out, stderr=err, text=True)
        try:
            p.wait(timeout=TIMEOUT)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    if stdout is not None:
        stdout.append(logs[0].read_text())
    text = logs[1].read_text()
    for log in logs:
        log.unlink()
    return p.returncode, text


def rkd(args: list[str], cwd: Path) -> str:
    """``rkd args`` in ``cwd``, run to the end: exit 0 and no traceback; returns stderr."""
    rc, err = _run([PY, "-m", "retrieval_kd.cli.main", *args], cwd)
    assert "Traceback" not in err, err[-3000:]
    assert rc == 0, err[-3000:]
    return err


def kill_at(args: list[str], cwd: Path, point: str) -> dict:
    """``rkd args`` in ``cwd``, killed with SIGKILL at ``point`` (tests/kill_hook.py): the hit."""
    log = cwd / f".kill-{uuid.uuid4().hex}.jsonl"
    rc, err = _run([PY, "-m", "tests.kill_hook", point, str(log), *args], cwd)
    hits = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    log.unlink(missing_ok=True)
    assert "Traceback" not in err, err[-3000:]
    assert rc == -signal.SIGKILL and len(hits) == 1, f"{point}: not hit (exit {rc}): {err[-3000:]}"
    return hits[0]


def chain(args: list[str], cwd: Path, points: list[str], left: Callable[[Path], object]) -> list[dict]:
    """Kill ``rkd args`` at each point in turn (each run resumes what the one before left; what
    each kill left is kept as ``left(cwd)`` in its hit), then run it to the end."""
    hits = []
    for point in points:
        hit = kill_at(args, cwd, point)
        hit["left"] = left(cwd)
        hits.append(hit)
    hit_end = {"point": "(none: the last rerun)", "stderr": rkd(args, cwd)}
    return [*hits, hit_end]


# ------------------------------------------------------------------ what a trial leaves


def store_dir(cwd: Path) -> Path | None:
    scores = cwd / "scores"
    found = [p for p in scores.iterdir() if not p.name.startswith(".")] if scores.is_dir() else []
    assert len(found) <= 1, found
    return found[0] if found else None


def rows_of(store: Path, check: bool = True) -> list[tuple]:
    """Every row in the store's parts, sorted; asserts no (qid, docid) twice."""
    from retrieval_kd.scores.store import ScoreStore

    t = ScoreStore(store).table(check=check)
    rows = sorted(zip(*(t.column(c).to_pylist() for c in ("qid", "docid", "score", "rank", "label"))))
    assert len({(q, d) for q, d, *_ in rows}) == len(rows), f"{store}: a (qid, docid) row twice"
    return rows


def score_left(cwd: Path) -> list[tuple] | None:
    store = store_dir(cwd)
    return rows_of(store, check=False) if store and (store / "manifest.json").is_file() else None


def index_left(cwd: Path) -> dict[str, bytes] | None:
    out = cwd / "idx" / "x"
    return files_of(out) if out.exists() else None


def train_left(cwd: Path) -> str | None:
    weights = cwd / "m" / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() if (cwd / "m").exists() else None


def run_outputs(root: Path) -> dict[str, bytes]:
    """Every finished stage's run file, by stage folder (whose name carries the stage's key)."""
    stages = root / "stages"
    return {d.name: (d / "run.trec").read_bytes() for d in (stages.iterdir() if stages.is_dir() else [])
            if not d.name.startswith(".") and (d / "run.trec").is_file()}


def run_left(cwd: Path) -> dict[str, bytes]:
    return run_outputs(cwd / "runs")


COMMANDS = {  # longest first: the pool starts them first
    "train": (TRAIN, TRAIN_LANES, train_left),
    "index": (INDEX, INDEX_LANES, index_left),
    "run": (RUN, RUN_LANES, run_left),
    "score": (SCORE, SCORE_LANES, score_left),
}


# ------------------------------------------------------------------ the trials, all at once


@dataclass
class Trials:
    root: Path
    inputs: dict[str, Path]
    results: dict[str, object]

    def ref(self, command: str) -> Path:
        return self.root / command / "ref"

    def lanes(self, command: str) -> list[Path]:
        return [self.root / command / f"lane{i}" for i in range(len(COMMANDS[command][1]))]

    def get(self, name: str):
        r = self.results[name]
        if isinstance(r, BaseException):
            raise r
        return r

    def hits(self, command: str, record_property) -> list[dict]:
        """Every kill of ``command``'s lanes (a failed lane raises here), reported."""
        self.get(f"{command}/ref")
        hits = [h for i in range(len(COMMANDS[command][1])) for h in self.get(f"{command}/{i}")]
        kills = [h for h in hits if "event" in h]
        lines = [f"{command}: {h['point']} -> {h['event']} {h['path']} (event {h['events']}, {h['t']}s)"
                 for h in kills]
        print("\n".join(lines))
        record_property("kill_points", lines)
        assert len({h["point"] for h in kills}) >= 5 and len(kills) == sum(map(len, COMMANDS[command][1]))
        for h in hits:
            assert "Traceback" not in h.get("stderr", "")
        return kills


@pytest.fixture(scope="module")
def trials(tmp_path_factory, train_env) -> Trials:  # noqa: F811
    """The inputs (shared, read only), an uninterrupted reference run of each command and every
    lane of kills, run two processes at a time (a lane's failure is raised by its test)."""
    from tests.test_pipeline import write_corpus

    root = tmp_path_factory.mktemp("faults")
    ds = random_beir(root / "ds")
    cand = root / "cand.trec"
    cand.write_text("".join(f"q{q} Q0 d{(q * 7 + r) % 120} {r + 1} {100 - r} x\n"
                            for q in range(12) for r in range(30)))
    (root / "p.yaml").write_text(pipe(write_corpus(root / "tiny")))
    inputs = {"ds": ds, "cand": cand, "st": tiny_st(root / "st"), "init": train_env["bi-encoder"],
              "store": train_env["store"], "tds": train_env["dataset"], "pipe": root / "p.yaml"}
    t = Trials(root, inputs, {})
    jobs: dict[str, Callable[[], object]] = {}
    for command, (template, lanes, left) in COMMANDS.items():
        args = _args(template, inputs)
        for i, (points, cwd) in enumerate(zip(lanes, t.lanes(command))):
            jobs[f"{command}/{i}"] = functools.partial(chain, args, cwd, points, left)
        jobs[f"{command}/ref"] = functools.partial(rkd, args, t.ref(command))
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(fn) for name, fn in jobs.items()}
        for name, f in futures.items():
            try:
                t.results[name] = f.result()
            except BaseException as e:  # noqa: BLE001 - raised again by the test it belongs to
                t.results[name] = e
    print(f"{len(jobs)} lanes and references in {time.monotonic() - t0:.1f}s")
    return t


def verified(folder: Path) -> None:
    from retrieval_kd.integrity import verify_artifact

    v = verify_artifact(folder)
    assert v.status == "ok", v


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ kill -9: each command


def test_kill_9_score(trials, record_property):
    ref = store_dir(trials.ref("score"))
    want = rows_of(ref)
    assert len(want) == 360
    for h in trials.hits("score", record_property):  # a kill leaves only rows the reference holds
        assert h["left"] is None or set(h["left"]) <= set(want), h["point"]
    for cwd in trials.lanes("score"):
        store = store_dir(cwd)
        assert store.name == ref.name and rows_of(store) == want, f"{cwd.name}: other rows than uninterrupted"
        verified(store)
        assert names(cwd / "scores") == [store.name]  # no lock left
        assert names(store) == [".verified.json", "manifest.json", "scores"]  # no temporary file
        assert names(store / "scores") == names(ref / "scores")


def test_kill_9_index(trials, record_property):
    ref = trials.ref("index") / "idx" / "x"
    want = files_of(ref)
    assert any(k.startswith("embeddings/") for k in want)
    for h in trials.hits("index", record_property):  # the output complete, or not there at all
        assert h["left"] is None or h["left"] == want, h["point"]
    for cwd in trials.lanes("index"):
        out = cwd / "idx" / "x"
        assert files_of(out) == want, f"{cwd.name}: the index differs from the uninterrupted one"
        verified(out)
        assert names(out.parent) == ["x"]  # no work folder, lock or temporary folder


def test_kill_9_train(trials, record_property):
    ref = trials.ref("train") / "m"
    want = {k: v for k, v in files_of(ref).items() if k != "README.md"}  # the model card tells the run
    weights = hashlib.sha256(want["model.safetensors"]).hexdigest()
    for h in trials.hits("train", record_property):  # the model complete, or not there at all
        assert h["left"] in (None, weights), h["point"]
    for cwd in trials.lanes("train"):
        out = cwd / "m"
        got = {k: v for k, v in files_of(out).items() if k != "README.md"}
        assert got["model.safetensors"] == want["model.safetensors"], f"{cwd.name}: other weights"
        assert got == want, sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))
        verified(out)
        man = json.loads((out / "manifest.json").read_text())
        assert man["outputs"]["global_step"] == 6 and man["sessions"][-1]["resumed_from"]
        assert names(out.parent) == ["m"]  # no work folder, lock or temporary folder


def test_kill_9_run(trials, record_property):
    ref = trials.ref("run") / "runs"
    want = run_outputs(ref)
    assert len(want) == 5
    for h in trials.hits("run", record_property):  # finished stages only, each as the reference's
        assert all(want.get(k) == v for k, v in h["left"].items()), h["point"]
    for cwd in trials.lanes("run"):
        root = cwd / "runs"
        assert run_outputs(root) == want, f"{cwd.name}: the run's outputs differ"
        rec = json.loads((root / "run.json").read_text())
        assert rec["status"] == "complete" and {s["status"] for s in rec["stages"]} <= {"ran", "cached"}
        assert names(root) == ["pipeline.yaml", "run.json", "stages"]  # no lock or temporary file
        assert names(root / "stages") == names(ref / "stages")  # no work folder left


# ------------------------------------------------------------------ damaged files, as a user meets them


def swap_ids(path: Path) -> None:
    ids = json.loads(path.read_text())
    ids[0], ids[1] = ids[1], ids[0]
    path.write_text(json.dumps(ids))


PART = "scores/part-000000150-000000180.parquet"
DAMAGE = [  # (artifact, file, damage): every kind of file, flipped in place and cut short
    ("index", "index.faiss", "flip"), ("index", "index.faiss", "truncate"),
    ("index", "doc_ids.json", "swap"), ("index", "doc_ids.json", "truncate"),
    ("index", "embeddings/chunk-000003/emb.npy", "flip"), ("index", "embeddings/chunk-000003/emb.npy", "truncate"),
    ("index", "embeddings/chunk-000003/files.json", "truncate"),
    ("store", PART, "flip"), ("store", PART, "truncate"),
    ("model", "model.safetensors", "flip"), ("model", "model.safetensors", "truncate"),
    ("model", "tokenizer.json", "truncate"), ("model", "config.json", "flip"),
]


def test_damaged_artifacts_are_named_by_rkd_verify_and_their_users(trials, tmp_path):
    from tests.test_verify import flip, truncate

    damage = {"flip": flip, "truncate": truncate, "swap": swap_ids}
    sources = {"index": trials.ref("index") / "idx" / "x", "store": store_dir(trials.ref("score")),
               "model": trials.ref("train") / "m"}
    copies = []
    for i, (kind, rel, how) in enumerate(DAMAGE):
        copy = shutil.copytree(sources[kind], tmp_path / "all" / f"{i:02d}-{kind}-{how}", symlinks=True)
        (copy / ".verified.json").unlink(missing_ok=True)
        damage[how](copy / rel)
        copies.append(copy)
    store, model = copies[DAMAGE.index(("store", PART, "truncate"))], copies[DAMAGE.index(("model", "model.safetensors", "flip"))]
    train = _args(TRAIN, trials.inputs)
    train[train.index("--scores") + 1], train[-1] = str(store), str(tmp_path / "m")
    index = _args(INDEX, {**trials.inputs, "st": model})
    jobs, out = [["verify", str(tmp_path / "all")], train, index], []
    with ThreadPoolExecutor(max_workers=2) as pool:
        (v_rc, v_err), (t_rc, t_err), (i_rc, i_err) = pool.map(
            lambda a: _run([PY, "-m", "retrieval_kd.cli.main", *a], tmp_path, out if a[0] == "verify" else None),
            jobs)

    # rkd verify: exit 1, one DAMAGED line for each copy naming its damaged file
    assert v_rc == 1 and "Traceback" not in v_err, v_err[-3000:]
    lines = out[0].splitlines()
    assert len(lines) == len(DAMAGE), out[0]
    for copy, (_kind, rel, how) in zip(copies, DAMAGE):
        (line,) = [ln for ln in lines if f"{copy}  " in ln]
        assert line.startswith("DAMAGED") and f"{rel}:" in line, (how, line)
    # the commands that read them: one error line naming the file, nothing written
    assert t_rc == 2, t_err[-3000:]
    one_line(t_err, f"{store / PART}:")
    assert i_rc == 2, i_err[-3000:]
    one_line(i_err, "model.safetensors", "sha256")
    assert [p.name for p in tmp_path.iterdir() if p.name not in ("all", "idx")] == []  # no model, no work
    assert not (tmp_path / "idx").exists() or names(tmp_path / "idx") == []
