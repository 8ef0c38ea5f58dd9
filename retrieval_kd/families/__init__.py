"""The model families, one module each: how a family is built and trained as a student, indexed,
searched, cached and used as a teacher. Everything else asks the family object (:func:`get`)
instead of branching on its name.

============  =====================  ==============  ==========
family        module                 index           teacher
============  =====================  ==============  ==========
bi-encoder    :mod:`.bi_encoder`     ``dense``       yes
splade        :mod:`.splade`         ``splade``      yes
colbert       :mod:`.colbert`        ``colbert``     no
cross-encoder :mod:`.cross_encoder`  none            yes
============  =====================  ==============  ==========

A family's index name is also accepted for the family (``dense`` for bi-encoder), as index
manifests, ``rkd index`` and ``rkd search`` name it.
"""

from __future__ import annotations

from typing import Literal, get_args

from retrieval_kd.errors import RkdError
from retrieval_kd.families.base import ModelFamily
from retrieval_kd.families.bi_encoder import BiEncoderFamily
from retrieval_kd.families.colbert import ColbertFamily
from retrieval_kd.families.cross_encoder import CrossEncoderFamily
from retrieval_kd.families.splade import SpladeFamily

Family = Literal["bi-encoder", "splade", "colbert", "cross-encoder"]
"""A family's name (pydantic fields validate against it)."""
FAMILIES: tuple[str, ...] = get_args(Family)

BI_ENCODER, SPLADE = BiEncoderFamily(), SpladeFamily()
COLBERT, CROSS_ENCODER = ColbertFamily(), CrossEncoderFamily()
_ALL: dict[str, ModelFamily] = {f.name: f for f in (BI_ENCODER, SPLADE, COLBERT, CROSS_ENCODER)}
assert tuple(_ALL) == FAMILIES, "Family lists the registered families, in order"
_BY_INDEX: dict[str, ModelFamily] = {f.index_name: f for f in _ALL.values() if f.index_name}
_TEACHERS = tuple(f for f in (CROSS_ENCODER, BI_ENCODER, SPLADE) if f.teacher_spec)  # as specs list them
TEACHER_KINDS: tuple[str, ...] = tuple(f.name for f in _TEACHERS)
"""The teacher spec kinds that are families (whose models run on an inference backend)."""


def get(name: str) -> ModelFamily:
    """The family named ``name``, or whose index is named ``name`` (``dense``: bi-encoder)."""
    fam = _ALL.get(name) or _BY_INDEX.get(name)
    if fam is None:
        raise RkdError(f"unknown model family '{name}' (known: {', '.join(FAMILIES)})")
    return fam


def all_families() -> tuple[ModelFamily, ...]:
    return tuple(_ALL.values())


def index_kinds() -> tuple[str, ...]:
    """The ``kind`` of every index manifest (``index.<index name>``)."""
    return tuple(f.index_kind for f in _BY_INDEX.values())


def teacher_specs() -> tuple[type, ...]:
    """The families' teacher spec classes, in :data:`TEACHER_KINDS` order."""
    return tuple(f.teacher_spec for f in _TEACHERS)


def teacher_family(kind: str) -> ModelFamily | None:
    """The family a teacher spec of ``kind`` runs a model of (None: bm25, llm, ensemble, ...)."""
    return _ALL[kind] if kind in TEACHER_KINDS else None


__all__ = ["BI_ENCODER", "COLBERT", "CROSS_ENCODER", "FAMILIES", "SPLADE", "TEACHER_KINDS", "Family",
           "ModelFamily", "all_families", "get", "index_kinds", "teacher_family", "teacher_specs"]
