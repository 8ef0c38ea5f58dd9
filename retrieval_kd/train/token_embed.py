"""Token-level embedding distillation for ColBERT students (``embed_on: corpus``, family colbert).

A MaxSim model's unit is the token vector. When the student and the teacher bi-encoder share a
tokenizer (the BERT-tiny body and all-MiniLM-L6-v2 share BERT's uncased WordPiece vocabulary),
token ``i`` of a document is the same word piece for both, and the student can learn the
teacher's token vectors of the unlabelled corpus one to one: ``mean over real tokens of
1 - cos(student token, target)``. Targets: the teacher's normalised token vectors (its
``token_embeddings`` before pooling), centred and rotated into their principal axes over every
corpus token, cut to the student's width (research/compression revisions 14 and 16: an 8-epoch
stage of this, then ColBERT's KL + InfoNCE recipe, was +0.026 over the label-only twin on SciFact
dev).

Each row's label is ``[n_tokens, n_tokens x width targets, zero padding]`` (float16), a fixed size
per run, so the rows stay a plain dataset (read as tensors, which the collator stacks); the loss
checks on every batch that the student tokenised each text into exactly ``n_tokens`` tokens. The
table of targets is built once per pipeline run and shared by its seeds
(:mod:`retrieval_kd.train.token_cache`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from retrieval_kd.errors import RkdError
from retrieval_kd.families import BI_ENCODER
from retrieval_kd.teachers.spec import parse_teacher
from retrieval_kd.train.token_cache import TokenTable, cached_table
from retrieval_kd.train.token_spill import TokenSpill


def teacher_tokens(spec: dict[str, Any], texts: list[str], spill: TokenSpill) -> list[int]:
    """Encode ``texts`` with the teacher and put each text's token vectors, L2-normalised per
    token (:func:`_unit`), into ``spill``; returns each text's block number there. Sentence
    Transformers' own ``encode`` runs the batches (its order, padding and slicing); a forward hook
    moves each batch's token vectors into the spill as they come, so memory never holds the corpus's.
    Runs the spec's model with torch (token vectors are not a backend output)."""
    from sentence_transformers import SentenceTransformer

    from retrieval_kd.models.load import load_st_model
    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.pipeline.memory import trim

    parsed = parse_teacher(spec, "embed_teacher")
    model = load_st_model(SentenceTransformer, resolve_model(parsed.model), "the embed teacher",
                          max_seq_length=parsed.max_length)

    def spill_batch(module, args, out):
        tok, mask = out["token_embeddings"], out["attention_mask"]
        numbers = torch.zeros(*tok.shape[:2], 1, dtype=torch.float64)
        for b in range(len(tok)):
            real = mask[b].nonzero()
            n = int(real.max()) + 1 if len(real) else 1  # as encode slices: up to the last real token
            numbers[b] = spill.add(_unit(tok[b, :n]))
        trim()  # the batch's freed activations would otherwise stay resident
        return {**out, "token_embeddings": numbers}  # encode slices these instead of the vectors

    hook = model.register_forward_hook(spill_batch)
    try:
        out = model.encode(texts, output_value="token_embeddings", batch_size=32, convert_to_numpy=False,
                           show_progress_bar=False)
    finally:
        hook.remove()
    blocks = [int(t[0, 0]) for t in out]
    if any(spill.rows(j) != len(t) for j, t in zip(blocks, out)):
        raise RkdError("embed_teacher: the token vectors kept do not line up with the texts encoded")
    return blocks


