"""Bi-encoder: one vector per text (``SentenceTransformer``); its index is ``dense`` (FAISS).

=================  =====================================================================
student            ``SentenceTransformer`` (a plain body gets ST's default mean pooling)
losses             ``margin-mse``: ``MarginMSELoss``, ``kl``: ``DistillKLDivLoss``,
                   ``infonce``: ``MultipleNegativesRankingLoss``, all with the model's own
                   similarity (:func:`similarity`); several weighted ones embed once
index              :class:`~retrieval_kd.index.encoders.DenseEncoder` vectors in ``index.faiss``
embedding cache    ``dense`` float32 rows
teacher            :class:`BiEncoderSpec` (kind ``bi-encoder``) builds a
                   :class:`~retrieval_kd.teachers.encoders.BiEncoderTeacher`
=================  =====================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from retrieval_kd.families.base import ModelFamily, infonce_scale
from retrieval_kd.teachers.spec_base import ModelSpec


def similarity(model: Any) -> tuple[Any, Any]:
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


def _st_prompts(ref_text: str) -> dict[str, str]:
    """A sentence-transformers folder's own prompts (config_sentence_transformers.json)."""
    import json

    from retrieval_kd.models.resolve import resolve_model

    cfg = Path(resolve_model(ref_text).location) / "config_sentence_transformers.json"
    try:
        return dict(json.loads(cfg.read_text(encoding="utf-8")).get("prompts") or {})
    except (OSError, ValueError):
        return {}


class BiEncoderSpec(ModelSpec):
    """A bi-encoder teacher's settings (YAML, flags)."""

    kind: Literal["bi-encoder"]
    batch_size: int = 64
    max_length: int | None = None
    normalize: bool = True
    query_prompt: str = ""
    doc_prompt: str = ""
    model_prompts: bool = False
    """Use the model's own ``query`` / ``document`` prompts (EmbeddingGemma's ``task: search
    result | query: `` and ``title: none | text: ``) where ``query_prompt`` / ``doc_prompt``
    are empty; the texts used enter the identity."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype (auto: bfloat16 where the hardware has native bf16); recorded as used."""
    LATER: ClassVar[dict[str, Any]] = {"model_prompts": False, "dtype": "float32", "backend": "torch",
                                       "variant": "fp32"}


class BiEncoderFamily(ModelFamily):
    name = "bi-encoder"
    student_class = "SentenceTransformer"
    embed_once = True
    refine_default = "flat"  # a dense IVF-PQ index re-scores its candidates exactly unless told not to
    index_name = "dense"
    encoder_class = "DenseEncoder"
    faiss_file = "index.faiss"
    cache_vectors = cache_kind = "dense"
    teacher_spec = BiEncoderSpec

    def build_student(self, loc: str, kind: str | None, local: bool, max_length: int,
                      colbert_dim: int) -> Any:
        from sentence_transformers import SentenceTransformer

        from retrieval_kd.models.load import set_max_length
        from retrieval_kd.train.students import local_only

        model = SentenceTransformer(loc, **local_only(loc))
        set_max_length(model, max_length)
        return model

    def loss(self, name: str, model: Any, cfg: Any) -> Any:
        from sentence_transformers.sentence_transformer import losses as L

        scale = infonce_scale(cfg)
        pair, matrix = similarity(model)
        return {"margin-mse": lambda: L.MarginMSELoss(model, similarity_fct=pair),
                "kl": lambda: L.DistillKLDivLoss(model, similarity_fct=pair, temperature=cfg.temperature),
                "infonce": lambda: L.MultipleNegativesRankingLoss(model, similarity_fct=matrix, **scale)
                }[name]()

    def index_bytes(self, faiss_params: Any, encoded: int) -> int:
        from retrieval_kd.index.faiss_index import FaissParams, faiss_share, with_refine_default

        return int(encoded * faiss_share(with_refine_default(faiss_params or FaissParams(), self.refine_default)))

    def write_index(self, tmp: Path, store: Any, n: int, enc: Any, faiss_params: Any, engine: str,
                    plaid_params: Any, params: dict[str, Any], stats: dict[str, Any]) -> None:
        from retrieval_kd.index.build import write_faiss
        from retrieval_kd.index.faiss_index import FaissParams, with_refine_default

        fp = with_refine_default(faiss_params or FaissParams(), self.refine_default)  # IVF-PQ: refined unless refine: none
        index, fp = write_faiss(lambda: store.iter_arrays("emb"), n, enc.dim, fp, tmp / self.faiss_file)
        params["faiss"] = fp.model_dump()
        stats.update(dim=enc.dim, ntotal=int(index.ntotal))

    def open_index(self, searcher: Any, ov: dict[str, Any]) -> None:
        from retrieval_kd.index.build import DOC_IDS
        from retrieval_kd.index.faiss_index import prepare_search
        from retrieval_kd.index.files import expect_count

        cpu_index, fp = searcher.open_faiss(ov)
        expect_count(searcher.folder / DOC_IDS, len(searcher.doc_ids), int(cpu_index.ntotal), "document ids")
        searcher.index = prepare_search(cpu_index, fp)

    def search(self, searcher: Any, q: Any, k: int) -> tuple[Any, Any, dict[str, float]]:
        import numpy as np

        s, i = searcher.index.search(np.ascontiguousarray(q[None], dtype=np.float32),
                                     min(k, len(searcher.doc_ids)))
        keep = i[0] >= 0
        return i[0][keep], s[0][keep], {}

    def build_teacher(self, args: dict[str, Any], embedding_cache: str | Path | None) -> Any:
        from retrieval_kd.teachers.encoders import BiEncoderTeacher

        return BiEncoderTeacher(**args, embedding_cache=embedding_cache)

    def teacher_identity(self, out: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        """The prompt texts used (``model_prompts``); float32 (its default) left out when ``auto``
        resolved to it, as a spec without dtype."""
        if out.pop("model_prompts", False):
            own = _st_prompts(spec["model"])
            out["query_prompt"] = out.get("query_prompt") or own.get("query", "")
            out["doc_prompt"] = out.get("doc_prompt") or own.get("document", "")
        if spec.get("dtype") == "auto" and out.get("dtype") == "float32":
            del out["dtype"]
        return out
