"""Every pipeline file shipped in pipelines/ loads, validates and expands into a plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval_kd.pipeline.load import load_pipeline
from retrieval_kd.pipeline.plan import build_stages

PIPELINES = sorted((Path(__file__).resolve().parents[1] / "pipelines").glob("*.yaml"))


def test_the_repository_ships_pipeline_files():
    assert {p.name for p in PIPELINES} >= {"scifact.yaml", "scifact-full.yaml"}


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_pipeline_file_plans(path):
    stages = build_stages(load_pipeline(path, check_sources=False))
    ids = [s.id for s in stages]
    assert ids and len(ids) == len(set(ids))
    assert any(s.kind == "eval" for s in stages)
