"""Cross-encoder: one score per (query, passage) pair (``CrossEncoder``); a reranker, not indexable.

=================  =====================================================================
student            ``CrossEncoder`` (``num_labels=1``): a sequence-classification head on
                   a plain body; ``max_length`` is the pair's length
losses             ``margin-mse``: CE ``MarginMSELoss``, ``kl``:
                   :class:`~retrieval_kd.train.losses.CrossEncoderDistillKLDivLoss`,
                   ``infonce``: CE ``MultipleNegativesRankingLoss``
index              none: evaluated as a reranker of another system's candidates
teacher            :class:`CrossEncoderSpec` (kind ``cross-encoder``) builds a
                   :class:`~retrieval_kd.teachers.cross_encoder.CrossEncoderTeacher`
=================  =====================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from retrieval_kd.families.base import ModelFamily, infonce_scale
from retrieval_kd.teachers.spec_base import ModelSpec


class CrossEncoderSpec(ModelSpec):
    """A cross-encoder teacher's settings (YAML, flags)."""

    kind: Literal["cross-encoder"]
    max_length: int = 512
    batch_size: int = 32
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto: bfloat16 autocast where the hardware has native bf16, else float32 (recorded resolved)."""


class CrossEncoderFamily(ModelFamily):
    name = "cross-encoder"
    student_class = "CrossEncoder"
    every_parameter_used = True  # its classifier reads the pooler (DDP: no unused-parameter search)
    teacher_spec = CrossEncoderSpec

    def build_student(self, loc: str, kind: str | None, local: bool, max_length: int,
                      colbert_dim: int) -> Any:
        from sentence_transformers import CrossEncoder

        from retrieval_kd.train.students import local_only, transformer_body

        if kind == self.student_class:
            return CrossEncoder(loc, max_length=max_length, **local_only(loc))
        body = transformer_body(loc) if local else loc
        return CrossEncoder(body, num_labels=1, max_length=max_length, **local_only(body))

    def loss(self, name: str, model: Any, cfg: Any) -> Any:
        from sentence_transformers.cross_encoder import losses as L

        from retrieval_kd.train.losses import CrossEncoderDistillKLDivLoss

        scale = infonce_scale(cfg)
        return {"margin-mse": lambda: L.MarginMSELoss(model),
                "kl": lambda: CrossEncoderDistillKLDivLoss(model, temperature=cfg.temperature),
                "infonce": lambda: L.MultipleNegativesRankingLoss(model, **scale)}[name]()

    def build_teacher(self, args: dict[str, Any], embedding_cache: str | Path | None) -> Any:
        from retrieval_kd.teachers.cross_encoder import CrossEncoderTeacher

        return CrossEncoderTeacher(**args)  # pairs are scored, no document vectors to cache
