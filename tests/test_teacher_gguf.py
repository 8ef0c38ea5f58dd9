"""The native GGUF backend (llama.cpp) of the pointwise LLM teacher, on the real SmolLM2 GGUF."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retrieval_kd.teachers.base import Pair
from tests.test_llm_teacher import PAIRS

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def smollm2(fetched_model) -> str:
    from retrieval_kd.teachers.gguf import llama_cpp_available

    fetched_model("smollm2-135m")
    if not llama_cpp_available():
        pytest.fail("llama_cpp is not installed: install llama-cpp-python to test the GGUF backend", pytrace=False)
    return "smollm2-135m"


@pytest.fixture(scope="module")
def gguf_teacher(smollm2):
    from retrieval_kd.teachers.gguf import GGUFTeacher

    t = GGUFTeacher(smollm2, threads=2)
    yield t
    t.close()


def test_gguf_scores_finite_deterministic_and_order_free(gguf_teacher):
    t = gguf_teacher
    s = t.score(PAIRS)
    assert s.shape == (4,) and s.dtype == np.float64 and np.isfinite(s).all() and np.ptp(s) > 0
    np.testing.assert_array_equal(t.score(PAIRS), s)  # the KV-cache prefix reuse changes nothing
    np.testing.assert_allclose(t.score(PAIRS[::-1]), s[::-1], atol=1e-4)
    # score == logit(yes) - logit(no) of the prompt evaluated from scratch
    t.llm.reset()
    logits = t.next_logits(t._fit(PAIRS[2].query, PAIRS[2].passage))
    assert s[2] == pytest.approx(float(logits[t.yes_id] - logits[t.no_id]), abs=1e-4)
    assert t.score([]).shape == (0,)


def test_gguf_truncates_to_max_length(smollm2):
    from retrieval_kd.teachers.gguf import GGUFTeacher

    t = GGUFTeacher(smollm2, max_length=96, threads=2)
    long = Pair("q", "d", "what is the capital of france", "Paris is a large city. " * 200)
    ids, full = t._fit(long.query, long.passage), t._encode(long.query, long.passage)
    assert len(full) > 96 >= len(ids) and ids[-15:] == full[-15:]  # the passage cut, the instruction kept
    assert np.isfinite(t.score([long])).all()
    t.close()


def test_gguf_identity_differs_from_the_transformers_path(gguf_teacher):
    from retrieval_kd.teachers.identity import spec_identity
    from retrieval_kd.teachers.prompts import POINTWISE
    from retrieval_kd.teachers.spec import parse_teacher

    ident = gguf_teacher.identity()
    assert ident["backend"] == "llama.cpp" and ident["model"]["sha256"] and json.dumps(ident)
    assert ident["chat"] is True and ident["template"] == POINTWISE["qa"]
    auto = parse_teacher({"kind": "llm", "model": "smollm2-135m"})
    assert auto.backend == "llama.cpp"  # a GGUF model with llama-cpp-python installed
    hf = parse_teacher({"kind": "llm", "model": "smollm2-135m", "backend": "transformers"})
    a, b = spec_identity(auto), spec_identity(hf)
    assert a != b and a["backend"] == "llama.cpp" and b["backend"] == "transformers"
    assert "dtype" not in a and b["dtype"] == "float32" and a["model"] == b["model"]
    # the task changes the template, hence the identity
    gguf_teacher.use_task("claim")
    try:
        assert gguf_teacher.identity()["template"] == POINTWISE["claim"] != ident["template"]
    finally:
        gguf_teacher.use_task("qa")


@pytest.mark.slow
def test_gguf_agrees_with_the_transformers_path(gguf_teacher, smollm2):
    """Same prompt tokens, and the same ordering of scores as the dequantised weights in transformers."""
    from scipy.stats import spearmanr

    from retrieval_kd.teachers.llm import LLMTeacher

    hf = LLMTeacher(smollm2, dtype="float32", threads=2)
    for p in PAIRS:
        assert gguf_teacher._fit(p.query, p.passage) == hf._fit(p.query, p.passage)
    pairs = [Pair(p.qid, p.docid + str(i), p.query, p.passage + " " + w)
             for i, w in enumerate(["", "Indeed.", "Maybe not.", "See also."]) for p in PAIRS]
    a, b = gguf_teacher.score(pairs), hf.score(pairs)
    rho = spearmanr(a, b).statistic
    print(f"gguf vs transformers: spearman {rho:.3f}, max |diff| {np.abs(a - b).max():.3f}")
    assert rho > 0.8 and np.abs(a - b).max() < 1.0
