"""A ColBERT WeightedLoss encodes the batch once: the same per-term losses and gradients as each
Sentence Transformers loss on its own forward, with one query and one document forward per batch.

A tiny random-weight ColBERT (tests/tiny_models.py, no dropout, in eval mode), one batch from the
real trainer's collator and a real score store (tests/test_train_support.py).
"""

from __future__ import annotations

import pytest

from tests.test_train_support import tiny_config, train_env  # noqa: F401 - fixture

LOSSES = "kl:1.0+infonce:0.5+margin-mse:2.0"


@pytest.fixture(scope="module")
def colbert_batch(train_env, tmp_path_factory):  # noqa: F811
    """(model, the built WeightedLoss, features, labels) for one batch of 4 documents per query."""
    from retrieval_kd.train.stage import load_inputs, make_examples, make_trainer
    from retrieval_kd.train.students import build_student

    tmp = tmp_path_factory.mktemp("colbert-shared")
    cfg = tiny_config(train_env, "colbert", tmp / "out", losses=LOSSES, temperature=0.5, infonce_scale=3.0)
    data, _ = make_examples(cfg, load_inputs(cfg))
    model, _ = build_student("colbert", cfg.init, max_length=cfg.max_length, colbert_dim=cfg.colbert_dim,
                             seed=cfg.seed)
    trainer = make_trainer(cfg, model, data, tmp / "ckpt")
    features, labels = trainer.collect_features(next(iter(trainer.get_train_dataloader())))
    model.eval()
    return model, trainer.loss, features, labels


def grads(value, params):
    import torch

    got = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, got)]


@pytest.mark.parametrize("default_similarity", [False, True], ids=["family-similarity", "library-default"])
@pytest.mark.parametrize("chunks", [False, True])
def test_shared_forward_gives_each_losses_value_and_gradients(colbert_batch, chunks, default_similarity):
    import torch

    from retrieval_kd.train.losses import WeightedLoss

    model, loss, features, labels = colbert_batch
    assert isinstance(loss, WeightedLoss) and loss.tokens_once
    rows = len(features[0]["input_ids"])
    assert labels.shape == (rows, len(features) - 1) == (rows, 4) and rows > 1
    kl, infonce = loss.terms["kl"], loss.terms["infonce"]
    assert (kl.temperature, infonce.scale) == (0.5, 3.0)  # not the defaults, so a wrong read shows
    if chunks:  # row chunks in the document forward (the same in every term), query chunks in scoring
        for term in loss.terms.values():
            term.mini_batch_size = 2
        infonce.score_mini_batch_size = 2
    family_similarity = {name: term.similarity_fct for name, term in loss.terms.items()}
    assert None not in family_similarity.values()
    if default_similarity:  # None: the library scores with the model's own similarity methods
        for term in loss.terms.values():
            term.similarity_fct = None
    try:
        params = [p for p in model.parameters() if p.requires_grad]
        shared = loss(features, labels)
        assert list(shared) == list(loss.terms)
        for name, term in loss.terms.items():
            alone = loss.weights[name] * term(features, labels)
            assert torch.allclose(shared[name], alone, rtol=1e-6, atol=1e-7), (name, shared[name], alone)
            own = grads(alone, params)
            assert any(g.abs().sum() > 0 for g in own), name
            for p, g, h in zip(params, grads(shared[name], params), own):
                assert torch.allclose(g, h, rtol=1e-5, atol=1e-7), (name, p.shape, (g - h).abs().max())
    finally:
        for term in loss.terms.values():
            term.mini_batch_size = None
        infonce.score_mini_batch_size = None
        for name, term in loss.terms.items():
            term.similarity_fct = family_similarity[name]


def test_shared_forward_encodes_queries_once_and_documents_once(colbert_batch, monkeypatch):
    from sentence_transformers.multi_vector_encoder.losses import MultiVectorMultipleNegativesRankingLoss

    from retrieval_kd.train.losses import WeightedLoss

    model, loss, features, labels = colbert_batch
    tasks: list[str | None] = []
    forward = model.forward

    def counted(*args, **kwargs):
        tasks.append(kwargs.get("task"))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counted)
    terms = {name: (term, loss.weights[name]) for name, term in loss.terms.items()}

    loss(features, labels)
    assert tasks == ["query", "document"]  # all 4 document columns merged into one forward

    tasks.clear()
    WeightedLoss(model, terms)(features, labels)  # each term on its own forward
    assert tasks == ["query", "document"] * len(terms)

    class OwnForward(MultiVectorMultipleNegativesRankingLoss):
        """A subclass may change ``forward``: it keeps its own."""

    tasks.clear()
    own = {**terms, "infonce": (OwnForward(model, scale=3.0), 0.5)}
    WeightedLoss(model, own, tokens_once=True)(features, labels)
    assert tasks == ["query", "document"] * 2
