"""Token lengths: one name each, in every family's params.

* ``max_length``: a document's (passage's) tokens; for a cross-encoder, the pair's.
* ``query_max_length``: a query's tokens, where a family has a separate query length (ColBERT).

The training config and teacher specs always used these. The index and retrieval encoder params
used other names, still accepted as old names of the same fields: ``max_seq_length`` (dense and
SPLADE, after sentence-transformers' attribute) and ``document_length`` / ``query_length``
(ColBERT, after its modules' attributes). Those params keep being dumped under the old names:
index manifests, embedding-cache and chunk identities and pipeline stage keys hash the dumps, so
params written either way dump, and key, exactly as before the rename.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo

MAX_LENGTH, QUERY_MAX_LENGTH = "max_length", "query_max_length"


def renamed(name: str, old: str, default: Any = None, **kw: Any) -> Any:
    """A field called ``name``, still read under ``old`` and dumped under ``old`` (so identities
    and keys hashed from dumps made before the rename stand)."""
    return Field(default, validation_alias=AliasChoices(name, old), serialization_alias=old, **kw)


def old_names(name: str, info: FieldInfo) -> list[str]:
    """A field's other accepted names (its ``validation_alias`` choices but its own name)."""
    alias = info.validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias] if isinstance(alias, str) else []
    return [c for c in choices if isinstance(c, str) and c != name]


class OneName(BaseModel):
    """Params with renamed fields (:func:`renamed`): a field's new and old name both given is an
    error, and dumps use the old name (``serialize_by_alias``)."""

    model_config = ConfigDict(serialize_by_alias=True, use_attribute_docstrings=True)  # docstrings: --help

    @model_validator(mode="before")
    @classmethod
    def _one_name_each(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, info in cls.model_fields.items():
                given = [n for n in (name, *old_names(name, info)) if n in data]
                if len(given) > 1:
                    raise ValueError(f"give {name} or its old name {given[1]}, not both")
        return data


def accepted_names(model: type[BaseModel]) -> set[str]:
    """Every name ``model`` reads a field under: field names and their old names."""
    return {n for name, info in model.model_fields.items() for n in (name, *old_names(name, info))}


def dumped_names(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (params given under any accepted names) with each key as ``model`` dumps it (a
    renamed field's old name), values untouched: the form stage keys hash, whichever name a file
    used. Keys that are not ``model``'s pass through."""
    to_dump = {n: (info.serialization_alias or name) for name, info in model.model_fields.items()
               for n in (name, *old_names(name, info))}
    return {to_dump.get(k, k): v for k, v in data.items()}
