"""Any Hugging Face / sentence-transformers cross-encoder as a teacher.

Inference differs from ``CrossEncoder.predict`` where it pays on long, uneven passages:
pairs are tokenised once, sorted by *token* length, and packed into batches under a token
budget (short pairs travel in large batches, long ones in small), padded only to each
batch's longest pair, and run under ``torch.inference_mode``. ``dtype="auto"`` loads the
weights in bfloat16 where the hardware has native bf16 (AMX / AVX512-BF16 CPUs, most GPUs;
measured here: bf16 weights beat bf16 autocast) and float32 elsewhere; the dtype actually
used is part of the teacher's identity, so bf16 and fp32 scores never share a store.
Scores are the raw logits (no sigmoid), which is what Margin-MSE and KL distillation use.
``backend="onnx"`` (variant fp32, O1-O3 or int8) runs the same batches through ONNX Runtime over
a cached export of the model (retrieval_kd/models/backends.py); it is part of the identity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retrieval_kd.families import CROSS_ENCODER
from retrieval_kd.models.resolve import resolve_model
from retrieval_kd.teachers.base import Pair, Teacher
from retrieval_kd.teachers.torch_utils import pick_device, resolve_dtype, set_threads, torch_dtype


class CrossEncoderTeacher(Teacher):
    def __init__(self, model: str, max_length: int = 512, batch_size: int = 32,
                 dtype: str = "auto", threads: int | None = None, device: str | None = None,
                 token_budget: int | None = None, backend: str = "torch", variant: str = "fp32") -> None:
        from sentence_transformers import CrossEncoder

        from retrieval_kd.models.backends import apply_backend, check

        check(backend, variant, dtype=dtype, what="the cross-encoder teacher")
        set_threads(threads)
        self.ref = resolve_model(model)
        self.device = pick_device(device) if backend == "torch" else (device or "cpu")
        self.max_length, self.batch_size = max_length, batch_size
        self.dtype = resolve_dtype(dtype, self.device) if backend == "torch" else "float32"
        self.ce = CrossEncoder(self.ref.location, device=self.device, max_length=max_length,
                               model_kwargs={"dtype": torch_dtype(self.dtype)})
        self.ce.eval()
        # another backend: the HF model becomes an ONNX Runtime session over a cached export
        self.backend = apply_backend(self.ce, self.ref, backend, variant, threads=threads, device=self.device,
                                     what="the cross-encoder teacher")
        self.hf_model = self.ce[0].model
        self.tokenizer = self.ce.tokenizer
        # Budget = batch_size full-length pairs' worth of tokens.
        self.token_budget = token_budget or batch_size * max_length

    def identity(self) -> dict[str, Any]:
        return {"kind": CROSS_ENCODER.name, "model": self.ref.provenance(),
                "max_length": self.max_length, "dtype": self.dtype,
                "activation": "none (logits)", **self.backend}

    def _batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        order = np.argsort(-lengths, kind="stable")
        batches, cur, cur_max = [], [], 0
        for i in order:
            L = int(lengths[i])
            if cur and (max(cur_max, L) * (len(cur) + 1) > self.token_budget):
                batches.append(np.array(cur))
                cur, cur_max = [], 0
            cur.append(i)
            cur_max = max(cur_max, L)
        if cur:
            batches.append(np.array(cur))
        return batches

    def score(self, pairs: list[Pair]) -> np.ndarray:
        import torch

        if not pairs:
            return np.zeros(0)
        enc = self.tokenizer([p.query for p in pairs], [p.passage for p in pairs],
                             truncation="longest_first", max_length=self.max_length)
        ids = enc["input_ids"]
        extra = [k for k in ("token_type_ids",) if k in enc]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        out = np.empty(len(pairs), dtype=np.float64)
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for b in self._batches(lengths):
                L = int(lengths[b].max())
                input_ids = torch.full((len(b), L), pad, dtype=torch.long)
                mask = torch.zeros((len(b), L), dtype=torch.long)
                feats = {k: torch.zeros((len(b), L), dtype=torch.long) for k in extra}
                for r, i in enumerate(b):
                    n = int(lengths[i])
                    input_ids[r, :n] = torch.tensor(ids[i])
                    mask[r, :n] = 1
                    for k in extra:
                        feats[k][r, :n] = torch.tensor(enc[k][i])
                logits = self.hf_model(input_ids=input_ids.to(self.device),
                                       attention_mask=mask.to(self.device),
                                       **{k: v.to(self.device) for k, v in feats.items()}).logits
                out[b] = logits[:, 0].float().cpu().numpy()
        return out
