"""The bi-encoder teacher: the model's own prompts on request, its dtype, and identities that
did not change for specs written before those options existed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retrieval_kd.teachers.base import Pair
from retrieval_kd.teachers.encoders import BiEncoderTeacher
from retrieval_kd.teachers.identity import spec_identity
from retrieval_kd.teachers.spec import parse_teacher
from tests.tiny_models import build_tiny_st


@pytest.fixture(scope="module")
def prompted_st(tmp_path_factory):
    """A tiny ST folder whose config names query/document prompts (as EmbeddingGemma's does)."""
    folder = build_tiny_st(tmp_path_factory.mktemp("st") / "m")
    cfg_path = folder / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["prompts"] = {"query": "task: search | query: ", "document": "title: none | text: "}
    cfg_path.write_text(json.dumps(cfg))
    return folder


def test_old_spec_dump_and_identity_unchanged(prompted_st):
    spec = parse_teacher({"kind": "bi-encoder", "model": str(prompted_st)})
    dump = spec.model_dump()
    assert "dtype" not in dump and "model_prompts" not in dump  # later fields at default: left out
    ident = spec_identity(spec)
    assert ident["query_prompt"] == "" and ident["doc_prompt"] == "" and "dtype" not in ident
    # explicitly given defaults are the same teacher
    same = parse_teacher({"kind": "bi-encoder", "model": str(prompted_st), "dtype": "float32",
                          "model_prompts": False})
    assert spec_identity(same) == ident


def test_model_prompts_enter_identity_and_scores(prompted_st):
    plain = BiEncoderTeacher(str(prompted_st))
    own = BiEncoderTeacher(str(prompted_st), model_prompts=True)
    spec = parse_teacher({"kind": "bi-encoder", "model": str(prompted_st), "model_prompts": True})
    ident = spec_identity(spec)
    assert ident["query_prompt"] == "task: search | query: " == own.identity()["query_prompt"]
    assert ident["doc_prompt"] == "title: none | text: " == own.identity()["doc_prompt"]
    assert ident != spec_identity(parse_teacher({"kind": "bi-encoder", "model": str(prompted_st)}))
    pairs = [Pair("q1", "d1", "cancer risk", "the gene and cancer risk"),
             Pair("q1", "d2", "cancer risk", "mouse brain cells")]
    assert not np.allclose(plain.score(pairs), own.score(pairs))
    # an explicit prompt wins over the model's
    mine = BiEncoderTeacher(str(prompted_st), model_prompts=True, query_prompt="Q: ")
    assert mine.identity()["query_prompt"] == "Q: " and mine.identity()["doc_prompt"] == "title: none | text: "


def test_bfloat16_weights_score_close_to_float32(prompted_st):
    fp32 = BiEncoderTeacher(str(prompted_st))
    bf16 = BiEncoderTeacher(str(prompted_st), dtype="bfloat16")
    assert bf16.identity()["dtype"] == "bfloat16" and "dtype" not in fp32.identity()
    pairs = [Pair("q", f"d{i}", "blood virus", t) for i, t in enumerate(["immune virus", "dna rna", "drug dose"])]
    a, b = fp32.score(pairs), bf16.score(pairs)
    assert a.dtype == np.float64 and b.dtype == np.float64
    assert np.allclose(a, b, atol=0.05) and not np.array_equal(a, b)
