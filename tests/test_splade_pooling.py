"""The one-pass SPLADE max pooling equals Sentence Transformers' own, and steps aside in training."""

from __future__ import annotations

import pytest
import torch

from retrieval_kd.models.splade_pooling import fast_max_pooling
from tests.tiny_models import build_tiny_bert

TEXTS = ["protein folding in yeast cells", "", "a", "the quick brown fox jumps over the lazy dog " * 8,
         "gene expression", "cells"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from sentence_transformers import SparseEncoder

    folder = build_tiny_bert(tmp_path_factory.mktemp("mlm"), masked_lm=True)
    return SparseEncoder(str(folder), device="cpu"), SparseEncoder(str(folder), device="cpu")


def _pooling(model):
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    return next(m for m in model.modules() if isinstance(m, SpladePooling))


@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_encode_equals_the_library(models, activation):
    plain, fast = models
    for m in models:
        _pooling(m).activation_function = activation
    assert fast_max_pooling(fast) == 1
    a = plain.encode_document(TEXTS, batch_size=4, convert_to_tensor=True).to_dense()
    b = fast.encode_document(TEXTS, batch_size=4, convert_to_tensor=True).to_dense()
    assert torch.equal(a, b)
    assert (b[1] > 0).any()  # the empty text still has its special tokens


def test_left_padding_and_a_text_without_tokens(models):
    plain, fast = models
    fast_max_pooling(fast)
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 50)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [0] * 7])  # left, right, none
    with torch.inference_mode():
        a = _pooling(plain)({"token_embeddings": logits.clone(), "attention_mask": mask})["sentence_embedding"]
        b = _pooling(fast)({"token_embeddings": logits.clone(), "attention_mask": mask})["sentence_embedding"]
    assert torch.equal(a, b)
    assert torch.equal(b[2], torch.zeros(50))


def test_training_keeps_the_library_forward(models):
    _, fast = models
    fast_max_pooling(fast)
    pool = _pooling(fast)
    pool.train()  # as in a trainer
    logits = torch.randn(2, 5, 30, requires_grad=True)
    mask = torch.ones(2, 5, dtype=torch.long)
    out = pool({"token_embeddings": logits, "attention_mask": mask})["sentence_embedding"]
    pool.eval()
    out.sum().backward()  # the library's differentiable path (the one-pass one writes with out=)
    assert logits.grad is not None and logits.grad.abs().sum() > 0
