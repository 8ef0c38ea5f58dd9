"""Every loss on every student family: the loss falls on a fixed batch; saved students reload.

Tiny random-weight models (tests/tiny_models.py), the real trainer's collator and
``compute_loss``, a real score store from the fixture in tests/test_train_support.py.
"""

from __future__ import annotations

import copy
import json
import math

import pytest

from retrieval_kd.train.students import FAMILY_CLASS
from tests.test_train_support import tiny_config, train_env  # noqa: F401 - fixture

FAMILIES = list(FAMILY_CLASS)
LOSSES = ["margin-mse", "kl", "infonce", "kl+infonce:0.5"]


def fixed_batch_losses(cfg, tmp_path, steps: int = 8, width: int | None = None) -> list[float]:
    """Loss on one fixed batch while an optimiser takes ``steps`` steps on it (the tiny models
    have no dropout, so only the weights change the loss)."""
    import torch

    from retrieval_kd.train.stage import load_inputs, make_examples, make_trainer
    from retrieval_kd.train.students import build_student

    data, _ = make_examples(cfg, load_inputs(cfg), width)
    model, _ = build_student(cfg.family, cfg.init, max_length=cfg.max_length, colbert_dim=cfg.colbert_dim,
                             seed=cfg.seed)
    trainer = make_trainer(cfg, model, data, tmp_path / "ckpt")
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    out = []
    for _ in range(steps):
        loss = trainer.compute_loss(model, copy.deepcopy(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(float(loss.detach()))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("loss", LOSSES)
def test_loss_decreases_on_a_fixed_batch(train_env, tmp_path, family, loss):  # noqa: F811
    cfg = tiny_config(train_env, family, tmp_path / "out", losses=loss)
    losses = fixed_batch_losses(cfg, tmp_path)
    assert all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0], losses


def test_weighted_loss_reports_each_component(train_env, tmp_path):  # noqa: F811
    from retrieval_kd.train.losses import WeightedLoss, build_loss
    from retrieval_kd.train.students import build_student

    cfg = tiny_config(train_env, "bi-encoder", tmp_path / "o", losses="kl:2+infonce:0.5")
    model, _ = build_student("bi-encoder", cfg.init, max_length=32)
    loss = build_loss("bi-encoder", model, cfg)
    assert isinstance(loss, WeightedLoss) and loss.weights == {"kl": 2.0, "infonce": 0.5}
    splade = build_loss("splade", build_student("splade", str(train_env["splade"]))[0],
                        tiny_config(train_env, "splade", tmp_path / "p", splade_query_weight=0.1,
                                    splade_doc_weight=0.2))
    assert (splade.query_regularizer_weight, splade.document_regularizer_weight) == (0.1, 0.2)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_trained_student_reloads_with_the_plain_class(train_env, tmp_path, family):  # noqa: F811
    import sentence_transformers as st

    from retrieval_kd.train.stage import train_stage

    cfg = tiny_config(train_env, family, tmp_path / "model", losses="kl+infonce:0.5")
    out = train_stage(cfg, progress=False)
    model = getattr(st, FAMILY_CLASS[family])(str(out), local_files_only=True)
    if family == "cross-encoder":
        scores = model.predict([("cell protein", "protein cell level"), ("cell protein", "virus dose")])
        assert len(scores) == 2 and model.num_labels == 1
    elif family == "colbert":
        q = model.encode_query(["cell protein"])
        d = model.encode_document(["protein cell level", "virus dose"])
        assert q[0].shape[-1] == cfg.colbert_dim and model.similarity(q, d).shape == (1, 2)
    else:
        emb = model.encode(["cell protein", "virus dose"])
        assert emb.shape[0] == 2
    man = json.loads((out / "manifest.json").read_text())
    assert man["kind"] == "train" and man["outputs"]["global_step"] == 2
    assert man["inputs"]["score_stores"][0]["id"] == train_env["store"].name
    assert man["init"]["sha256"] and man["params"]["family"] == family
    assert {"kl", "infonce"} <= set(man["loss_log"][0])
    assert man["sessions"][-1]["examples_per_s"] > 0
    assert "sentence-transformers" in man["versions"]
    assert not (tmp_path / ".model.work").exists()  # checkpoints removed once the model is in place


def test_colbert_and_cross_encoder_build_around_a_plain_bert_body(train_env):  # noqa: F811
    from retrieval_kd.train.students import build_student, transformer_body

    colbert, ref = build_student("colbert", str(train_env["colbert"]), colbert_dim=24, max_length=32)
    assert [type(m).__name__ for m in colbert] == ["Transformer", "Dense", "MultiVectorMask", "Normalize"]
    assert ref.sha256
    ce, _ = build_student("cross-encoder", str(train_env["cross-encoder"]), max_length=32)
    assert ce.num_labels == 1
    # an ST folder contributes its transformer body
    assert transformer_body(train_env["bi-encoder"]) == str(train_env["bi-encoder"])


@pytest.mark.parametrize("loss_name", ["kl", "margin-mse", "infonce"])
def test_bi_encoder_losses_score_with_the_similarity_the_index_searches(train_env, tmp_path, loss_name):  # noqa: F811
    """A mean-pooled body without a Normalize module is searched by cosine (the dense index
    normalises), so every bi-encoder loss must score by cosine too: the loss may not change when
    the embeddings are rescaled. Sentence Transformers' KL and Margin-MSE default to the dot
    product, under which a BERT-tiny body's scores are ~100 and the KL term trained a similarity
    the index never uses."""
    import torch

    from retrieval_kd.train.losses import build_loss
    from retrieval_kd.train.students import build_student

    cfg = tiny_config(train_env, "bi-encoder", tmp_path / "o", losses=loss_name, temperature=0.05)
    model, _ = build_student("bi-encoder", cfg.init, max_length=32)
    assert model.similarity_fn_name == "cosine"
    loss = build_loss("bi-encoder", model, cfg)
    g = torch.Generator().manual_seed(0)
    emb = [torch.randn(4, 16, generator=g) for _ in range(4)]  # query + 3 passages
    labels = torch.randn(4, 3, generator=g) if loss_name == "kl" else torch.randn(4, generator=g)
    if loss_name == "margin-mse":
        emb = emb[:3]
    values = [float(loss.compute_loss_from_embeddings([e * s for e in emb], labels)) for s in (1.0, 10.0)]
    assert values[0] == pytest.approx(values[1], rel=1e-5)
