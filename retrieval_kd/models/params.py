"""Parameter counts read from safetensors headers: no weights are loaded."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

_FLOAT = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
"""Parameters are floating point; integer tensors are buffers (BERT's saved ``position_ids``)."""


def _header_count(path: Path) -> int:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return sum(math.prod(t["shape"]) for k, t in header.items()
               if k != "__metadata__" and t["dtype"] in _FLOAT)


def count_parameters(folder: str | Path) -> int | None:
    """The number of parameters (sum of tensor sizes) over a model folder's ``*.safetensors``
    files, sub-module folders included (a sentence-transformers Dense head); hidden folders and
    trainer checkpoints are left out. None when there is no safetensors file."""
    folder = Path(folder)
    if folder.is_file():
        files = [folder] if folder.suffix == ".safetensors" else []
    else:
        files = [f for f in sorted(folder.rglob("*.safetensors"))
                 if not any(p.startswith((".", "checkpoint-")) for p in f.relative_to(folder).parts)]
    return sum(_header_count(f) for f in files) if files else None


def _local_folder(ref: str) -> Path | None:
    """A model reference's folder on disk, never downloading: a path, a registered model's
    copy, or a hub id's snapshot in the Hugging Face cache."""
    from retrieval_kd.models.registry import model_registry

    path = Path(ref).expanduser()
    if path.exists():
        return path
    reg = model_registry()
    if ref in reg:
        from retrieval_kd.models.fetch import model_dir

        return model_dir(reg[ref]) if model_dir(reg[ref]).is_dir() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(ref, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id is simply not cached
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def model_parameters(ref: str) -> int | None:
    """Parameters of a model reference; None when it is not on disk or has no safetensors."""
    folder = _local_folder(ref)
    return count_parameters(folder) if folder else None


def teacher_parameters(spec: dict[str, Any]) -> int | None:
    """A teacher spec's parameters: the sum over an ensemble's members, BM25 counting 0; None
    when one is unknown (a model behind a server, a GGUF file)."""
    if spec.get("kind") == "ensemble":
        counts = [teacher_parameters(m["teacher"]) for m in spec.get("members", [])]
        return None if None in counts else sum(counts)  # type: ignore[arg-type]
    if spec.get("kind") == "bm25":
        return 0
    if spec.get("kind") == "crossfit":  # each query meets one fold model
        return teacher_parameters(spec["folds"][0]) if spec.get("folds") else None
    if spec.get("kind") == "llm" and spec.get("backend") == "openai":
        return None
    return model_parameters(spec["model"]) if spec.get("model") else None
