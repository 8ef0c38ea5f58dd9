"""Inference backends for every encoder and scorer: PyTorch, ONNX Runtime or OpenVINO.

A backend is a pair ``(backend, variant)``. Left at ``auto`` (every params' and spec's default)
it is :func:`preferred`: OpenVINO bf16 on a CPU with native bfloat16 kernels (AVX512-BF16, AMX)
when ``openvino`` is installed and no CUDA GPU is visible, else torch fp32 (the rule and its
SciFact evidence: eval/results/backend-default/). The pairs:

* ``torch`` / ``fp32``: the sentence-transformers model as loaded (today's path; its dtype
  option still applies).
* ``onnx`` / ``fp32``: the model's transformer exported to ONNX, run by ONNX Runtime.
* ``onnx`` / ``O1`` ``O2`` ``O3``: that export optimised by ONNX Runtime's transformer optimizer,
  the levels of sentence-transformers' ``export_optimized_onnx_model`` (Optimum's
  ``AutoOptimizationConfig``): O1 basic graph rewrites, O2 plus fused attention / layer-norm /
  GELU kernels, O3 plus the GELU approximation. O4 is fp16 and GPU-only: refused on CPU.
* ``onnx`` / ``int8``: dynamic int8 quantisation of the export, configured as
  sentence-transformers' ``export_dynamic_quantized_onnx_model`` with Optimum's
  ``AutoQuantizationConfig`` for this CPU (``avx512_vnni``, ``avx512``, ``avx2`` or ``arm64``,
  from its flags); ``int8-avx2`` etc. pick one. The one that ran is recorded (``int8-avx2``).
* ``openvino`` / ``fp32``: OpenVINO running the same ONNX export (needs ``openvino``).
* ``openvino`` / ``bf16``: the same export with OpenVINO's bfloat16 inference precision (fast on
  CPUs with AVX512-BF16 or AMX; elsewhere OpenVINO emulates it or falls back to fp32).

Why not ``SentenceTransformer(..., backend="onnx")`` itself: it loads through ``optimum-onnx``,
whose releases (<= 0.1.0) require transformers < 4.58 while sentence-transformers 6 needs
transformers >= 5 (pip cannot install both, and forcing it fails on import); likewise
``optimum-intel`` requires transformers < 5.6. So the same recipe runs here directly on
``torch.onnx.export`` and onnxruntime's own optimizer and quantizer (what Optimum wraps): the
model is loaded by sentence-transformers as usual and only its ``Transformer`` module's
Hugging Face model is swapped for an ONNX Runtime session (:func:`ort_model_class`), so
tokenisation, pooling, Dense layers, SPLADE pooling, normalisation and prompts stay the
library's own.

Exports are cached under ``$RKD_CACHE/exports/``, keyed by the source weights' sha256 (and its
``config.json``), the task, the backend and the variant: never inside an output, never exported
twice. Each export is built in a temporary folder renamed into place, with a record of every
file's size and sha256 that is checked on each load (:mod:`retrieval_kd.digests`); a damaged
export is rebuilt. A backend other than ``torch fp32`` is part of the teacher's or the index's
identity (scores differ, so stores and indexes differ); at the default nothing is added, so
existing store ids, stage keys and index fingerprints are unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, PrivateAttr, model_serializer, model_validator

from retrieval_kd import cpu
from retrieval_kd.errors import IntegrityError, RkdError

Backend = Literal["torch", "onnx", "openvino"]
Variant = Literal["fp32", "bf16", "O1", "O2", "O3", "O4", "int8", "int8-arm64", "int8-avx2", "int8-avx512",
                  "int8-avx512_vnni"]
BACKENDS: tuple[str, ...] = Backend.__args__
VARIANTS: tuple[str, ...] = Variant.__args__
DEFAULT = ("torch", "fp32")
INT8_ISAS = ("arm64", "avx2", "avx512", "avx512_vnni")
OPT_LEVELS = ("O1", "O2", "O3", "O4")

EXPORT_VERSION = 1
"""Bumped when the export recipe changes: older cached exports are then not reused."""
EXPORTS = "exports"
RECORD = ".rkd-export.json"
ONNX_FILE = "model.onnx"
OPSET = 17

_ORT_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert",
                    "electra": "bert", "mpnet": "bert", "camembert": "bert", "albert": "bert",
                    "deberta-v2": "bert", "modernbert": "bert"}
"""Hugging Face model types onnxruntime's transformer optimizer fuses as BERT (Optimum's table)."""

export_calls = 0
"""How many exports (of any variant) this process has built: tests check the cache with it."""


# -- names, validation, identity ---------------------------------------------------------------
def check(backend: str, variant: str, *, dtype: str | None = None, what: str = "") -> None:
    """Refuse a combination that cannot run (one clear line naming ``what``)."""
    where = f"{what}: " if what else ""
    if backend not in BACKENDS:
        raise RkdError(f"{where}backend must be one of auto, {', '.join(BACKENDS)}, got '{backend}'")
    if variant not in VARIANTS:
        raise RkdError(f"{where}variant must be one of {', '.join(VARIANTS)}, got '{variant}'")
    if backend == "torch" and variant != "fp32":
        raise RkdError(f"{where}variant '{variant}' needs backend onnx (torch runs the weights as loaded; "
                       "use dtype for bfloat16)")
    if backend == "openvino" and variant not in ("fp32", "bf16"):
        raise RkdError(f"{where}backend openvino has variants fp32 and bf16 here (got '{variant}')")
    if variant == "bf16" and backend != "openvino":
        raise RkdError(f"{where}variant bf16 runs on backend openvino (on torch, use dtype bfloat16)")
    if variant == "O4":
        raise RkdError(f"{where}variant O4 is fp16 for GPUs (onnxruntime-gpu); on CPU use O1, O2, O3 or int8")
    if backend != "torch" and dtype not in (None, "auto", "float32"):
        raise RkdError(f"{where}dtype {dtype} runs on the torch backend only; backend {backend} runs "
                       f"{'int8' if variant.startswith('int8') else variant if variant == 'bf16' else 'float32'}")


def int8_isa() -> str:
    """The dynamic-quantisation config for this CPU, best first (sentence-transformers' names)."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64"
    flags = cpu.cpu_flags()
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags and "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    raise RkdError("dynamic int8 needs an arm64 CPU or one with AVX2 or AVX-512 (none found in /proc/cpuinfo)")


def resolve_variant(variant: str) -> str:
    """``int8`` -> ``int8-<isa>`` of this machine (what actually runs, as identities record it)."""
    return f"int8-{int8_isa()}" if variant == "int8" else variant


AUTO = "auto"
"""A params' or spec's backend / variant left to :func:`preferred` (the field default)."""


def has_cuda() -> bool:
    """Whether a CUDA GPU is visible, checked without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()


def preferred(dtype: str | None = None, device: str | None = None) -> tuple[str, str]:
    """This machine's default backend: OpenVINO bf16 where it runs natively (a CPU with AVX512-BF16
    or AMX, ``openvino`` installed, no CUDA GPU, no device or dtype asked of torch), else torch
    fp32. eval/results/backend-default/ is the rule and its evidence: every encoder and scorer of
    the main job within 0.005 nDCG@10 of torch fp32 on SciFact test, at about twice the speed.
    Dynamic int8 on CPUs without bf16 was read the same way and not adopted
    (eval/results/backend-int8/: MiniLM-L6 dense lost 0.0069 on train).
    ``RKD_BACKEND=backend[:variant]`` overrides it for a whole process (``torch:fp32``: the old
    default)."""
    env = os.environ.get("RKD_BACKEND", "").strip()
    if env:
        b, _, v = env.partition(":")
        check(b, v or "fp32", what="RKD_BACKEND")
        return b, v or "fp32"
    if dtype not in (None, "auto", "float32") or device not in (None, "cpu"):
        return DEFAULT
    if cpu.cpu_has_bf16() and importlib.util.find_spec("openvino") is not None and not has_cuda():
        return "openvino", "bf16"
    return DEFAULT


def resolve_auto(backend: str | None, variant: str | None, *, dtype: str | None = None,
                 device: str | None = None) -> tuple[str, str]:
    """``(backend, variant)`` with ``auto`` / None replaced: both left -> :func:`preferred`; only a
    variant given -> the backend that runs it (bf16: openvino; fp32: torch; the rest: onnx)."""
    b_auto, v_auto = backend in (None, AUTO), variant in (None, AUTO)
    if b_auto and v_auto:
        return preferred(dtype, device)
    if b_auto:
        return ("openvino" if variant == "bf16" else "torch" if variant == "fp32" else "onnx"), variant
    return backend, "fp32" if v_auto else variant


def keyed_params(params: dict[str, Any]) -> dict[str, Any]:
    """An encoder params dict as a stage key should see it: a backend left to ``auto`` filled in
    with :func:`preferred` (nothing added where that is torch fp32, so older keys stand)."""
    if params.get("backend") not in (None, AUTO) or params.get("variant") not in (None, AUTO):
        return params
    b, v = preferred(device=params.get("device"))
    return params if (b, v) == DEFAULT else {**params, "backend": b, "variant": v}


def is_default(backend: str | None, variant: str | None) -> bool:
    return (backend or "torch", variant or "fp32") == DEFAULT


def backend_identity(backend: str | None, variant: str | None) -> dict[str, str]:
    """What a non-default backend adds to an identity (nothing for torch fp32)."""
    if is_default(backend, variant):
        return {}
    return {"backend": backend or "torch", "variant": resolve_variant(variant or "fp32")}


def label(backend: str | None, variant: str | None, dtype: str | None = None) -> str:
    """``torch float32``, ``torch bfloat16``, ``onnx O3``, ``onnx int8-avx2`` ... for reports."""
    backend, variant = backend or "torch", variant or "fp32"
    if backend == "torch":
        return f"torch {dtype or 'float32'}"
    return f"{backend} {resolve_variant(variant)}"


def label_of_identity(ident: Any) -> str | None:
    """The backend(s) an identity (a teacher's or an index encoder's) says ran; None when it names
    no neural model (BM25, an LLM server)."""
    if not isinstance(ident, dict):
        return None
    if ident.get("kind") in ("ensemble", "crossfit"):
        subs = [m.get("teacher") for m in ident.get("members", [])] + list(ident.get("folds", []))
        labels = [x for x in (label_of_identity(s) for s in subs) if x]
        return ", ".join(dict.fromkeys(labels)) or None
    if ident.get("kind") == "llm":
        return "openai server" if ident.get("backend") == "openai" else f"torch {ident.get('dtype', 'float32')}"
    if ident.get("kind") == "bm25" or "model" not in ident:
        return None
    dtype = ident.get("dtype") or (ident.get("params") or {}).get("dtype")
    return label(ident.get("backend"), ident.get("variant"), dtype)


class BackendParams(BaseModel):
    """Encoder params with an inference backend (dense, SPLADE and ColBERT indexes, dense
    retrieval). Left out of dumps at torch / fp32, so params, identities and stage keys written
    before backends existed are unchanged."""

    backend: Backend | Literal["auto"] = AUTO
    variant: Variant | Literal["auto"] = AUTO
    """``auto`` (the default): :func:`preferred` for this machine, resolved when the params are
    built, so dumps, identities and stage keys hold the backend that runs."""

    _auto: bool = PrivateAttr(False)
    """Whether the backend was left to :func:`preferred` (a model object then runs on torch)."""

    @model_validator(mode="after")
    def _runnable(self):
        self._auto = self.backend == AUTO and self.variant == AUTO
        self.backend, self.variant = resolve_auto(self.backend, self.variant,
                                                  device=getattr(self, "device", None))
        try:
            check(self.backend, self.variant)
        except RkdError as e:
            raise ValueError(str(e)) from None
        return self

    DROP_WHEN_NONE: ClassVar[tuple[str, ...]] = ()
    """Fields added later, left out of dumps while unset (a subclass's)."""

    @model_serializer(mode="wrap")
    def _drop_default_backend(self, handler):
        out = handler(self)
        if isinstance(out, dict):
            for k, default in zip(("backend", "variant"), DEFAULT):
                if out.get(k) == default:
                    del out[k]
            for k in self.DROP_WHEN_NONE:
                if k in out and out[k] is None:
                    del out[k]
        return out


def backend_info(model) -> dict[str, str]:
    """What :func:`apply_backend` recorded on a loaded model (``{}``: torch)."""
    try:
        hf = transformer_module(model).model
    except RkdError:
        return {}
    return dict(getattr(hf, "rkd_backend", None) or {})


# -- the ONNX Runtime stand-in for a Hugging Face model ------------------------------------------
def _output_name(task: str) -> str:
    return "last_hidden_state" if task == "feature-extraction" else "logits"


def _ort_session(path: Path, threads: int | None):
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class _OpenVinoSession:
    """An OpenVINO compiled model behind the ``run(names, feeds)`` call of an ORT session."""

    def __init__(self, path: Path, threads: int | None, precision: str = "f32") -> None:
        import openvino as ov
        import torch

        core = ov.Core()
        cfg = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads(), "INFERENCE_PRECISION_HINT": precision}
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", cfg)
        self._inputs = [p.get_any_name() for p in self.compiled.inputs]

    def get_inputs(self):
        from types import SimpleNamespace

        return [SimpleNamespace(name=n) for n in self._inputs]

    def run(self, names, feeds):
        res = self.compiled(feeds)
        return [res[self.compiled.output(n)] for n in names]


