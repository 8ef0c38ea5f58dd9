"""An index stage over a dataset without a ``test`` split (MS MARCO's dev-small, MIRACL's dev)
reads the corpus through the split it has."""

from __future__ import annotations

import pytest

from tests.tiny_pipeline import make_env, run_quietly

PIPE = """\
name: devonly
datasets:
  tiny: {source: tiny}
indexes:
  st: {model: models/st, family: bi-encoder, dataset: tiny, kind: flat, search: {splits: [dev], k: 10}}
evals:
  dev: {dataset: tiny, split: dev, systems: {st: "index:st"}}
"""


@pytest.mark.slow
def test_an_index_of_a_dataset_with_only_a_dev_split(tmp_path):
    env = make_env(tmp_path, PIPE, n_docs=20, n_queries=10)
    qrels = env / "tiny" / "qrels"
    (qrels / "test.tsv").rename(qrels / "dev.tsv")
    (qrels / "train.tsv").unlink()
    root = run_quietly(env)
    import json

    rec = json.loads((root / "run.json").read_text())
    by_id = {s["id"]: s for s in rec["stages"]}
    assert by_id["index:st"]["status"] == "ran" and by_id["search:st@dev"]["result"]["queries"] == 5
