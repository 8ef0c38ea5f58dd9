"""A tiny pipeline environment (a BEIR folder of word sequences, a tiny random-weight bi-encoder
under models/st, the pipeline file) and a quiet run of it, shared by the pipeline tests."""

from __future__ import annotations

from pathlib import Path


def make_env(folder: Path, pipeline_text: str, *, n_docs: int = 50, n_queries: int = 40) -> Path:
    from tests.test_pipeline import write_corpus
    from tests.tiny_models import WORDS, build_tiny_st

    write_corpus(folder / "tiny", n_docs=n_docs, n_queries=n_queries, words=WORDS)
    build_tiny_st(folder / "models" / "st")
    (folder / "p.yaml").write_text(pipeline_text)
    return folder


def run_quietly(env: Path) -> Path:
    """Run ``env/p.yaml`` into ``env/runs``; returns the run root."""
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.runner import run_stages

    root = env / "runs"
    run_stages(load_pipeline(env / "p.yaml"), root, echo=lambda _m: None)
    return root