_ORT_CLASS = None


def ort_model_class():
    """:class:`OrtTransformerModel`, defined on first use (so importing this module, as specs and
    params do, never imports torch)."""
    global _ORT_CLASS
    if _ORT_CLASS is not None:
        return _ORT_CLASS
    import numpy as np
    import torch
    from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput, SequenceClassifierOutput

    class OrtTransformerModel(torch.nn.Module):
        """Stands in for the Hugging Face model inside a sentence-transformers ``Transformer``
        module (or for a cross-encoder's ``AutoModelForSequenceClassification``): same call, same
        output field (``last_hidden_state`` or ``logits``), computed by an ONNX Runtime session."""

        def __init__(self, session, config, task: str, info: dict[str, Any]) -> None:
            super().__init__()
            self.session, self.config, self.task, self.rkd_backend = session, config, task, info
            self.input_names = [i.name for i in session.get_inputs()]
            self.output_name = _output_name(task)
            self.output_cls = {"feature-extraction": BaseModelOutput, "fill-mask": MaskedLMOutput}.get(
                task, SequenceClassifierOutput)

        @property
        def device(self):
            return torch.device("cpu")

        @property
        def dtype(self):
            return torch.float32

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **_: Any):
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            if given["attention_mask"] is None:
                given["attention_mask"] = torch.ones_like(input_ids)
            if given["token_type_ids"] is None:
                given["token_type_ids"] = torch.zeros_like(input_ids)
            feeds = {n: np.ascontiguousarray(given[n].detach().cpu().numpy(), dtype=np.int64)
                     for n in self.input_names}
            out = torch.from_numpy(np.asarray(self.session.run([self.output_name], feeds)[0]))
            return self.output_cls(**{self.output_name: out})

        def extra_repr(self) -> str:
            return f"{self.rkd_backend.get('backend')} {self.rkd_backend.get('variant')}, task={self.task}"

    _ORT_CLASS = OrtTransformerModel
    return _ORT_CLASS


