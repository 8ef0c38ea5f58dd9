"""The listwise (RankGPT) teacher: the permutation parser's repairs, the rank-to-score map, the
sliding windows, task prompts, and (slow) a real llama.cpp OpenAI-compatible server, with a
kill -9 of the scoring process and its resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from retrieval_kd.errors import DataError
from retrieval_kd.teachers.base import Pair
from retrieval_kd.teachers.listwise import (
    ListwiseTeacher,
    parse_permutation,
    rank_scores,
    sliding_windows,
)
from tests.test_llm_teacher import llama_server  # noqa: F401 - fixture: a real llama.cpp server

REPO = Path(__file__).resolve().parents[1]


# -- the parser ---------------------------------------------------------------------------------

def test_parse_clean_permutation():
    order, c = parse_permutation("[2] > [3] > [1]", 3)
    assert order == [1, 2, 0]
    assert c == {"windows": 1, "unparsed": 0, "missing": 0, "duplicate": 0, "unknown": 0}


def test_parse_repairs_missing_repeated_and_unknown_ids():
    # 4 and 2 ranked, 2 repeated, 9 and 0 out of range; 1 and 3 missing: appended in prior order
    order, c = parse_permutation("Ranking: [4] > [2] > [2] > [9] > [0]", 4)
    assert order == [3, 1, 0, 2]
    assert c == {"windows": 1, "unparsed": 0, "missing": 2, "duplicate": 1, "unknown": 2}


def test_parse_bare_numbers_and_noise():
    order, c = parse_permutation("3 > 1, then 2", 3)  # no brackets: bare numbers are read
    assert order == [2, 0, 1] and c["missing"] == 0
    order, c = parse_permutation("[ 2 ]>[1]", 2)  # spaces inside brackets
    assert order == [1, 0]


def test_parse_unparsable_answer_keeps_the_prior_order():
    order, c = parse_permutation("I cannot rank these passages.", 5)
    assert order == [0, 1, 2, 3, 4]
    assert c["unparsed"] == 1 and c["missing"] == 0  # counted once, as unparsed


# -- the rank map and the windows ---------------------------------------------------------------

def test_rank_to_score_maps():
    order = [2, 0, 3, 1]  # item 2 first, then 0, 3, 1
    s = rank_scores(order)
    np.testing.assert_allclose(s, [-np.log(2), -np.log(4), 0.0, -np.log(3)])
    assert list(np.argsort(-s)) == order  # the scores sort back to the permutation
    lin = rank_scores(order, "linear")
    np.testing.assert_allclose(lin, [2 / 3, 0.0, 1.0, 1 / 3])
    assert rank_scores([0], "linear").tolist() == [1.0]
    with pytest.raises(DataError):
        rank_scores(order, "cubic")


def test_sliding_windows_back_to_front():
    assert sliding_windows(100, 20, 10)[:2] == [(80, 100), (70, 90)]
    assert sliding_windows(100, 20, 10)[-1] == (0, 20) and len(sliding_windows(100, 20, 10)) == 9
    assert sliding_windows(25, 20, 10) == [(5, 25), (0, 15)]  # the last window always reaches the top
    assert sliding_windows(7, 20, 10) == [(0, 7)]
    assert sliding_windows(1, 20, 10) == []
    with pytest.raises(DataError):
        sliding_windows(10, 5, 6)


# -- the teacher on a scripted model ------------------------------------------------------------

def _pairs(n: int, qid: str = "q1") -> list[Pair]:
    return [Pair(qid, f"{qid}-d{i}", f"query {qid}", f"passage number {i} " + "word " * 200) for i in range(n)]


def test_listwise_teacher_moves_the_best_to_the_top_and_counts_repairs():
    """A scripted 'model' that always ranks the passage with the highest number first: after one
    back-to-front sweep the globally best passage is at the top."""
    prompts = []

    def gen(system, user, max_tokens):
        prompts.append(user)
        lines = [ln for ln in user.splitlines() if ln.startswith("[")]
        nums = [int(ln.split()[3]) for ln in lines]  # "[i] passage number K ..."
        ranked = sorted(range(len(nums)), key=lambda i: -nums[i])
        return " > ".join(f"[{i + 1}]" for i in ranked[:-1]) + " > [99]"  # one missing, one unknown

    t = ListwiseTeacher(gen, "scripted", "test", window=4, step=2, passage_words=5)
    pairs = _pairs(9) + _pairs(3, "q2")
    s = t.score(pairs)
    assert s.shape == (12,) and np.isfinite(s).all()
    q1 = s[:9]
    assert int(np.argmax(q1)) == 8 and q1[8] == 0.0  # the best (number 8) climbed to rank 1
    assert len(prompts) == len(sliding_windows(9, 4, 2)) + 1
    assert all(len(p.split("word")) <= 4 * 5 + 2 for p in prompts)  # passages cut to 5 words
    stats = t.take_stats()
    assert stats["windows"] == len(prompts) and stats["missing"] == len(prompts) and stats["unknown"] == len(prompts)
    assert t.take_stats() is None  # taken: reset
    assert t.identity()["window"] == 4 and t.identity()["rank_map"] == "neg_log_rank"


def _copier(calls: list[str]):
    """A 'model' that answers with the ids in the order shown (what small chat models often do)."""
    def gen(system, user, max_tokens):
        calls.append(user)
        n = sum(ln.startswith("[") for ln in user.splitlines())
        return " > ".join(f"[{i}]" for i in range(1, n + 1))
    return gen


def _oracle(system, user, max_tokens):
    """A 'model' that ranks by the passage's number, whatever order it is shown in."""
    nums = [int(ln.split()[3]) for ln in user.splitlines() if ln.startswith("[")]
    return " > ".join(f"[{i + 1}]" for i in sorted(range(len(nums)), key=lambda i: -nums[i]))


