"""ColBERT: one vector per token (``MultiVectorEncoder``), late interaction (MaxSim).

=================  =====================================================================
student            ``MultiVectorEncoder`` (ST 6 multi-vector); a plain body becomes
                   Transformer + token Dense(``colbert_dim``) + ``MultiVectorMask`` +
                   token ``Normalize``; queries have their own length (``query_max_length``)
losses             ``margin-mse``: ``MultiVectorMarginMSELoss``, ``kl``:
                   ``MultiVectorDistillKLDivLoss``, ``infonce``:
                   ``MultiVectorMultipleNegativesRankingLoss``; ``embed`` (alone, ``embed_on:
                   corpus``): a teacher bi-encoder's token vectors of the corpus
                   (:mod:`retrieval_kd.train.token_embed`)
index              :class:`~retrieval_kd.index.encoders.TokenEncoder` float16 token vectors
                   + a FAISS token index (``candidates.faiss``); engine ``exact`` (MaxSim
                   over every candidate, :mod:`retrieval_kd.index.late`) or ``plaid``
                   (:mod:`retrieval_kd.index.plaid`)
embedding cache    none (token matrices are not cached)
teacher            none
=================  =====================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrieval_kd.families.base import ModelFamily, infonce_scale


class ColbertFamily(ModelFamily):
    name = "colbert"
    student_class = "MultiVectorEncoder"
    tokens_once = True
    separate_query_length = True
    index_name = "colbert"
    encoder_class = "TokenEncoder"
    token_embed = True
    index_build_keys = frozenset({"engine", "plaid"})
    faiss_file = "candidates.faiss"
    engines = True

    def around_body(self, body: str, max_length: int, colbert_dim: int) -> Any:
        from sentence_transformers import MultiVectorEncoder
        from sentence_transformers.base.modules import Dense, Normalize
        from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
        from torch import nn

        from retrieval_kd.train.students import body_transformer

        tf = body_transformer(body, max_length)
        proj = Dense(in_features=tf.get_embedding_dimension(), out_features=colbert_dim, bias=False,
                     activation_function=nn.Identity(), module_input_name="token_embeddings")
        return MultiVectorEncoder(modules=[tf, proj, MultiVectorMask(),
                                           Normalize(module_input_name="token_embeddings")])

    def loss(self, name: str, model: Any, cfg: Any) -> Any:
        from sentence_transformers.multi_vector_encoder import losses as L

        scale = infonce_scale(cfg)
        kd, pair, matrix = scoring(model)
        return {"margin-mse": lambda: L.MultiVectorMarginMSELoss(model, similarity_fct=pair),
                "kl": lambda: L.MultiVectorDistillKLDivLoss(model, similarity_fct=kd, temperature=cfg.temperature),
                "infonce": lambda: L.MultiVectorMultipleNegativesRankingLoss(model, similarity_fct=matrix, **scale)
                }[name]()

    def training_kwargs(self, cfg: Any) -> dict[str, Any]:
        if cfg.query_max_length:
            return {"max_length": {"query": cfg.query_max_length, "document": cfg.max_length}}
        return {}

    def index_bytes(self, faiss_params: Any, encoded: int) -> int:
        """The float16 token vectors, then a float32 FAISS index over them."""
        from retrieval_kd.index.faiss_index import FaissParams, faiss_share

        return int(encoded * (1 + 2 * faiss_share(faiss_params or FaissParams(index="ivfpq"))))

    def write_index(self, tmp: Path, store: Any, n: int, enc: Any, faiss_params: Any, engine: str,
                    plaid_params: Any, params: dict[str, Any], stats: dict[str, Any]) -> None:
        import numpy as np

        from retrieval_kd.index.build import write_faiss
        from retrieval_kd.index.chunks import concat_to_npy
        from retrieval_kd.index.faiss_index import FaissParams

        lens = np.concatenate(list(store.iter_arrays("lens", mmap=False))) if n else np.zeros(0, np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        np.save(tmp / "doc_offsets.npy", offsets)
        total = int(offsets[-1])
        concat_to_npy(store.iter_arrays("tokens"), tmp / "tokens.npy", total, enc.dim, np.float16)
        toks = [np.load(tmp / "tokens.npy", mmap_mode="r")]
        fp = faiss_params or FaissParams(index="ivfpq", nprobe=16,
                                         **({"pq_nbits": 4, "fast_scan": True} if engine == "plaid" else {}))
        if engine == "plaid":
            from retrieval_kd.index.plaid import PlaidParams, plaid_nlist, resolve_plaid

            if fp.nlist is None:
                fp = fp.model_copy(update={"nlist": plaid_nlist(total)})
            params["plaid"] = resolve_plaid(plaid_params or PlaidParams(), n).model_dump()
        _, fp = write_faiss(lambda: toks, total, enc.dim, fp, tmp / self.faiss_file)
        toks.clear()  # the memory map, released
        params["faiss"] = fp.model_dump()
        params["engine"] = engine
        stats.update(dim=enc.dim, n_tokens=total, avg_doc_tokens=total / max(n, 1))

    def open_index(self, searcher: Any, ov: dict[str, Any]) -> None:
        from retrieval_kd.index.faiss_index import prepare_search
        from retrieval_kd.index.late import LateIndex

        cpu_index, fp = searcher.open_faiss(ov)
        # the plaid engine drives the CPU IVF itself (coarse step in torch, preassigned lists)
        searcher.index = cpu_index if searcher.engine == "plaid" else prepare_search(cpu_index, fp)
        searcher.late = LateIndex(searcher.folder, searcher.index)
        if searcher.engine == "plaid":
            self._open_plaid(searcher, ov)
        else:
            searcher.k_token = int(ov.get("k_token", 32))
            searcher.search_params["k_token"] = searcher.k_token
        searcher.search_params["engine"] = searcher.engine

    @staticmethod
    def _open_plaid(searcher: Any, ov: dict[str, Any]) -> None:
        from retrieval_kd.index.plaid import SEARCH_KEYS, PlaidParams, PlaidSearch, resolve_plaid

        saved = searcher.manifest["params"].get("plaid") or {}
        plaid = resolve_plaid(PlaidParams(**saved), searcher.late.n_docs)  # an exact index searched as plaid
        plaid = plaid.model_copy(update={k: ov[k] for k in SEARCH_KEYS if k in ov})
        PlaidParams.model_validate(plaid.model_dump())  # the overrides, checked
        searcher.plaid = PlaidSearch(searcher.late.tokens, searcher.late.offsets, searcher.index,
                                     plaid.model_dump())
        searcher.search_params = {k: getattr(plaid, k) for k in SEARCH_KEYS}

    def search(self, searcher: Any, q: Any, k: int) -> tuple[Any, Any, dict[str, float]]:
        if searcher.engine == "plaid":
            docs, s, counts = searcher.plaid.search(q, k)
            return docs, s, {**counts, "query_tokens": len(q)}
        docs, s, ncand = searcher.late.search(q, k, searcher.k_token)
        return docs, s, {"candidates": ncand, "query_tokens": len(q)}


def scoring(model: Any) -> tuple[Callable, Callable, Callable]:
    """The model's MaxSim (or MeanMaxSim) as the losses' ``similarity_fct``: per candidate group
    (KL), pairwise (Margin-MSE), against every document (InfoNCE). Passed explicitly because since
    Sentence Transformers 6.3 ``None`` calls the model's methods, which a DDP wrapper hides."""
    from sentence_transformers.multi_vector_encoder import scoring as S

    if model.similarity_fn_name == "meanmaxsim":
        return S.mean_colbert_kd_scores, S.mean_colbert_scores_pairwise, S.mean_colbert_scores
    return S.colbert_kd_scores, S.colbert_scores_pairwise, S.colbert_scores