# -- finding the transformer, exporting it -------------------------------------------------------
def transformer_module(model) -> Any:
    """The sentence-transformers ``Transformer`` module of a loaded model (the first one)."""
    from sentence_transformers.base.modules import Transformer

    for m in getattr(model, "_modules", {}).values():
        if isinstance(m, Transformer):
            return m
    raise RkdError(f"{type(model).__name__}: no Transformer module to run on another backend")


def _config_sha(location: str | None) -> str | None:
    cfg = Path(location) / "config.json" if location else None
    if cfg is not None and cfg.is_file():
        return hashlib.sha256(cfg.read_bytes()).hexdigest()
    return None


def export_key(weights_sha256: str, config_sha256: str | None, task: str, backend: str, variant: str) -> str:
    """The content key of an export: source weights (and config), task, backend, variant, recipe."""
    payload = {"weights_sha256": weights_sha256, "config_sha256": config_sha256, "task": task,
               "format": "onnx" if backend in ("onnx", "openvino") else backend, "variant": variant,
               "export_version": EXPORT_VERSION, "opset": OPSET}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def exports_dir() -> Path:
    from retrieval_kd.settings import cache_home

    return cache_home() / EXPORTS


def _cached(folder: Path) -> Path | None:
    """The cached export's model file when its record vouches for every file; None when absent.
    A damaged export is removed (and so rebuilt)."""
    import shutil

    from retrieval_kd.artifacts import read_json
    from retrieval_kd.digests import recorded_files, verify_files

    rec_path = folder / RECORD
    if not rec_path.is_file():
        return None
    try:
        rec = read_json(rec_path)
        files = recorded_files(rec)
        problems = verify_files(folder, files, cache_file=rec_path) if files else ["no files recorded"]
    except (OSError, ValueError) as e:
        problems = [f"unreadable record ({e})"]
    if problems:
        print(f"cached export {folder} is damaged ({problems[0]}): exporting again", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return folder / rec["model_file"]


def _eager(hf_model) -> None:
    """Eager attention exports as plain MatMul/Softmax, which onnxruntime fuses into Attention."""
    with contextlib.suppress(Exception):
        hf_model.set_attn_implementation("eager")


def _export_fp32(tr, out: Path) -> None:
    """``torch.onnx.export`` (TorchScript exporter) of the transformer's HF model, dynamic batch
    and sequence axes, the task's output only."""
    import torch

    hf = tr.model
    task = tr.transformer_task
    tok = tr.tokenizer
    if task == "sequence-classification":
        enc = tok(["a short query", "another query"], ["a passage text", "a longer passage text here"],
                  padding=True, return_tensors="pt")
    else:
        enc = tok(["a short text", "a somewhat longer text to pad"], padding=True, return_tensors="pt")
    import inspect

    params = set(inspect.signature(hf.forward).parameters)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc and n in params]
    out_name = _output_name(task)

    class _Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *args):
            return getattr(self.m(**dict(zip(names, args)), return_dict=True), out_name)

    _eager(hf)
    hf.eval()
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[out_name] = {0: "batch", 1: "sequence"} if task != "sequence-classification" else {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Wrap(hf), tuple(enc[n] for n in names), str(out), input_names=names,
                          output_names=[out_name], dynamic_axes=axes, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)


