"""Training losses, built from Sentence Transformers' own: each family's module names its
``margin-mse``, ``kl`` and ``infonce`` losses (:meth:`~retrieval_kd.families.base.ModelFamily.loss`).

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

    With ``embed_once`` (a family's, the bi-encoder's) the columns are embedded once
    (``compute_loss_from_embeddings``); with ``tokens_once`` (ColBERT's) the query column and the
    document columns are encoded once for the multi-vector members that share them
    (:mod:`retrieval_kd.train.multivector_once`); any other member runs its own forward.
    """

    def __init__(self, model, terms: dict[str, tuple[nn.Module, float]], embed_once: bool = False,
                 tokens_once: bool = False) -> None:
        super().__init__()
        self.model = model
        self.embed_once = embed_once
        self.tokens_once = tokens_once
        self.terms = nn.ModuleDict({name: loss for name, (loss, _) in terms.items()})
        self.weights = {name: float(w) for name, (_, w) in terms.items()}

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None
                                     ) -> dict[str, Tensor]:
        scores, targets = split_labels(labels, embeddings) if "embed" in self.terms else (labels, None)
        return {name: self.weights[name] * loss.compute_loss_from_embeddings(
                    embeddings, targets if name == "embed" else scores)
                for name, loss in self.terms.items()}

    def forward(self, features, labels=None, **kwargs: Any) -> dict[str, Tensor]:
        if self.embed_once:
            from sentence_transformers.base.losses.merged_forward import embed_columns

            return self.compute_loss_from_embeddings(embed_columns(self.model, features), labels)
        shared = self._from_shared_tokens(features, labels) if self.tokens_once else {}
        return {name: shared[name] if name in shared
                else self.weights[name] * self._own(loss, features, labels, kwargs)
                for name, loss in self.terms.items()}

    def _from_shared_tokens(self, features, labels) -> dict[str, Tensor]:
        """The weighted members that compute from one shared encoding of the batch's columns."""
        from retrieval_kd.train import multivector_once as mv

        names = [name for name, loss in self.terms.items() if mv.shares(loss)]
        if not names:
            return {}
        batch = mv.encode(self.model, features, mv.mini_batch_size(self.terms[n] for n in names))
        return {n: self.weights[n] * mv.loss_from_tokens(self.terms[n], batch, labels) for n in names}

    @staticmethod
    def _own(loss: nn.Module, features, labels, kwargs: dict[str, Any]) -> Tensor:
        """A member on its own forward (with the trainer's keywords where it takes them)."""
        if kwargs:
            try:
                return loss(features, labels, **kwargs)
            except TypeError:
                pass
        return loss(features, labels)

    def get_config_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights)}


def split_labels(labels: Tensor, embeddings: list[Tensor]) -> tuple[Tensor | None, Tensor]:
    """A row's label is its teacher scores (if any) followed by the ``embed`` targets of its
    columns (:mod:`retrieval_kd.train.embed`): (scores or None, targets). One score (a
    Margin-MSE margin) comes back as a vector, as the loss reads it without targets."""
    n = len(embeddings) * embeddings[0].shape[-1]
    scores = labels[:, :-n] if labels.shape[1] > n else None
    if scores is not None and scores.shape[1] == 1:
        scores = scores[:, 0]
    return scores, labels[:, -n:]


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


def build_loss(family: str, model, cfg) -> nn.Module:
    """The training loss for ``cfg.losses`` (weighted when more than one or weight != 1), in the
    family's wrapper (SPLADE's ``SpladeLoss`` with the configured FLOPS weights)."""
    from retrieval_kd.families import get
    from retrieval_kd.train.embed import EmbedLoss

    fam = get(family)
    if fam.token_embed and cfg.loss_names == ["embed"]:  # the corpus token stage (validated: alone)
        from retrieval_kd.train.embed import student_width
        from retrieval_kd.train.token_embed import TokenEmbedLoss

        return fam.wrap_loss(TokenEmbedLoss(model, student_width(model)), model, cfg)
    terms = {t.name: (EmbedLoss(model) if t.name == "embed" else fam.loss(t.name, model, cfg), t.weight)
             for t in cfg.losses}
    if len(terms) == 1 and next(iter(terms.values()))[1] == 1.0 and "embed" not in terms:
        loss = next(iter(terms.values()))[0]
    else:
        loss = WeightedLoss(model, terms, embed_once=fam.embed_once, tokens_once=fam.tokens_once)
    return fam.wrap_loss(loss, model, cfg)
