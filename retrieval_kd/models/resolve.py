"""Turn a model reference (short name, Hugging Face id or path) into something loadable."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from retrieval_kd.artifacts import MANIFEST, read_json, sha256_file
from retrieval_kd.digests import check_files, recorded_files
from retrieval_kd.errors import IntegrityError, RkdError
from retrieval_kd.models.registry import model_registry

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: what to pass to ``from_pretrained`` plus its provenance."""

    ref: str
    """What the user wrote."""
    location: str
    """A local folder/file path, or a hub id."""
    hf_id: str | None
    sha256: str | None
    """sha256 of the weight file, when it is on disk."""
    weight_file: str | None = None

    def provenance(self) -> dict[str, str | None]:
        return {"ref": self.ref, "location": self.location, "hf_id": self.hf_id,
                "weight_file": self.weight_file, "sha256": self.sha256}


def _local_weight(folder: Path) -> Path | None:
    if folder.is_file():
        return folder
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    for sub in sorted(folder.glob("*.gguf")):
        return sub
    return None


def _checked_sha(path: Path, weight: Path) -> str:
    """The weight file's sha256. A trained model folder whose manifest records its files is
    checked first (sizes, each sha256 once: one error line naming a damaged file); the weights'
    sha256 then comes from the record instead of being hashed again."""
    if path.is_dir() and (path / MANIFEST).is_file():
        try:
            man = read_json(path / MANIFEST)
        except ValueError as e:
            raise IntegrityError(f"{path / MANIFEST}: not a readable manifest ({e})") from None
        rec = recorded_files(man) if isinstance(man, dict) and man.get("kind") == "train" else None
        rel = weight.relative_to(path).as_posix()
        if check_files(path, rec, "trained model", hint="train it again") and rel in rec:
            return rec[rel]["sha256"]
    return sha256_file(weight)


def registered_copy(hf_id: str, *, same_weights: bool = True):
    """The registry entry holding ``hf_id``'s model, if any. With ``same_weights`` only an entry
    whose weight file is byte for byte the hub's (not a conversion such as a quantised GGUF)."""
    for spec in model_registry().values():
        if spec.hf_id == hf_id and (spec.hub_weights or not same_weights):
            return spec
    return None


def resolve_model(ref: str, *, fetch_missing: bool = True) -> ModelRef:
    """Resolve ``ref``: a registered short name is fetched (and verified), ``static:<ref>`` is a
    static encoder derived from ``<ref>`` (:mod:`retrieval_kd.models.static`), a path is hashed,
    anything else is taken as a Hugging Face hub id (hashed if already in the local HF cache).
    A hub id that is not in the HF cache but is a registered model's own weights (e.g.
    sentence-transformers/all-MiniLM-L6-v2) resolves to the registered, verified copy."""
    reg = model_registry()
    if ref in reg:
        return _registered(reg[ref], ref, fetch_missing)
    from retrieval_kd.models.static import is_static_ref, resolve_static

    if is_static_ref(ref):
        return resolve_static(ref, fetch_missing)
    path = Path(ref).expanduser()
    if path.exists():
        w = _local_weight(path)
        return ModelRef(ref, str(path.resolve()), None, _checked_sha(path, w) if w else None,
                        w.name if w else None)
    sha = None
    try:
        from huggingface_hub import try_to_load_from_cache

        for name in WEIGHT_FILES:
            hit = try_to_load_from_cache(ref, name)
            if isinstance(hit, str):
                sha = sha256_file(hit)
                break
    except Exception:  # no cache, malformed id: provenance stays unknown
        pass
    copy = registered_copy(ref) if sha is None else None
    if copy is not None:
        return _registered(copy, ref, fetch_missing)
    return ModelRef(ref, ref, ref, sha, None)


def _registered(spec, ref: str, fetch_missing: bool) -> ModelRef:
    from retrieval_kd.models.fetch import check_cached, fetch, model_dir

    folder = fetch(spec.name) if fetch_missing else model_dir(spec)  # fetch checks every file
    sha = spec.sha256 if fetch_missing else check_cached(spec, folder)
    loc = folder / spec.weight_file if spec.family == "causal-lm" else folder
    return ModelRef(ref, str(loc), spec.hf_id, sha, spec.weight_file)


def saved_model_type(folder: str | Path) -> str | None:
    """``SentenceTransformer`` / ``SparseEncoder`` / ... for a saved ST folder, None for anything else."""
    folder = Path(folder)
    if not (folder / "modules.json").is_file():
        return None
    cfg = folder / "config_sentence_transformers.json"
    if cfg.is_file():
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type", "SentenceTransformer")
    return "SentenceTransformer"


def require_model_type(ref: ModelRef, expected: str, use: str) -> None:
    """A saved sentence-transformers folder of another class (a SPLADE model given where a dense
    one is needed, say) is an error instead of a silently wrong model; plain Hugging Face folders
    and hub ids pass (sentence-transformers wraps them)."""
    kind = saved_model_type(ref.location) if Path(ref.location).is_dir() else None
    if kind is not None and kind != expected:
        raise RkdError(f"{ref.ref}: a saved {kind}, but {use} needs a {expected}")