def _optimize(src: Path, out: Path, level: str, config) -> None:
    """onnxruntime's transformer optimizer at Optimum's O1/O2/O3 settings."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    mtype = getattr(config, "model_type", None)
    ort_type = _ORT_MODEL_TYPES.get(mtype)
    if ort_type is None:
        raise RkdError(f"onnx {level}: onnxruntime's optimizer has no fusions for model type '{mtype}' "
                       "(use variant fp32 or int8)")
    opts = FusionOptions(ort_type)
    if level == "O3":
        opts.enable_gelu_approximation = True
    opt = optimize_model(str(src), ort_type, num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
                         hidden_size=int(getattr(config, "hidden_size", 0) or 0),
                         opt_level=1 if level == "O1" else 2, optimization_options=opts, use_gpu=False,
                         only_onnxruntime=level == "O1")
    opt.save_model_to_file(str(out))


def _quantize(src: Path, out: Path, isa: str) -> None:
    """Dynamic int8 with the settings of Optimum's ``AutoQuantizationConfig.<isa>(is_static=False)``
    (what sentence-transformers' ``export_dynamic_quantized_onnx_model`` uses): per-channel,
    symmetric weights (uint8 on avx2, int8 elsewhere), asymmetric uint8 activations, full range."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(out), per_channel=True, reduce_range=False,
                     weight_type=QuantType.QUInt8 if isa == "avx2" else QuantType.QInt8,
                     extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                    "DefaultTensorType": onnx.TensorProto.FLOAT})


