"""research/distillation/pseudo_queries.py: cleaning generated claims and the derived BEIR folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "research" / "distillation"))
import pseudo_queries as pq  # noqa: E402

from retrieval_kd.data.registry import load_dataset  # noqa: E402
from tests.beir import write_beir  # noqa: E402


@pytest.mark.parametrize("raw, want", [
    ("The abstract supports the claim that the study supports the idea that X causes Y in mice. More.",
     "X causes Y in mice."),
    ('The scientific claim supported by the abstract is: "A20 drives glioma growth."', "A20 drives glioma growth."),
    ("tNF-alpha is raised in sepsis (p < 0.05). Second sentence", "TNF-alpha is raised in sepsis (p < 0.05)."),
    ("Vitamin D 2.5 mg reduces falls\nignored line", "Vitamin D 2.5 mg reduces falls"),
])
def test_clean(raw, want):
    assert pq.clean(raw) == want


def beir(root: Path) -> Path:
    docs = [{"_id": f"d{i}", "title": f"T{i}", "text": f"text {i}"} for i in range(3)]
    queries = [{"_id": "q1", "text": "claim one"}, {"_id": "q2", "text": "claim two"}]
    return write_beir(root, docs, queries, {"train": [("q1", "d0", 1)], "test": [("q2", "d1", 1)]})


def test_dataset_adds_generated_queries_with_their_source_as_positive(tmp_path):
    src = beir(tmp_path / "src")
    gen = tmp_path / "gq.jsonl"
    gen.write_text(json.dumps({"docid": "d1", "raw": "This abstract supports the claim that d1 matters a lot."}) + "\n"
                   + json.dumps({"docid": "d2", "raw": "Too short."}) + "\n")
    out = tmp_path / "scifact-gq"
    assert pq.main(["dataset", "--queries", str(gen), "--out", str(out), "--source", str(src)]) == 0
    train = load_dataset(str(out), "train")
    assert train.queries.texts == {"q1": "claim one", "gq-d1": "D1 matters a lot."}
    assert train.qrels["gq-d1"] == {"d1": 1} and train.qrels["q1"] == {"d0": 1}
    assert load_dataset(str(out), "test").qrels == {"q2": {"d1": 1}}
    prov = json.loads((out / "provenance.json").read_text())
    assert (prov["kept"], prov["dropped_short"]) == (1, 1)


def test_dataset_bad_line_is_one_error_and_no_folder(tmp_path, capsys):
    src = beir(tmp_path / "src")
    gen = tmp_path / "gq.jsonl"
    gen.write_text(json.dumps({"docid": "d1", "raw": "A fine claim about d1."}) + "\n{oops\n")
    out = tmp_path / "scifact-gq"
    assert pq.main(["dataset", "--queries", str(gen), "--out", str(out), "--source", str(src)]) == 2
    err = capsys.readouterr().err
    assert "gq.jsonl" in err and "line 2" in err and err.count("\n") == 1
    assert not out.exists()
