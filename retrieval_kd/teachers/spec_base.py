"""The base classes of teacher specs: dumps that keep older store ids and stage keys, and the
inference backend of a teacher that runs a model of a family (:mod:`retrieval_kd.families`)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, model_serializer, model_validator

from retrieval_kd.errors import RkdError
from retrieval_kd.models.backends import Backend, Variant


class Spec(BaseModel):
    """A teacher spec. Fields named in ``LATER`` were added after stores and stages had been
    keyed by the spec's dump: at their default they are left out of every dump, so adding them
    changed no existing store id or stage key."""

    model_config = ConfigDict(extra="forbid")
    LATER: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _drop_later_defaults(self, handler):
        out = handler(self)
        for k, default in self.LATER.items():
            if k in out and out[k] == default:
                del out[k]
        return out


class BackendSpec(Spec):
    """A neural teacher's inference backend (retrieval_kd/models/backends.py): ``torch`` (the
    weights as loaded, ``dtype`` applies), ``onnx`` (``variant`` fp32, O1-O3 or int8) or
    ``openvino``. Part of the identity when not ``torch`` / ``fp32`` (left out of dumps at the
    default, so older specs keep their store ids and stage keys)."""

    backend: Backend | Literal["auto"] = "auto"
    variant: Variant | Literal["auto"] = "auto"
    """``auto`` (the default): this machine's preferred backend (models/backends.py
    ``preferred``), resolved when the spec is built; torch where ``dtype`` asks for bf16/fp16."""
    LATER: ClassVar[dict[str, Any]] = {"backend": "torch", "variant": "fp32"}

    @model_validator(mode="after")
    def _runnable(self):
        from retrieval_kd.models.backends import check, resolve_auto

        self.backend, self.variant = resolve_auto(self.backend, self.variant, dtype=getattr(self, "dtype", None),
                                                  device=getattr(self, "device", None))
        try:
            check(self.backend, self.variant, dtype=getattr(self, "dtype", None))
        except RkdError as e:
            raise ValueError(str(e)) from None
        return self


class ModelSpec(BackendSpec):
    """A teacher that runs one model of a family: the model, and where it runs."""

    model: str
    """Registered short name, Hugging Face id or local folder."""
    threads: int | None = None
    device: str | None = None
