"""Embedding distillation: the student's vectors trained towards a teacher bi-encoder's.

A teacher score carries one number per (query, passage); a teacher bi-encoder's vector carries its
geometry per text. The ``embed`` loss (EmbedDistill, Kim et al. 2023; Sentence Transformers'
model-distillation recipe) pulls each text's student vector towards the teacher's vector of the
same text: ``mean(1 - cos(student(x), target(x)))`` over every text of the batch (queries,
positives, negatives), beside the other terms.

Targets are fixed before training and travel in the rows' ``label`` column (after any teacher
scores): the teacher's normalised vectors, centred and rotated into their principal axes over
the rows' texts, cut (or zero-padded) to the student's width. No trainable projection, so the
student's own cosine space becomes the teacher's, the one its index searches with, and a resumed
run restarts from exactly the state it was checkpointed in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from retrieval_kd.errors import RkdError


def teacher_vectors(spec: dict[str, Any], columns: list[list[str]], queries_first: bool = True
                    ) -> tuple[np.ndarray, dict[str, Any]]:
    """The teacher's normalised vectors of every text of the rows: ``(rows, len(columns), dim)``,
    column 0 encoded as queries (``queries_first``), the others as documents (cached per document
    in the stage's embedding cache, :mod:`retrieval_kd.embcache`); and the teacher's identity
    (what changes its vectors, as a score store's: no path, no runtime knob)."""
    from retrieval_kd.teachers.identity import spec_identity
    from retrieval_kd.teachers.spec import build_teacher, parse_teacher

    parsed = parse_teacher(spec, "embed_teacher")
    teacher = build_teacher(parsed)
    try:
        if not hasattr(teacher, "embed_documents"):
            raise RkdError(f"embed_teacher: a {spec.get('kind')} teacher has no text vectors; "
                           "give a bi-encoder teacher spec")
        first = (teacher.embed_queries if queries_first else teacher.embed_documents)(columns[0])
        docs = [teacher.embed_documents(col) for col in columns[1:]]
        return np.stack([first, *docs], axis=1).astype(np.float32), spec_identity(parsed)
    finally:
        teacher.close()


def principal_targets(vectors: np.ndarray, width: int) -> np.ndarray:
    """``vectors`` (rows, cols, dim) centred and rotated into their principal axes (over the
    distinct vectors, float64 SVD, each axis signed so its largest loading is positive), cut to
    ``width`` axes or zero-padded to it: the same shape with ``width`` as its last size."""
    flat = vectors.reshape(-1, vectors.shape[-1]).astype(np.float64)
    distinct = np.unique(flat, axis=0)
    mean = distinct.mean(axis=0)
    _, _, vt = np.linalg.svd(distinct - mean, full_matrices=False)
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    axes = (vt * signs[:, None])[:width]
    out = (flat - mean) @ axes.T
    if out.shape[1] < width:
        out = np.pad(out, ((0, 0), (0, width - out.shape[1])))
    return out.reshape(*vectors.shape[:-1], width).astype(np.float32)


def corpus_rows(ds: Any) -> tuple[dict[str, list], Any]:
    """One row per corpus document (in document id order), its text the only column."""
    from retrieval_kd.artifacts import sha256_records
    from retrieval_kd.train.examples import ExampleStats

    ids = sorted(ds.corpus.docs)
    cols = {"text": [ds.corpus.docs[d].joined() for d in ids]}
    stats = ExampleStats(layout="corpus", rows=len(ids), fingerprint=sha256_records((t,) for t in cols["text"]))
    return cols, stats


def query_rows(ds: Any, groups: dict[str, str]) -> tuple[dict[str, list], list[str], Any]:
    """One row per query of ``ds`` (``embed_on: queries``): its text the only column, and the text
    whose teacher vector is its target, ``groups[qid]`` (the query itself, or under ``translate``
    the scored dataset's query of the same id)."""
    from retrieval_kd.artifacts import sha256_records
    from retrieval_kd.train.examples import ExampleStats

    ids = list(groups)
    cols = {"query": [ds.queries.texts[q] for q in ids]}
    sources = [groups[q] for q in ids]
    stats = ExampleStats(layout="queries", queries=len(ids), rows=len(ids),
                         fingerprint=sha256_records(zip(cols["query"], sources)))
    return cols, sources, stats


def add_query_targets(cols: dict[str, list], sources: list[str], spec: dict[str, Any], width: int
                      ) -> dict[str, Any]:
    """``embed_on: queries``: each row's target is the teacher's query vector of its source text,
    in the teacher's own space (no rotation: the student's queries are searched against the
    teacher's document vectors, a dense index's ``doc_model``), so the sizes must agree."""
    unique = sorted(set(sources))
    vectors, identity = teacher_vectors(spec, [unique])
    if vectors.shape[-1] != width:
        raise RkdError(f"embed_on: queries trains in the teacher's own space: the student's vector size "
                       f"({width}) must be the teacher's ({vectors.shape[-1]})")
    at = {t: i for i, t in enumerate(unique)}
    cols["label"] = [vectors[at[t], 0] for t in sources]
    return {"teacher": identity, "teacher_dim": int(vectors.shape[-1]), "width": width, "columns": 1,
            "space": "teacher", "distinct_targets": len(unique)}


def add_targets(cols: dict[str, list], spec: dict[str, Any], width: int, queries_first: bool = True
                ) -> dict[str, Any]:
    """Append every row's ``embed`` targets (``width`` per text column) to its ``label`` (made if
    the rows have none) in place; column 0 holds queries (``queries_first``) or documents.
    Returns what the run's record keeps of them."""
    names = [n for n in cols if n != "label"]
    vectors, identity = teacher_vectors(spec, [cols[n] for n in names], queries_first)
    targets = principal_targets(vectors, width).reshape(len(vectors), -1)
    if "label" in cols:
        scores = np.asarray(cols["label"], dtype=np.float32).reshape(len(targets), -1)
        targets = np.concatenate([scores, targets], axis=1)
    cols["label"] = list(targets)
    return {"teacher": identity, "teacher_dim": int(vectors.shape[-1]), "width": width,
            "columns": len(names)}


def student_width(model: Any) -> int:
    """The vector size of a one-vector-per-text student."""
    dim = model.get_embedding_dimension()
    if not dim:
        raise RkdError("the student's vector size is unknown (its last module does not say)")
    return int(dim)


class EmbedLoss(nn.Module):
    """``mean(1 - cos(student vector, target))`` over every text column of the batch.

    Labels: ``(batch, columns * width)`` targets, row-major per column (see the module doc).
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        student = torch.stack(embeddings, dim=1).float()  # (batch, columns, width)
        target = labels.to(student.device).float().view(student.shape[0], len(embeddings), -1)
        if target.shape != student.shape:
            raise ValueError(f"embed targets of shape {tuple(target.shape)} for student vectors of shape "
                             f"{tuple(student.shape)}")
        return (1.0 - F.cosine_similarity(student, target, dim=-1)).mean()

    def forward(self, features, labels: Tensor) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        return self.compute_loss_from_embeddings(embed_columns(self.model, features), labels)

    def get_config_dict(self) -> dict[str, Any]:
        return {"similarity": "cosine"}
