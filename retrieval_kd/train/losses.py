"""Loss objects per student family, built from Sentence Transformers' own losses.

======================  ==========================  ==============================  ====================================
loss                    bi-encoder                  splade (inside ``SpladeLoss``)  colbert / cross-encoder
======================  ==========================  ==============================  ====================================
``margin-mse``          ``MarginMSELoss``           ``SparseMarginMSELoss``         ``MultiVectorMarginMSELoss`` /
                                                                                    CE ``MarginMSELoss``
``kl``                  ``DistillKLDivLoss``        ``SparseDistillKLDivLoss``      ``MultiVectorDistillKLDivLoss`` /
                                                                                    :class:`CrossEncoderDistillKLDivLoss`
``infonce``             ``MultipleNegatives-        ``SparseMultipleNegatives-      ``MultiVectorMultipleNegatives-
                        RankingLoss``               RankingLoss``                   RankingLoss`` / CE ``MultipleNegatives-
                                                                                    RankingLoss``
======================  ==========================  ==============================  ====================================

Sentence Transformers has no listwise KL loss for cross-encoders, so
:class:`CrossEncoderDistillKLDivLoss` is the one loss written here (the same formula as
``DistillKLDivLoss``, on cross-encoder logits). Several losses are combined by
:class:`WeightedLoss`, which returns one component per loss so the trainer logs each.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WeightedLoss(nn.Module):
    """``sum_i weight_i * loss_i`` over the same batch; returns ``{name: weighted loss}``.

    Inputs: whatever every member accepts; the ``listwise`` layout (query, positive,
    negative_1, ..., negative_k) with labels [s(q,p), s(q,n_1), ..., s(q,n_k)] serves
    Margin-MSE, KL and InfoNCE together.

    For bi-encoders and SPLADE the columns are embedded once
    (``compute_loss_from_embeddings``); multi-vector and cross-encoder members each run
    their own forward.
    """

    def __init__(self, model, terms: dict[str, tuple[nn.Module, float]], embed_once: bool = False) -> None:
        super().__init__()
        self.model = model
        self.embed_once = embed_once
        self.terms = nn.ModuleDict({name: loss for name, (loss, _) in terms.items()})
        self.weights = {name: float(w) for name, (_, w) in terms.items()}

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None
                                     ) -> dict[str, Tensor]:
        return {name: self.weights[name] * loss.compute_loss_from_embeddings(embeddings, labels)
                for name, loss in self.terms.items()}

    def forward(self, features, labels=None, **kwargs: Any) -> dict[str, Tensor]:
        if self.embed_once:
            from sentence_transformers.base.losses.merged_forward import embed_columns

            return self.compute_loss_from_embeddings(embed_columns(self.model, features), labels)
        out = {}
        for name, loss in self.terms.items():
            if kwargs:
                try:
                    value = loss(features, labels, **kwargs)
                except TypeError:
                    value = loss(features, labels)
            else:
                value = loss(features, labels)
            out[name] = self.weights[name] * value
        return out

    def get_config_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights)}


class CrossEncoderDistillKLDivLoss(nn.Module):
    """KL(teacher || student) over each query's passages, scored by a cross-encoder.

    ``KL(softmax(t / T) || softmax(s / T)) * T**2`` with ``s`` the cross-encoder logits of
    (query, passage_i) and ``t`` the teacher's scores, ``T`` the temperature.

    Inputs:
        +----------------------------------------+-------------------------------------------------+
        | Inputs                                 | Labels                                          |
        +========================================+=================================================+
        | (query, passage_1, ..., passage_n)     | [Teacher(query, passage_i) for i in 1..n]       |
        +----------------------------------------+-------------------------------------------------+
    """

    def __init__(self, model, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.temperature = temperature

    def logits(self, queries: list[str], passages: list[str], prompt: str | None = None,
               task: str | None = None) -> Tensor:
        from sentence_transformers.util import batch_to_device

        inputs = self.model.preprocess(list(zip(queries, passages)), prompt=prompt, task=task)
        inputs = batch_to_device(inputs, self.model.device)
        return self.model(inputs)["scores"].view(-1)

    def forward(self, inputs: list[list[str]], labels: Tensor | list[Tensor], prompt: str | None = None,
                task: str | None = None) -> Tensor:
        queries, columns = inputs[0], inputs[1:]
        if len(columns) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 passage columns, got {len(columns)}")
        if isinstance(labels, list):
            labels = torch.stack(labels)
        if labels.shape != (len(queries), len(columns)):
            raise ValueError(f"{type(self).__name__}: labels of shape {tuple(labels.shape)}, expected "
                             f"{(len(queries), len(columns))}")
        student = torch.stack([self.logits(queries, col, prompt, task) for col in columns], dim=1).float()
        teacher = labels.detach().to(student.device).float()
        t = self.temperature
        loss = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                        reduction="batchmean", log_target=True)
        return loss * t * t

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature}


def bi_encoder_similarity(model) -> tuple[Any, Any]:
    """(pairwise, matrix) similarity functions of a bi-encoder: the model's own
    (``similarity_fn_name``, cosine unless its config says otherwise), the one its index searches
    with. Every bi-encoder loss uses it: Sentence Transformers' distillation losses default to
    the dot product while its InfoNCE defaults to cosine, and a mean-pooled body without a
    ``Normalize`` module (dot products ~100 for BERT-tiny) would then learn one similarity from
    the teacher and be searched with another."""
    from sentence_transformers import util

    name = getattr(model, "similarity_fn_name", None) or "cosine"
    table = {"cosine": (util.pairwise_cos_sim, util.cos_sim), "dot": (util.pairwise_dot_score, util.dot_score)}
    if name not in table:
        raise ValueError(f"bi-encoder similarity '{name}' is not supported for training (cosine or dot)")
    return table[name]


def _member(family: str, name: str, model, cfg) -> nn.Module:
    scale = {"scale": cfg.infonce_scale} if cfg.infonce_scale else {}
    if family == "bi-encoder":
        from sentence_transformers.sentence_transformer import losses as L

        pair, matrix = bi_encoder_similarity(model)
        return {"margin-mse": lambda: L.MarginMSELoss(model, similarity_fct=pair),
                "kl": lambda: L.DistillKLDivLoss(model, similarity_fct=pair, temperature=cfg.temperature),
                "infonce": lambda: L.MultipleNegativesRankingLoss(model, similarity_fct=matrix, **scale)
                }[name]()
    if family == "splade":
        from sentence_transformers.sparse_encoder import losses as L

        return {"margin-mse": lambda: L.SparseMarginMSELoss(model),
                "kl": lambda: L.SparseDistillKLDivLoss(model, temperature=cfg.temperature),
                "infonce": lambda: L.SparseMultipleNegativesRankingLoss(model, **scale)}[name]()
    if family == "colbert":
        from sentence_transformers.multi_vector_encoder import losses as L

        return {"margin-mse": lambda: L.MultiVectorMarginMSELoss(model),
                "kl": lambda: L.MultiVectorDistillKLDivLoss(model, temperature=cfg.temperature),
                "infonce": lambda: L.MultiVectorMultipleNegativesRankingLoss(model, **scale)}[name]()
    if family == "cross-encoder":
        from sentence_transformers.cross_encoder import losses as L

        return {"margin-mse": lambda: L.MarginMSELoss(model),
                "kl": lambda: CrossEncoderDistillKLDivLoss(model, temperature=cfg.temperature),
                "infonce": lambda: L.MultipleNegativesRankingLoss(model, **scale)}[name]()
    raise ValueError(f"unknown family {family}")


def build_loss(family: str, model, cfg) -> nn.Module:
    """The training loss for ``cfg.losses`` (weighted when more than one or weight != 1);
    SPLADE's is wrapped in ``SpladeLoss`` with the configured FLOPS weights."""
    terms = {t.name: (_member(family, t.name, model, cfg), t.weight) for t in cfg.losses}
    if len(terms) == 1 and next(iter(terms.values()))[1] == 1.0:
        loss = next(iter(terms.values()))[0]
    else:
        loss = WeightedLoss(model, terms, embed_once=family == "bi-encoder")
    if family == "splade":
        from sentence_transformers.sparse_encoder.losses import SpladeLoss

        loss = SpladeLoss(model, loss=loss, document_regularizer_weight=cfg.splade_doc_weight,
                          query_regularizer_weight=cfg.splade_query_weight)
    return loss