def test_orders_undo_a_copied_input_order_and_keep_a_real_ranking():
    """orders=1 hands a copier's first-stage order back; several seeded input orders do not (and
    repeat exactly), while a model that really ranks keeps its ranking under any input order."""
    pairs = _pairs(12) + _pairs(12, "q2")
    calls: list[str] = []
    one = ListwiseTeacher(_copier(calls), "copier", "test", window=12, step=6, passage_words=5)
    first = one.score(pairs)
    assert (np.diff(first[:12]) < 0).all()  # the first-stage order, unchanged
    assert len(calls) == 2 and "orders" not in one.identity()

    calls.clear()
    four = ListwiseTeacher(_copier(calls), "copier", "test", window=12, step=6, passage_words=5, orders=4)
    mixed = four.score(pairs)
    assert len(calls) == 2 * 4 and four.take_stats()["windows"] == 8
    assert not (np.diff(mixed[:12]) < 0).all() and not np.array_equal(mixed[:12], mixed[12:])  # seeded by qid
    assert np.array_equal(mixed, four.score(pairs))  # the same seeds on a rerun
    assert four.identity()["orders"] == 4 and four.identity()["aggregate"] == "mean-rank"

    real = ListwiseTeacher(_oracle, "oracle", "test", window=12, step=6, passage_words=5, orders=3)
    s = real.score(_pairs(12))
    assert (np.diff(s[::-1]) < 0).all()  # passage 11 first, then 10, ...: the model's ranking
    with pytest.raises(DataError):
        ListwiseTeacher(_oracle, "m", "t", orders=0)


