"""Several multi-vector (ColBERT) losses on one forward, for :class:`~retrieval_kd.train.losses.WeightedLoss`.

The query column and the merged document columns are encoded once per batch (as each Sentence
Transformers multi-vector loss encodes them), and each loss's ``forward`` math runs on those shared
token embeddings, read with the loss object's own settings (similarity, temperatures, scale, ...).
A loss not listed in :data:`TERMS` (e.g. a cached one) keeps its own forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.merged_forward import embed_columns_padded
from sentence_transformers.multi_vector_encoder.losses import (
    MultiVectorDistillKLDivLoss,
    MultiVectorMarginMSELoss,
    MultiVectorMultipleNegativesRankingLoss,
)
from sentence_transformers.util import (
    all_gather_padded,
    check_teacher_targets,
    get_rank,
    stack_padded_token_embeddings,
)
from torch import Tensor, nn


@dataclass
class TokenBatch:
    """One batch's token embeddings: queries ``(B, Tq, D)`` and their scoring mask, then one
    ``(B, Td, D)`` tensor and mask per document column."""

    queries: Tensor
    queries_mask: Tensor
    docs: list[Tensor]
    docs_masks: list[Tensor]

    @cached_property
    def stacked(self) -> tuple[Tensor, Tensor]:
        """The documents as ``(B, N, T_max, D)`` and their ``(B, N, T_max)`` mask."""
        return stack_padded_token_embeddings(self.docs, self.docs_masks)


def encode(model: nn.Module, features: Iterable[dict[str, Any]],
           mini_batch_size: int | None = None) -> TokenBatch:
    """The query column in one forward, the document columns in one merged forward."""
    features = [dict(f) for f in features]
    query = features[0]
    out = model(query, task=query.get("task", "query"))
    docs, masks = embed_columns_padded(model, features[1:], mini_batch_size, task_default="document")
    return TokenBatch(out["token_embeddings"], out["attention_mask"].bool(), docs, masks)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The model under DDP / ``torch.compile`` wrappers, which hide its scoring methods."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _scores(loss: nn.Module, queries: Tensor, queries_mask: Tensor, docs: Tensor, docs_mask: Tensor,
            pairwise: bool) -> Tensor:
    """The scores ``loss.forward`` computes: its ``similarity_fct``, or, where that is ``None``
    (Sentence Transformers >= 6.3), the model's own similarity. Documents ``(B, T, D)``: ``(Q,)``
    pairwise. Stacked ``(B, N, T, D)``, per candidate column: ``(Q, N)`` pairwise (query ``i`` with
    its own group), or ``(Q, B * N)`` against every group (each group's candidates together)."""
    if loss.similarity_fct is not None:
        return loss.similarity_fct(queries, docs, queries_mask=queries_mask, documents_mask=docs_mask)
    model = _unwrapped(loss.model)
    score = model.similarity_pairwise if pairwise else model.similarity
    if docs.ndim == 3:
        return score(queries, docs, a_mask=queries_mask, b_mask=docs_mask)
    columns = [score(queries, docs[:, j], a_mask=queries_mask, b_mask=docs_mask[:, j])
               for j in range(docs.shape[1])]
    return torch.stack(columns, dim=1) if pairwise else torch.stack(columns, dim=2).reshape(len(queries), -1)


def _need_two_docs(loss: nn.Module, b: TokenBatch) -> None:
    if len(b.docs) < 2:
        raise ValueError(f"{type(loss).__name__} needs at least 2 document columns, got {len(b.docs)}")


def kl(loss: MultiVectorDistillKLDivLoss, b: TokenBatch, labels: Tensor) -> Tensor:
    """``MultiVectorDistillKLDivLoss.forward``: KL between softmaxed teacher and student scores."""
    _need_two_docs(loss, b)
    if labels.shape != (len(b.queries), len(b.docs)):
        raise ValueError(f"{type(loss).__name__}: teacher scores of shape {tuple(labels.shape)}, expected "
                         f"{(len(b.queries), len(b.docs))}")
    docs, docs_mask = b.stacked
    scores = _scores(loss, b.queries, b.queries_mask, docs, docs_mask, pairwise=True)
    student = F.log_softmax(scores / loss.student_temperature, dim=-1)
    teacher = F.log_softmax(labels.detach() / loss.teacher_temperature, dim=-1)
    if not loss._checked_teacher_scale:
        loss._checked_teacher_scale = True
        check_teacher_targets(teacher.exp(), labels, loss.teacher_temperature, type(loss).__name__)
    return loss.loss_function(student, teacher) * loss.student_temperature**2


def margin_mse(loss: MultiVectorMarginMSELoss, b: TokenBatch, labels: Tensor) -> Tensor:
    """``MultiVectorMarginMSELoss.forward``: MSE of the student's (positive - negative_i) margins
    against the teacher's (given as margins, or as raw scores made into margins)."""
    _need_two_docs(loss, b)
    (pos, *negs), (pos_mask, *negs_masks) = b.docs, b.docs_masks
    rows = len(b.queries)
    if labels.ndim == 1 and len(negs) == 1:
        labels = labels.unsqueeze(1)
    if labels.shape == (rows, len(negs) + 1):
        labels = labels[:, 0:1] - labels[:, 1:]
    if labels.shape != (rows, len(negs)):
        raise ValueError(f"{type(loss).__name__}: labels of shape {tuple(labels.shape)}, expected "
                         f"{(rows, len(negs))} margins or {(rows, len(negs) + 1)} scores")
    pos_scores = _scores(loss, b.queries, b.queries_mask, pos, pos_mask, pairwise=True)
    margins = torch.stack([pos_scores - _scores(loss, b.queries, b.queries_mask, n, m, pairwise=True)
                           for n, m in zip(negs, negs_masks)], dim=1)
    return loss.loss_function(margins, labels.detach().to(margins.dtype))


def infonce(loss: MultiVectorMultipleNegativesRankingLoss, b: TokenBatch, labels: Tensor | None) -> Tensor:
    """``MultiVectorMultipleNegativesRankingLoss.forward``: cross-entropy over every document of
    the batch (query-major; query i's positive at column ``i * N``), gathered across ranks if set."""
    rows, n = len(b.queries), len(b.docs)
    if loss.gather_across_devices:
        gathered = [all_gather_padded(e, m, with_grad=True) for e, m in zip(b.docs, b.docs_masks)]
        docs, docs_mask = stack_padded_token_embeddings([e for e, _ in gathered], [m for _, m in gathered])
    else:
        docs, docs_mask = b.stacked
    step = loss.score_mini_batch_size or rows
    scores = torch.cat([_scores(loss, b.queries[i:i + step], b.queries_mask[i:i + step], docs, docs_mask,
                                pairwise=False)
                        for i in range(0, rows, step)], dim=0)
    target = torch.arange(rows, device=b.queries.device) * n
    if loss.gather_across_devices:
        target = target + get_rank() * rows * n
    return F.cross_entropy(scores * loss.scale, target)


TERMS: dict[type, Callable[[Any, TokenBatch, Tensor | None], Tensor]] = {
    MultiVectorDistillKLDivLoss: kl,
    MultiVectorMarginMSELoss: margin_mse,
    MultiVectorMultipleNegativesRankingLoss: infonce,
}
"""The losses computed from a shared :class:`TokenBatch` (exact types: a subclass may change ``forward``)."""


def shares(loss: nn.Module) -> bool:
    """Whether ``loss`` computes from the shared :class:`TokenBatch`."""
    return type(loss) in TERMS


def loss_from_tokens(loss: nn.Module, batch: TokenBatch, labels: Tensor | None) -> Tensor:
    """``loss`` (one of :data:`TERMS`) on the shared token embeddings."""
    return TERMS[type(loss)](loss, batch, labels)


def mini_batch_size(losses: Iterable[nn.Module]) -> int | None:
    """The shared document forward's row chunk: the smallest the losses set (chunking is exact)."""
    sizes = [s for s in (getattr(loss, "mini_batch_size", None) for loss in losses) if s is not None]
    return min(sizes) if sizes else None
