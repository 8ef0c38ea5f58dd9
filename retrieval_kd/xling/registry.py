"""Registry hook: ``load_dataset("xquad-r:de-en")`` and ``load_dataset("msmarco-ko:ko-en", "dev")``.

:mod:`retrieval_kd.data.registry` calls :func:`load_registered` for the formats listed in
:data:`FORMATS` with the part of the name after the colon (the variant).
"""

from __future__ import annotations

from pathlib import Path

from retrieval_kd.data.types import Dataset
from retrieval_kd.errors import NotFoundError
from retrieval_kd.xling import msmarco_ko, xquad_r

FORMATS = ("xquad-r", "msmarco-ko")
VARIANTS = {
    "xquad-r": f"<q>-<p> (paragraphs; <q>-<p>+pool adds the pool's paragraphs in <q> as queries "
               f"without qrels, for training) or lareqa-<q> (sentence pool), q, p in "
               f"{' '.join(xquad_r.XQUAD_R_LANGS)}",
    "msmarco-ko": ", ".join(msmarco_ko.DIRECTIONS),
}


def load_registered(root: Path, fmt: str, variant: str | None, split: str, name: str) -> Dataset:
    """Load registered dataset ``name`` (format ``fmt``) from its local folder ``root``."""
    if not variant:
        raise NotFoundError(f"dataset '{name}' needs a variant: '{name}:<variant>' with <variant> one of "
                            f"{VARIANTS[fmt]}")
    full = f"{name}:{variant}"
    parts = variant.split("-")
    if fmt == "xquad-r":
        if len(parts) == 2 and parts[0] == "lareqa":
            if split != "test":
                raise NotFoundError(f"dataset '{full}' has only the split 'test' (train/heldout are "
                                    "for paragraph retrieval <q>-<p>)")
            return xquad_r.load_lareqa(parts[1], root=root, name=full)
        pool = len(parts) == 2 and parts[1].endswith(xquad_r.POOL_SUFFIX)
        if pool:
            parts[1] = parts[1].removesuffix(xquad_r.POOL_SUFFIX)
        if len(parts) == 2:
            return xquad_r.load_xquad_r(parts[0], parts[1], root=root, name=full, split=split, pool_queries=pool)
    elif fmt == "msmarco-ko":
        if variant in msmarco_ko.DIRECTIONS:
            return msmarco_ko.load_msmarco_ko(parts[0], parts[1], root=root, name=full)
    else:
        raise NotFoundError(f"no cross-lingual loader for format '{fmt}'")
    raise NotFoundError(f"dataset '{name}' has no variant '{variant}' (variants: {VARIANTS[fmt]})")