def torch_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` on torch fp32, where token vectors are computed (no backend outputs them), so its
    identity says what ran on any machine; another backend asked for is one clear error."""
    if spec.get("backend", "auto") not in ("auto", "torch") or spec.get("variant", "auto") not in ("auto", "fp32"):
        raise RkdError(f"embed_teacher: token targets are computed with torch fp32, not backend "
                       f"{spec.get('backend')} / variant {spec.get('variant')}; leave both out")
    return {**spec, "backend": "torch", "variant": "fp32"}


def _unit(t: Tensor) -> np.ndarray:
    """One text's token vectors, each L2-normalised (float32)."""
    v = t.float().cpu().numpy()
    return v / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-12)


def principal_axes(vecs: Iterable[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, axes ``(width, dim)``) of every token vector: the covariance's leading eigenvectors
    (accumulated in float64 per text, so memory stays one text's), each signed so that its largest
    loading is positive."""
    n, total, outer = 0, 0.0, 0.0
    for v in vecs:
        v64 = v.astype(np.float64)
        n += len(v64)
        total = total + v64.sum(axis=0)
        outer = outer + v64.T @ v64
    mean = total / n
    _, vec = np.linalg.eigh(outer / n - np.outer(mean, mean))
    axes = vec[:, ::-1].T[:width]
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    return mean, axes * signs[:, None]


def _build_table(spec: dict[str, Any], texts: list[str], width: int, max_length: int,
                 identity: dict[str, Any], scratch: Path | None) -> TokenTable:
    """Two passes over the teacher's normalised token vectors, read back from a spill file in
    ``scratch`` (in memory without one), so memory holds one text's beside the float16 table."""
    with TokenSpill(scratch) as spill:
        blocks = teacher_tokens(spec, texts, spill)
        dim = int(spill.dim or 0)
        if dim < width:
            raise RkdError(f"embed_teacher: {dim}-d token vectors cannot fill a {width}-d student")
        mean, axes = principal_axes((spill.get(j) for j in blocks), width)
        lengths = np.array([spill.rows(j) for j in blocks], dtype=np.int32)
        targets = np.zeros((len(blocks), max_length, width), dtype=np.float16)
        for i, j in enumerate(blocks):
            targets[i, :lengths[i]] = ((spill.get(j) - mean) @ axes.T).astype(np.float16)
    record = {"teacher": identity, "teacher_dim": dim, "width": width, "columns": 1,
              "space": "principal token axes", "tokens": int(lengths.sum())}
    return TokenTable(lengths, targets, record)


def token_table(spec: dict[str, Any], texts: list[str], width: int, max_length: int) -> TokenTable:
    """The token targets of ``texts``: from the run's cache (:mod:`retrieval_kd.train.token_cache`)
    when another stage (another seed) built them, else built now."""
    from retrieval_kd.artifacts import sha256_records
    from retrieval_kd.embcache import current_root
    from retrieval_kd.teachers.identity import spec_identity

    spec = torch_spec(spec)
    parsed = parse_teacher(spec, "embed_teacher")
    if parsed.kind != BI_ENCODER.name:
        raise RkdError(f"embed_teacher: token targets come from a {BI_ENCODER.name}, not a {parsed.kind}")
    identity = {**spec_identity(parsed), "vectors": "tokens"}
    key = {"teacher": identity, "texts": sha256_records((t,) for t in texts), "width": width,
           "max_length": max_length}
    return cached_table(current_root(), key,
                        lambda scratch: _build_table(spec, texts, width, max_length, identity, scratch))


def add_token_targets(cols: dict[str, list], spec: dict[str, Any], width: int, max_length: int
                      ) -> dict[str, Any]:
    """Every row's (one text, column ``text``) token targets as its ``label``, in place (the rows'
    dataset should read them as tensors: ``with_format("torch", columns=["label"])``, which the
    collator stacks, rather than as Python lists). The labels are one float16 buffer (not an
    array per row), wrapped as an arrow column."""
    import pyarrow as pa

    table = token_table(spec, cols["text"], width, max_length)
    size = 1 + max_length * width
    rows = np.empty((len(table.lengths), size), dtype=np.float16)  # one buffer, which arrow wraps
    rows[:, 0] = table.lengths
    rows[:, 1:] = table.targets.reshape(len(rows), -1)
    cols["label"] = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), size)
    return table.record


class TokenEmbedLoss(nn.Module):
    """``mean over real tokens of 1 - cos(student token, target)`` for one text column."""

    def __init__(self, model: Any, width: int) -> None:
        super().__init__()
        self.model = model
        self.width = width

    def forward(self, features, labels: Tensor) -> Tensor:
        feats = dict(list(features)[0])
        out = self.model(feats, task=feats.get("task", "document"))
        tok, mask = out["token_embeddings"].float(), out["attention_mask"].bool()
        labels = labels.to(tok.device).float()
        n_tok = labels[:, 0].round().long()
        targets = labels[:, 1:].view(len(labels), -1, self.width)[:, :tok.shape[1]]
        have = mask.sum(dim=1)
        if not torch.equal(have, n_tok):
            i = int((have != n_tok).nonzero()[0])
            raise RkdError(f"token targets: a text has {int(have[i])} student tokens and {int(n_tok[i])} "
                           "teacher tokens; token distillation needs the teacher's tokenizer and max length")
        if tok.shape[-1] != self.width:
            raise RkdError(f"token targets are {self.width}-d, the student's tokens {tok.shape[-1]}-d")
        cos = F.cosine_similarity(tok, targets, dim=-1)
        return ((1.0 - cos) * mask).sum() / mask.sum().clamp(min=1)

    def get_config_dict(self) -> dict[str, Any]:
        return {"similarity": "cosine", "unit": "token"}
