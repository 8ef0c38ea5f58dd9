"""A teacher's identity from its spec, without loading the model.

Only what changes scores goes in: model weights' sha256 (or the hub id where no weights are
on disk), template, max length, dtype, normalisation, weights. Runtime knobs (batch size,
threads, device, server URL) are left out, so they never split one store into two.
"""

from __future__ import annotations

from typing import Any

from retrieval_kd.models.resolve import resolve_model

RUNTIME_KEYS = frozenset({"batch_size", "threads", "device", "base_url", "concurrency", "timeout",
                          "token_budget", "backend_options", "api_key_env"})


def _model_identity(ref_text: str) -> dict[str, Any]:
    ref = resolve_model(ref_text)
    if ref.sha256:
        return {"hf_id": ref.hf_id, "weight_file": ref.weight_file, "sha256": ref.sha256}
    return {"hf_id": ref.hf_id or ref.ref, "sha256": None}


def _default_template() -> str:
    from retrieval_kd.teachers.llm import DEFAULT_TEMPLATE

    return DEFAULT_TEMPLATE


def identity_of(spec_dump: dict[str, Any]) -> dict[str, Any]:
    """Identity of a dumped teacher spec (``spec.model_dump()``)."""
    kind = spec_dump["kind"]
    if kind == "ensemble":
        return {"kind": kind, "normalization": spec_dump["normalization"],
                "members": [{"weight": m["weight"], "teacher": identity_of(m["teacher"])}
                            for m in spec_dump["members"]]}
    out = {k: v for k, v in spec_dump.items() if k not in RUNTIME_KEYS}
    if kind == "llm":
        out["template"] = out.get("template") or _default_template()
        if out.get("backend") == "openai":
            return out  # the served model's name is all we can know
        out.pop("top_logprobs", None)  # only the HTTP backend reads it
    if "model" in out:
        out["model"] = _model_identity(out["model"])
    if out.get("dtype") == "auto":  # the precision that will actually run on this machine
        from retrieval_kd.teachers.torch_utils import resolve_dtype

        out["dtype"] = resolve_dtype("auto", spec_dump.get("device"))
    return out


def spec_identity(spec) -> dict[str, Any]:
    return identity_of(spec.model_dump())
