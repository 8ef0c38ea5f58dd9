"""Students: a model of one of the families (:mod:`retrieval_kd.families`), initialised from a
short name, a Hugging Face id or a path.

A checkpoint already of the family's type (its ``config_sentence_transformers.json`` says so)
is loaded as it is. Any other folder (a plain Hugging Face model, or a Sentence Transformers
model of another type, e.g. the BERT-tiny body of ``splade-tiny`` for ColBERT) contributes its
transformer body, around which the family's model is built (each family module says how).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retrieval_kd.errors import NotFoundError, RkdError
from retrieval_kd.families import FAMILIES, all_families, get
from retrieval_kd.models.resolve import ModelRef, resolve_model, saved_model_type

FAMILY_CLASS = {f.name: f.student_class for f in all_families()}
"""Family -> the Sentence Transformers class its students are."""


def model_class(family: str) -> type:
    """The Sentence Transformers class of a family (a trained student loads with it directly)."""
    import sentence_transformers as st

    if family not in FAMILIES:
        raise RkdError(f"unknown student family '{family}' (known: {', '.join(FAMILIES)})")
    return getattr(st, get(family).student_class)


def transformer_body(folder: str | Path) -> str:
    """The folder holding the Hugging Face transformer (``config.json``) of a model folder."""
    folder = Path(folder)
    modules = folder / "modules.json"
    if modules.is_file():
        for entry in json.loads(modules.read_text(encoding="utf-8")):
            if "Transformer" in entry.get("type", "") and (folder / entry.get("path", "") / "config.json").is_file():
                return str(folder / entry.get("path", ""))
    if (folder / "config.json").is_file():
        return str(folder)
    raise NotFoundError(f"{folder}: no transformer inside (no config.json)")


def local_only(location: str) -> dict[str, Any]:
    """Loading keywords for ``location``: a local folder is never looked up on the hub."""
    return {"local_files_only": True} if Path(location).exists() else {}


def body_transformer(body: str, max_length: int, **kwargs: Any) -> Any:
    """Sentence Transformers' ``Transformer`` module over ``body`` (a folder: never the hub)."""
    from sentence_transformers.base.modules import Transformer

    return Transformer(body, max_seq_length=max_length, model_kwargs=local_only(body),
                       processor_kwargs=local_only(body), config_kwargs=local_only(body), **kwargs)


def build_student(family: str, init: str | ModelRef, *, max_length: int = 256, colbert_dim: int = 128,
                  seed: int | None = None) -> tuple[Any, ModelRef]:
    """A student of ``family`` initialised from ``init`` (a reference or an already resolved
    :class:`ModelRef`); returns the model and the resolved init."""
    import transformers

    model_class(family)  # validates the family
    ref = init if isinstance(init, ModelRef) else resolve_model(init)
    loc = ref.location
    local = Path(loc).exists()
    if seed is not None:
        transformers.set_seed(seed)  # new heads (ColBERT projection, CE classifier) start the same
    kind = saved_model_type(loc) if local else None
    try:
        model = get(family).build_student(loc, kind, local, max_length, colbert_dim)
    except (OSError, ValueError) as e:
        raise RkdError(f"cannot build a {family} student from '{ref.ref}' ({loc}): {e}") from None
    return model, ref


def load_student(family: str, path: str | Path):
    """Load a trained student with its plain Sentence Transformers class."""
    return model_class(family)(str(path), local_files_only=True)
