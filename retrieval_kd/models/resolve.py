"""Turn a model reference (short name, Hugging Face id or path) into something loadable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retrieval_kd.artifacts import sha256_file
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


def resolve_model(ref: str, *, fetch_missing: bool = True) -> ModelRef:
    """Resolve ``ref``: a registered short name is fetched (and verified), a path is hashed,
    anything else is taken as a Hugging Face hub id (hashed if already in the local HF cache)."""
    reg = model_registry()
    if ref in reg:
        from retrieval_kd.models.fetch import fetch, model_dir, verify

        spec = reg[ref]
        folder = fetch(ref) if fetch_missing else model_dir(spec)
        sha = verify(spec, folder)
        loc = folder / spec.weight_file if spec.family == "causal-lm" else folder
        return ModelRef(ref, str(loc), spec.hf_id, sha, spec.weight_file)
    path = Path(ref).expanduser()
    if path.exists():
        w = _local_weight(path)
        return ModelRef(ref, str(path.resolve()), None, sha256_file(w) if w else None,
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
    return ModelRef(ref, ref, ref, sha, None)
