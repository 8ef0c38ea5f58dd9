"""The main job's pipeline file runs on any BEIR folder with train and test qrels when only its
dataset source changes: nothing in it is tied to SciFact (real registered models, a small
built folder)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from retrieval_kd.models.registry import model_registry
from retrieval_kd.pipeline.load import load_pipeline
from retrieval_kd.pipeline.runner import run_stages
from retrieval_kd.report.render import write_report
from tests.beir import write_beir

ROOT = Path(__file__).resolve().parents[1]
TOPICS = {
    "vitamin": "vitamin d deficiency bone density fracture risk elderly",
    "virus": "influenza virus replication lung epithelial cells infection",
    "tumor": "tumor growth angiogenesis vascular endothelial factor mice",
    "insulin": "insulin resistance obesity glucose metabolism liver",
    "neuron": "dopamine neurons degeneration parkinson disease brain",
    "immune": "t cell activation cytokine immune response antigen",
}


def topic_beir(root: Path, seed: int = 0) -> Path:
    """Six topics x 10 abstracts; train and test queries each judged relevant to one abstract."""
    rng = random.Random(seed)
    filler = "study results patients analysis effect data significant level group".split()
    docs, qrels = [], {"train": [], "test": []}
    queries = []
    for t, (name, words) in enumerate(TOPICS.items()):
        w = words.split()
        for j in range(10):
            did = f"{name}{j}"
            text = " ".join(rng.sample(w, 5) + rng.choices(filler, k=12) + [f"marker{t}{j}"])
            docs.append({"_id": did, "title": f"{name} report {j}", "text": text})
            for split, k in (("train", j < 4), ("test", 4 <= j < 6)):
                if k:
                    qid = f"{split}-{did}"
                    queries.append({"_id": qid, "text": " ".join(rng.sample(w, 3) + [f"marker{t}{j}"])})
                    qrels[split].append((qid, did))
    return write_beir(root, docs, queries, {split: [(q, d, 1) for q, d in rows] for split, rows in qrels.items()})


def _strings(node) -> set[str]:
    if isinstance(node, dict):
        return set().union(*map(_strings, node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*map(_strings, node)) if node else set()
    return {node} if isinstance(node, str) else set()


@pytest.mark.slow
@pytest.mark.shared_data
def test_main_pipeline_runs_on_another_beir_folder(tmp_path, fetched_model):
    data = topic_beir(tmp_path / "mini-beir")
    spec = yaml.safe_load((ROOT / "pipelines" / "scifact.yaml").read_text())
    for name in sorted(_strings(spec) & set(model_registry())):  # the real models it names
        fetched_model(name)
    spec["datasets"]["scifact"]["source"] = str(data)  # the only change
    spec["root"] = str(tmp_path / "run")
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))

    run_stages(load_pipeline(path))
    paths = write_report(tmp_path / "run")
    fam = json.loads(next((tmp_path / "run" / "stages").glob("eval-test-*/families.json")).read_text())
    assert sorted(fam["families"]) == ["ColBERT (BERT-tiny)", "bi-encoder (BERT-tiny)"]
    for f in fam["families"].values():
        for role in ("twin", "distilled"):  # three seeds each, the mean being their mean
            m = f["roles"][role]["metrics"]["ndcg@10"]
            assert m["n_seeds"] == 3 and abs(m["mean"] - sum(m["per_seed"]) / 3) < 1e-9
        assert {"init", "teacher"} <= set(f["roles"])
        assert f["distilled_vs_twin"]["ndcg@10"]["n_queries"] == 12
        assert "ndcg@10" in f["gap_closed"]
    assert "Students by family" in paths["markdown"].read_text()
