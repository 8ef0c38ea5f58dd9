"""What a model family is: the parts every family module fills in (student, losses, index, teacher).

A part a family lacks keeps the default here: a cross-encoder has no index, ColBERT serves as no
teacher. Family modules import their heavy libraries inside methods, so the registry is cheap to
import from anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from retrieval_kd.errors import RkdError


def infonce_scale(cfg: Any) -> dict[str, float]:
    """The InfoNCE ``scale`` keyword a config sets (none: the library's per-family default)."""
    return {"scale": cfg.infonce_scale} if cfg.infonce_scale else {}


class ModelFamily:
    """One model family; the registry (:mod:`retrieval_kd.families`) holds one instance of each."""

    name: ClassVar[str]
    """The family's name in configs, pipelines and manifests."""
    student_class: ClassVar[str]
    """The Sentence Transformers class a student is built as (a trained one loads with it)."""
    embed_once: ClassVar[bool] = False
    """Several weighted losses embed the columns once (``compute_loss_from_embeddings``)."""
    tokens_once: ClassVar[bool] = False
    """Several weighted multi-vector losses encode the query and document columns once
    (:mod:`retrieval_kd.train.multivector_once`)."""
    every_parameter_used: ClassVar[bool] = False
    """Its losses run the model once per passage column (several DDP forwards before one backward)
    on a model that uses all its parameters. DDP must not look for unused parameters then: with the
    search on it fails ("mark a variable ready only once"), and a static graph gets wrong gradients.
    The other families keep the search (their transformer's pooler is unused)."""
    refine_default: ClassVar[str | None] = None
    """An IVF-PQ index's ``refine`` when its params leave it unset (the dense index's: ``flat``;
    :func:`retrieval_kd.index.faiss_index.with_refine_default`); part of a pipeline index's key."""
    token_embed: ClassVar[bool] = False
    """Its ``embed`` loss works per token, on the corpus alone (``embed_on: corpus``; the teacher's
    token vectors, :mod:`retrieval_kd.train.token_embed`)."""
    separate_query_length: ClassVar[bool] = False
    """Queries have their own token length (``query_max_length``)."""

    index_name: ClassVar[str | None] = None
    """Its index in ``rkd index``, index and search manifests; None: not indexable (a reranker)."""
    encoder_class: ClassVar[str | None] = None
    """Its index encoder, a class in :mod:`retrieval_kd.index.encoders` (its ``params_class``: the
    encoder's params)."""
    index_build_keys: ClassVar[frozenset[str]] = frozenset()
    """Index-entry params of this family's build beyond ``chunk_size`` / ``title_sep``."""
    faiss_file: ClassVar[str | None] = None
    """The FAISS index file of its index (None: no FAISS index)."""
    engines: ClassVar[bool] = False
    """Its index takes a search engine (``exact`` | ``plaid``)."""

    cache_vectors: ClassVar[str | None] = None
    """Its document vectors' name in the embedding cache identity (None: not cached)."""
    cache_kind: ClassVar[str | None] = None
    """Their storage in the embedding cache (``dense`` rows or ``sparse`` CSR)."""
    teacher_spec: ClassVar[type | None] = None
    """The teacher spec of its models (``kind``: the family's name); None: no teacher."""

    def __repr__(self) -> str:
        return f"<family {self.name}>"

    @property
    def trainer_class(self) -> str:
        """Its Sentence Transformers trainer (class name): the student class's."""
        return f"{self.student_class}Trainer"

    @property
    def training_args_class(self) -> str:
        """The trainer's ``*TrainingArguments`` (class name)."""
        return f"{self.student_class}TrainingArguments"

    @property
    def indexable(self) -> bool:
        return self.index_name is not None

    @property
    def index_kind(self) -> str:
        """The ``kind`` of its index manifests."""
        return f"index.{self.index_name}"

    # -- student ---------------------------------------------------------------------------------
    def build_student(self, loc: str, kind: str | None, local: bool, max_length: int,
                      colbert_dim: int) -> Any:
        """The student from the model at ``loc`` (``kind``: its saved Sentence Transformers type):
        loaded as it is when saved as :attr:`student_class`, else built around its transformer
        body (:meth:`around_body`)."""
        import sentence_transformers as st

        from retrieval_kd.models.load import set_max_length
        from retrieval_kd.train.students import local_only, transformer_body

        if kind == self.student_class:
            model = getattr(st, self.student_class)(loc, **local_only(loc))
        else:
            model = self.around_body(transformer_body(loc) if local else loc, max_length, colbert_dim)
        set_max_length(model, max_length)
        return model

    def around_body(self, body: str, max_length: int, colbert_dim: int) -> Any:
        """A new student around the transformer in ``body`` (a folder or a hub id)."""
        raise NotImplementedError

    def loss(self, name: str, model: Any, cfg: Any) -> Any:
        """The Sentence Transformers loss ``name`` (margin-mse | kl | infonce) for ``model``."""
        raise NotImplementedError

    def wrap_loss(self, loss: Any, model: Any, cfg: Any) -> Any:
        """The training loss around the (weighted) distillation loss."""
        return loss

    def training_kwargs(self, cfg: Any) -> dict[str, Any]:
        """Extra ``*TrainingArguments`` of this family."""
        return {}

    # -- index -------------------------------------------------------------------------------------
    def _no_index(self) -> RkdError:
        return RkdError(f"a {self.name} is not indexable; score it as a reranker")

    def _encoder(self) -> type:
        from retrieval_kd.index import encoders

        if self.encoder_class is None:
            raise self._no_index()
        return getattr(encoders, self.encoder_class)

    @property
    def encoder_params(self) -> type:
        """The pydantic params of its index encoder."""
        return self._encoder().params_class

    def index_encoder(self, model: Any, params: Any = None, embedding_cache: str | Path | None = None) -> Any:
        """Its index encoder of ``model`` (with the embedding cache where its vectors are cached)."""
        cls = self._encoder()
        return cls(model, params, embedding_cache) if self.cache_vectors else cls(model, params)

    def index_bytes(self, faiss_params: Any, encoded: int) -> int:
        """Rough bytes its index takes, from the bytes of the encoded chunks."""
        raise self._no_index()

    def write_index(self, tmp: Path, store: Any, n: int, enc: Any, faiss_params: Any, engine: str,
                    plaid_params: Any, params: dict[str, Any], stats: dict[str, Any]) -> None:
        """Assemble the index files in ``tmp`` from the encoded chunks in ``store``; record its
        parameters and figures in ``params`` / ``stats``."""
        raise self._no_index()

    def open_index(self, searcher: Any, ov: dict[str, Any]) -> None:
        """Open the index files of a :class:`~retrieval_kd.index.search.Searcher` (``ov``: overrides)."""
        raise self._no_index()

    def search(self, searcher: Any, q: Any, k: int) -> tuple[Any, Any, dict[str, float]]:
        """One query's (document numbers, scores, figures)."""
        raise self._no_index()

    def search_stats(self, searcher: Any, reps: list[Any]) -> dict[str, Any]:
        """Figures of a whole search beyond latency (the queries' representations ``reps``)."""
        return {}

    # -- embedding cache -------------------------------------------------------------------------
    def doc_cache(self, root: str | Path | None, ref: Any, max_length: int | None, backend: dict[str, str],
                  **settings: Any) -> Any:
        """The embedding cache of its document vectors under ``root`` (None: no cache)."""
        from retrieval_kd.embcache import doc_identity, open_cache

        if self.cache_vectors is None:
            raise RkdError(f"{self.name} document vectors are not cached")
        return open_cache(root, doc_identity(self.cache_vectors, ref, max_length, backend, **settings),
                          self.cache_kind)

    # -- teacher ---------------------------------------------------------------------------------
    def build_teacher(self, args: dict[str, Any], embedding_cache: str | Path | None) -> Any:
        """The teacher of a spec of this kind (``args``: the spec's fields but ``kind``)."""
        raise RkdError(f"a {self.name} does not serve as a teacher")

    def teacher_identity(self, out: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        """Family rules on a teacher identity (``spec``: the dumped spec it is made from)."""
        return out