def _build(tr, ref_sha: str, cfg_sha: str | None, variant: str, folder: Path, base: Path | None) -> None:
    """Write the export of ``variant`` into ``folder`` (fp32: from torch; others: from ``base``)."""
    global export_calls

    from retrieval_kd.artifacts import now_iso, read_json_object, write_json
    from retrieval_kd.digests import FILES, file_digests

    t0 = time.perf_counter()
    out = folder / ONNX_FILE
    if variant == "fp32":
        _export_fp32(tr, out)
    elif variant in OPT_LEVELS:
        _optimize(base, out, variant, tr.model.config)
    else:
        _quantize(base, out, variant.split("-", 1)[1])
    export_calls += 1
    files = file_digests(folder, exclude=(), cache_file=folder / RECORD)
    import onnxruntime

    write_json(folder / RECORD, {
        **read_json_object(folder / RECORD), "model_file": ONNX_FILE, "weights_sha256": ref_sha,
        "config_sha256": cfg_sha, "task": tr.transformer_task, "format": "onnx", "variant": variant,
        "export_version": EXPORT_VERSION, "opset": OPSET, "onnxruntime": onnxruntime.__version__,
        "created": now_iso(), "export_s": round(time.perf_counter() - t0, 3), FILES: files})


def exported_model(tr, weights_sha256: str, config_sha256: str | None, variant: str) -> Path:
    """The cached ONNX file of ``tr``'s transformer at ``variant`` (resolved: ``int8-<isa>``),
    exported (from the fp32 export, itself cached) when missing. One process exports a key at a
    time (a lock beside the folder); the folder appears complete or not at all."""
    from retrieval_kd.artifacts import atomic_dir
    from retrieval_kd.locks import hold

    task = tr.transformer_task
    key = export_key(weights_sha256, config_sha256, task, "onnx", variant)
    folder = exports_dir() / f"{weights_sha256[:12]}-{task}-{variant}-{key[:16]}"
    hit = _cached(folder)
    if hit is not None:
        return hit
    base = None if variant == "fp32" else exported_model(tr, weights_sha256, config_sha256, "fp32")
    with hold(folder.parent / f".{folder.name}.lock", f"{folder}: another process is exporting it", wait=3600):
        hit = _cached(folder)  # exported by the process we waited for
        if hit is not None:
            return hit
        from retrieval_kd.progress import console
        from retrieval_kd.workdirs import clean_stale_temps

        clean_stale_temps(folder)  # a killed export's half-written folder (we hold its lock)

        console.log(f"exporting the {task} model to onnx {variant} (cached in {folder})")
        with atomic_dir(folder) as tmp:
            _build(tr, weights_sha256, config_sha256, variant, tmp, base)
    hit = _cached(folder)
    if hit is None:
        raise IntegrityError(f"{folder}: the export just written does not match its record")
    return hit