def test_task_templates_and_identity_from_spec():
    from retrieval_kd.teachers.identity import spec_identity
    from retrieval_kd.teachers.prompts import LISTWISE, POINTWISE, bind_task, task_of
    from retrieval_kd.teachers.spec import parse_teacher

    assert task_of("scifact") == "claim" and task_of("nfcorpus") == "qa" and task_of("/some/folder") == "qa"
    spec = parse_teacher({"kind": "llm-listwise", "model": "m", "base_url": "http://127.0.0.1:9/v1"})
    assert spec.backend == "openai"
    qa, claim = spec_identity(spec), spec_identity(bind_task(spec, "claim"))
    assert qa["template"] == LISTWISE["qa"] and claim["template"] == LISTWISE["claim"] and qa != claim
    assert "task" not in claim and "concurrency" not in claim and "base_url" not in claim
    fixed = parse_teacher({"kind": "llm-listwise", "model": "m", "base_url": "http://x/v1",
                           "template": "Q {query} n={n}\n{passages}"})
    assert bind_task(fixed, "claim") == fixed  # a spec's own template wins
    llm = parse_teacher({"kind": "llm", "model": "m", "backend": "transformers"})
    assert spec_identity(bind_task(llm, "claim"))["template"] == POINTWISE["claim"]
    assert spec_identity(bind_task(llm, "qa")) == spec_identity(llm)  # qa: the template stores had before
    assert "task" not in llm.model_dump()  # at its default the task stays out of dumps (older keys)
    assert "orders" not in spec.model_dump() and "orders" not in spec_identity(spec)  # nor orders at 1
    psc = parse_teacher({"kind": "llm-listwise", "model": "m", "base_url": "http://x/v1", "orders": 3})
    assert spec_identity(psc)["orders"] == 3 and spec_identity(psc) != spec_identity(spec)
    with pytest.raises(DataError):
        ListwiseTeacher(lambda *a: "", "m", "t", template="no passages {query}")
    with pytest.raises(DataError):
        ListwiseTeacher(lambda *a: "", "m", "t", task="poetry")


# -- a real llama.cpp server, and kill -9 -------------------------------------------------------

