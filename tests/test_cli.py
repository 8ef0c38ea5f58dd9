"""The ``rkd`` command as a user runs it, on a tiny BEIR directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.beir import tiny_beir

RKD = [sys.executable, "-m", "retrieval_kd.cli.main"]


def rkd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*RKD, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_bm25_then_eval_writes_run_manifest_and_results(tmp_path, tiny_ds):
    ds = tiny_ds
    r = rkd("retrieve", "bm25", "-d", str(ds), "-o", "runs/bm25", "--k1", "1.2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    man = json.loads((tmp_path / "runs/bm25/manifest.json").read_text())
    assert man["kind"] == "retrieve.bm25" and man["params"]["k1"] == 1.2
    assert man["inputs"]["dataset"]["corpus_sha256"]
    assert "bm25s" in man["versions"]
    lines = (tmp_path / "runs/bm25/run.trec").read_text().splitlines()
    assert lines[0].split()[:4] == ["q1", "Q0", "d1", "1"]
    r = rkd("eval", "runs/bm25", "-d", str(ds), "-o", "res/out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "res/out.json").read_text())["results"][0]
    assert rec["metrics"]["ndcg@10"] == 1.0
    assert rec["protocol"]["system"]["params"]["k1"] == 1.2
    assert rec["protocol"]["ignore_identical_ids"] is True
    assert "| bm25 |" in (tmp_path / "res/out.md").read_text()


def test_malformed_corpus_is_one_line_error_and_no_artifact(tmp_path):
    ds = tiny_beir(tmp_path / "bad", corpus=[{"_id": "d1", "text": "ok"}, "{not json"])
    r = rkd("retrieve", "bm25", "-d", str(ds), "-o", "runs/bm25", cwd=tmp_path)
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "corpus.jsonl:2" in err[0] and "malformed JSON" in err[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))


@pytest.mark.parametrize("args, needle", [
    (["data", "validate", "no-such-dataset"], "unknown dataset 'no-such-dataset'"),
    (["models", "fetch", "no-such-model"], "unknown model 'no-such-model'"),
])
@pytest.mark.slow
def test_unknown_names_are_clear_errors(tmp_path, args, needle):
    r = rkd(*args, cwd=tmp_path)
    assert r.returncode == 2 and needle in r.stderr


def test_validate_reports_missing_qrels_ids(tmp_path, tiny_ds):
    ds = tiny_ds
    with open(ds / "qrels" / "test.tsv", "a") as f:
        f.write("q1\tmissing-doc\t1\n")
    r = rkd("data", "validate", str(ds), "-s", "test", cwd=tmp_path)
    assert r.returncode == 0
    assert "1 qrels judgements name documents absent from the corpus" in " ".join(r.stderr.split())


@pytest.mark.parametrize("args, needle", [
    (["train", "--positive-floor", "abc"], "Invalid value for '--positive-floor'"),
    (["retrieve", "bm25", "-d", "x", "-k", "3"], "No such option: -k"),
])
@pytest.mark.slow
def test_bad_options_are_usage_errors_without_traceback(tmp_path, args, needle):
    r = rkd(*args, cwd=tmp_path)
    assert r.returncode == 2 and needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 4