def apply_backend(model, ref, backend: str | None, variant: str | None, *, threads: int | None = None,
                  device: str | None = None, what: str = "the model") -> dict[str, str]:
    """Run ``model`` (a loaded SentenceTransformer / SparseEncoder / CrossEncoder /
    MultiVectorEncoder) on ``backend`` / ``variant``: its Transformer module's HF model is replaced
    by an ONNX Runtime (or OpenVINO) session over the cached export, and the torch weights are
    freed. Returns what the identity records (``{}`` for torch fp32). ``ref`` is the resolved
    model (its weights' sha256 keys the export cache)."""
    backend, variant = backend or "torch", variant or "fp32"
    check(backend, variant, what=what)
    if is_default(backend, variant):
        return {}
    if device and not str(device).startswith("cpu"):
        raise RkdError(f"{what}: backend {backend} runs on the CPU here (device '{device}' asked); "
                       "use backend torch on a GPU")
    sha = getattr(ref, "sha256", None)
    if not sha:
        raise RkdError(f"{what}: backend {backend} needs the model's weights on disk (their sha256 keys "
                       f"the export cache); '{getattr(ref, 'ref', ref)}' has none here")
    if backend == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise RkdError(f"{what}: backend openvino needs the openvino package "
                           "(pip install 'retrieval-kd[openvino]')") from None
    resolved = resolve_variant(variant)
    tr = transformer_module(model)
    # openvino bf16 runs the fp32 export with bfloat16 kernels (its inference precision hint)
    path = exported_model(tr, sha, _config_sha(getattr(ref, "location", None)),
                          "fp32" if resolved == "bf16" else resolved)
    session = (_ort_session(path, threads) if backend == "onnx" else
               _OpenVinoSession(path, threads, "bf16" if resolved == "bf16" else "f32"))
    info = {"backend": backend, "variant": resolved}
    config = tr.model.config
    tr.model = ort_model_class()(session, config, tr.transformer_task, info)
    import gc

    gc.collect()
    return info