def _tiny_beir(root: Path) -> Path:
    """Three queries with six short passages each (real text), and a BM25-like run of all."""
    topics = {
        "q1": ("what is the capital of france", ["Paris is the capital of France.", "Berlin is in Germany.",
               "Lyon is a city in France.", "The Seine flows through Paris.", "Rome is in Italy.",
               "France borders Spain."]),
        "q2": ("how many legs does a spider have", ["Spiders have eight legs.", "Ants have six legs.",
               "Spiders spin webs of silk.", "Dogs have four legs.", "Birds have two legs.",
               "Scorpions are arachnids too."]),
        "q3": ("what do plants need to grow", ["Plants need light, water and carbon dioxide.",
               "Cars need fuel.", "Photosynthesis makes sugar from light.", "Soil holds nutrients.",
               "The moon orbits the earth.", "Seeds sprout in spring."]),
    }
    (root / "qrels").mkdir(parents=True)
    docs, run, qrels = [], [], []
    for qid, (_, texts) in topics.items():
        for i, t in enumerate(texts):
            did = f"{qid}d{i}"
            docs.append(json.dumps({"_id": did, "title": "", "text": t}))
            run.append(f"{qid} Q0 {did} {i + 1} {10 - i} bm25")
        qrels.append(f"{qid}\t{qid}d0\t1")
    (root / "corpus.jsonl").write_text("\n".join(docs) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": t[0]}) for q, t in topics.items()) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    (root / "run.trec").write_text("\n".join(run) + "\n")
    return root


def _rkd(args: list[str], cwd: Path, point: str | None = None) -> tuple[int, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    head = [sys.executable, "-m", "tests.kill_hook", point, str(cwd / f".kill-{uuid.uuid4().hex}")] if point \
        else [sys.executable, "-m", "retrieval_kd.cli.main"]
    p = subprocess.run([*head, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return p.returncode, p.stderr


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.llm_server
def test_listwise_against_a_real_server_resumes_after_kill_9(llama_server, tmp_path):  # noqa: F811
    from retrieval_kd.scores.store import ScoreStore
    from retrieval_kd.teachers.spec import build_teacher, parse_teacher

    base, served = llama_server
    data = _tiny_beir(tmp_path / "data")
    spec = {"kind": "llm-listwise", "model": "smollm2", "base_url": base + "/v1", "window": 4, "step": 2,
            "passage_words": 20, "concurrency": 2, "max_new_tokens": 24}
    # in process: the teacher itself
    t = build_teacher(parse_teacher(spec))
    pairs = [Pair("q1", f"q1d{i}", "what is the capital of france", f"passage {i}") for i in range(5)]
    s = t.score(pairs)
    assert sorted(np.round(s, 6)) == sorted(np.round(rank_scores(list(range(5))), 6))  # a permutation of ranks
    assert t.identity()["model"] == served and t.take_stats()["windows"] == 2
    t.close()

    (tmp_path / "teacher.yaml").write_text(json.dumps(spec))
    args = ["score", "-d", str(data), "-c", str(data / "run.trec"), "--top-k", "6", "-t", str(tmp_path / "teacher.yaml"),
            "--chunk-size", "6", "--root", "scores"]
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    for d in (ref_dir, cut_dir):
        d.mkdir()
    rc, err = _rkd(args, ref_dir)
    assert rc == 0, err[-3000:]
    rc, err = _rkd(args, cut_dir, point=r"os.rename~/part-\d+-\d+\.parquet$~1~after")  # one part, then kill -9
    assert rc == -signal.SIGKILL, err[-3000:]
    (cut_store,) = [p for p in (cut_dir / "scores").iterdir() if not p.name.startswith(".")]
    assert len(ScoreStore(cut_store).parts()) == 1 and not ScoreStore(cut_store).complete
    rc, err = _rkd(args, cut_dir)  # resume: only the two missing chunks are scored
    assert rc == 0, err[-3000:]
    (ref_store,) = [p for p in (ref_dir / "scores").iterdir() if not p.name.startswith(".")]
    ref, cut = ScoreStore(ref_store), ScoreStore(cut_store)
    assert cut.complete and ref.id == cut.id
    a, b = ref.table().to_pylist(), cut.table().to_pylist()
    assert len(b) == 18 and len({(r["qid"], r["docid"]) for r in b}) == 18  # nothing lost or twice
    assert [(r["qid"], r["docid"]) for r in a] == [(r["qid"], r["docid"]) for r in b]
    assert [r["score"] for r in a] == [r["score"] for r in b]  # greedy answers: the same scores
    man = cut.manifest
    assert man["teacher_stats"]["windows"] == 3 * 2 and man["teacher_stats"] == ref.manifest["teacher_stats"]
    assert len(man["sessions"]) == 1 and man["sessions"][0]["pairs_scored"] == 12
    assert man["teacher_loaded"]["kind"] == "llm-listwise" and base not in json.dumps(man["teacher"])


def test_store_keeps_repair_counts_per_part_and_in_the_manifest(tmp_path):
    """A scripted listwise teacher through the real score store: each part's metadata holds its
    chunk's repairs, the manifest their sum, and a rerun of a complete store scores nothing."""
    import pyarrow.parquet as pq

    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.data.trec import load_trec_run
    from retrieval_kd.scores.candidates import build_candidates
    from retrieval_kd.scores.store import STATS_KEY, score_into_store

    data = _tiny_beir(tmp_path / "data")
    ds = load_dataset(str(data), "test")
    cands = build_candidates(ds, load_trec_run(data / "run.trec"), 6)
    made = []

    def factory():
        made.append(ListwiseTeacher(lambda s, u, k: "[2] > [2] > [7]", "scripted", "test", window=4, step=2))
        return made[-1]

    ident = {"kind": "llm-listwise", "model": "scripted"}
    store = score_into_store(ds, cands, factory, ident, tmp_path / "scores", chunk_size=6)
    parts = store.parts()
    assert len(parts) == 3
    for _, _, p in parts:  # per query: 2 windows, each 1 repeated + 1 unknown, 3 missing
        meta = json.loads(pq.read_schema(p).metadata[STATS_KEY.encode()])
        assert meta == {"windows": 2, "unparsed": 0, "missing": 6, "duplicate": 2, "unknown": 2}
    assert store.manifest["teacher_stats"] == {"windows": 6, "unparsed": 0, "missing": 18, "duplicate": 6,
                                               "unknown": 6}
    t = store.table().to_pandas()
    top = t.loc[t.groupby("qid")["score"].idxmax(), "docid"].tolist()
    assert top == ["q1d1", "q2d1", "q3d1"]  # "[2]" of the last window (the top four) ranked first
    n = len(made)
    score_into_store(ds, cands, factory, ident, tmp_path / "scores", chunk_size=6)
    assert len(made) == n  # complete: no teacher built again

