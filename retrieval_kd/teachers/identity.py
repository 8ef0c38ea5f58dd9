"""A teacher's identity from its spec, without loading the model.

Only what changes scores goes in: model weights' sha256 (or the hub id where no weights are
on disk), template, max length, dtype, normalisation, weights, and an inference backend other
than torch fp32 (its variant as it runs here: ``int8`` becomes ``int8-<isa>``). Runtime knobs (batch size,
threads, device, server URL) are left out, so they never split one store into two.
"""

from __future__ import annotations

from typing import Any

from retrieval_kd.families import teacher_family
from retrieval_kd.models.resolve import resolve_model

RUNTIME_KEYS = frozenset({"batch_size", "threads", "device", "base_url", "concurrency", "timeout",
                          "token_budget", "backend_options", "api_key_env", "n_ctx"})


def _model_identity(ref_text: str) -> dict[str, Any]:
    ref = resolve_model(ref_text)
    if ref.sha256:
        return {"hf_id": ref.hf_id, "weight_file": ref.weight_file, "sha256": ref.sha256}
    return {"hf_id": ref.hf_id or ref.ref, "sha256": None}


def _llm_prompt(out: dict[str, Any]) -> None:
    """The prompt text an LLM spec runs with (its template, else its task's), in place of its task."""
    from retrieval_kd.teachers.prompts import (
        LISTWISE_SYSTEM,
        listwise_max_new_tokens,
        listwise_template,
        pointwise_template,
    )

    task = out.pop("task", None)
    if out["kind"] == "llm-listwise":
        out["template"] = out.get("template") or listwise_template(task)
        out["system"] = LISTWISE_SYSTEM
        out["max_new_tokens"] = out.get("max_new_tokens") or listwise_max_new_tokens(out["window"])
    else:
        out["template"] = out.get("template") or pointwise_template(task)


def identity_of(spec_dump: dict[str, Any]) -> dict[str, Any]:
    """Identity of a dumped teacher spec (``spec.model_dump()``)."""
    kind = spec_dump["kind"]
    if kind == "ensemble":
        return {"kind": kind, "normalization": spec_dump["normalization"],
                "members": [{"weight": m["weight"], "teacher": identity_of(m["teacher"])}
                            for m in spec_dump["members"]]}
    if kind == "crossfit":  # each fold model's own identity (weights' sha256): never a full model's id
        from retrieval_kd.teachers.crossfit import FOLD_OF

        return {"kind": kind, "k": len(spec_dump["folds"]), "fold_of": FOLD_OF,
                "folds": [identity_of(f) for f in spec_dump["folds"]]}
    out = {k: v for k, v in spec_dump.items() if k not in RUNTIME_KEYS}
    if kind in ("llm", "llm-listwise"):
        _llm_prompt(out)
        if out.get("backend") == "openai":
            return out  # the served model's name is all we can know
        out.pop("top_logprobs", None)  # only the HTTP backend reads it
        if out.get("backend") == "llama.cpp":
            out.pop("dtype", None)  # the GGUF's quantised weights run as they are
    if "model" in out:
        out["model"] = _model_identity(out["model"])
    on_torch = out.get("backend", "torch") == "torch"
    if out.get("dtype") == "auto":  # the precision that will actually run on this machine
        from retrieval_kd.teachers.torch_utils import resolve_dtype

        out["dtype"] = resolve_dtype("auto", spec_dump.get("device")) if on_torch else "float32"
    family = teacher_family(kind)
    if family is not None:  # its own rules (a bi-encoder's prompts and default dtype)
        out = family.teacher_identity(out, spec_dump)
    if kind not in ("llm", "llm-listwise") and ("backend" in out or "variant" in out):  # absent at torch fp32 (dump left them out)
        from retrieval_kd.models.backends import backend_identity

        out.update(backend_identity(out.pop("backend", None), out.pop("variant", None)))
    return out


def spec_identity(spec) -> dict[str, Any]:
    return identity_of(spec.model_dump())
