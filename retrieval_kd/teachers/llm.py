"""A pointwise LLM relevance judge: score = logit("Yes") - logit("No") at the answer position.

The prompt is ``template`` filled with the query and passage (the passage, and only if that
is not enough the query, is cut at a token boundary so the prompt fits ``max_length``),
wrapped as a user turn of the tokenizer's chat template when it has one. The score is the
difference of the two answer tokens' next-token logits, which equals
``log p(yes) - log p(no)`` under the model's distribution.

GGUF weights are dequantised by transformers on first load (slow) and the result is kept in
``cache_home()/converted/<gguf sha256[:16]>-<dtype>/`` so later loads are plain loads.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from retrieval_kd.artifacts import atomic_dir, now_iso, write_json
from retrieval_kd.errors import DataError, RkdError
from retrieval_kd.models.resolve import ModelRef, resolve_model
from retrieval_kd.settings import cache_home
from retrieval_kd.teachers.base import Pair, Teacher
from retrieval_kd.teachers.prompts import POINTWISE, TaskPrompt, check_fields
from retrieval_kd.teachers.torch_utils import pick_device, set_threads, torch_dtype

DEFAULT_TEMPLATE = POINTWISE["qa"]
CONVERTED_RECORD = ".rkd-converted.json"


def check_template(template: str) -> str:
    """Return ``template`` if its only fields are ``{query}`` and ``{passage}`` (both present)."""
    return check_fields(template, {"query", "passage"})


def fit_prompt(encode: Callable[[str, str], list[int]], count: Callable[[str], int],
               head: Callable[[str, int], str], query: str, passage: str, max_length: int) -> list[int]:
    """Token ids of the prompt (``encode(query, passage)``), cutting the passage, then the query,
    at a token boundary (``head(text, n)``: the text of its first n tokens; ``count``: its
    number of tokens) so that it fits ``max_length``."""
    ids = encode(query, passage)
    for field in ("passage", "query"):
        if len(ids) <= max_length:
            return ids
        text = passage if field == "passage" else query
        n = count(text) - (len(ids) - max_length)
        while len(ids) > max_length:  # boundary merges can cost a token or two more
            text = head(text, n)
            if field == "passage":
                passage = text
            else:
                query = text
            new = encode(query, passage)
            n -= max(1, len(new) - max_length)
            ids = new
            if not text:
                break
    if len(ids) > max_length:
        raise DataError("<template>", f"the prompt without query and passage is {len(ids)} tokens "
                                      f"> max_length {max_length}")
    return ids


def converted_dir(gguf_sha256: str, dtype: str) -> Path:
    """Where the dequantised copy of a GGUF file is kept."""
    return cache_home() / "converted" / f"{gguf_sha256[:16]}-{dtype}"


def _gguf_file(ref: ModelRef) -> Path | None:
    loc = Path(ref.location)
    if loc.is_file() and loc.suffix == ".gguf":
        return loc
    if loc.is_dir() and not (loc / "config.json").exists() and (ref.weight_file or "").endswith(".gguf"):
        return loc / ref.weight_file
    return None


def _dequantize_kwargs() -> dict[str, Any]:
    """Ask for dense weights (transformers >= 5 can keep GGUF blocks packed, which cannot be saved)."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always dequantise
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def load_causal_lm(ref: ModelRef, dtype: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, source) where source is 'hf', 'gguf' (converted now) or 'converted'."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tdt = torch_dtype(dtype)
    gguf = _gguf_file(ref)
    no_code = {"trust_remote_code": False}  # a model folder's own code never runs (no prompt either)
    if gguf is None:
        return (AutoModelForCausalLM.from_pretrained(ref.location, dtype=tdt, **no_code),
                AutoTokenizer.from_pretrained(ref.location, **no_code), "hf")
    if not ref.sha256:
        raise RkdError(f"{gguf}: no sha256 for the GGUF file")
    conv = converted_dir(ref.sha256, dtype)
    if (conv / CONVERTED_RECORD).is_file():
        return (AutoModelForCausalLM.from_pretrained(conv, dtype=tdt, **no_code),
                AutoTokenizer.from_pretrained(conv, **no_code), "converted")
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, **no_code)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=tdt,
                                                 **_dequantize_kwargs(), **no_code)
    seconds = time.perf_counter() - t0
    if getattr(model, "hf_quantizer", None) is not None:  # dense weights, but save_pretrained refuses
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    with atomic_dir(conv) as tmp:  # renamed into place only once complete
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / CONVERTED_RECORD, {
            "gguf": str(gguf), "gguf_sha256": ref.sha256, "dtype": dtype,
            "transformers": __import__("transformers").__version__,
            "convert_s": round(seconds, 2), "created": now_iso()})
    return model, tok, "gguf"


def answer_token(tokenizer, word: str, after_space: bool) -> tuple[str, int]:
    """The (string, id) to read for answer ``word``.

    Candidates are the bare word and the word with a leading space, the one that fits the
    prompt's end first (bare after whitespace, spaced otherwise); the first that encodes as a
    single token wins, else the first token of the preferred candidate.
    """
    w = word.strip()
    cands = [w, " " + w] if after_space else [" " + w, w]
    encoded = [tokenizer.encode(c, add_special_tokens=False) for c in cands]
    for c, ids in zip(cands, encoded):
        if len(ids) == 1:
            return c, ids[0]
    if not encoded[0]:
        raise DataError("<answer>", f"'{word}' encodes to no tokens")
    return cands[0], encoded[0][0]


class LLMTeacher(TaskPrompt, Teacher):
    """Pointwise yes/no relevance from a causal LM (transformers; GGUF via dequantisation)."""

    def __init__(self, model: str, template: str | None = None, task: str | None = None, yes: str = "Yes",
                 no: str = "No", max_length: int = 512, batch_size: int = 8,
                 dtype: str = "float32", chat: bool | None = None, device: str | None = None,
                 threads: int | None = None) -> None:
        set_threads(threads)
        self._set_prompt(template, task)
        self.ref = resolve_model(model)
        self.max_length, self.batch_size, self.dtype = max_length, batch_size, dtype
        self.device = pick_device(device)
        t0 = time.perf_counter()
        self.model, self.tokenizer, self.loaded_from = load_causal_lm(self.ref, dtype)
        self.load_s = time.perf_counter() - t0
        self.model.to(self.device).eval()
        self.chat = bool(self.tokenizer.chat_template) if chat is None else chat
        if self.chat and not self.tokenizer.chat_template:
            raise DataError("<llm teacher>", f"{model}: chat=True but the tokenizer has no chat template")
        after_space = self._render("q", "p")[-1:].isspace()
        self.yes, self.yes_id = answer_token(self.tokenizer, yes, after_space)
        self.no, self.no_id = answer_token(self.tokenizer, no, after_space)
        if self.yes_id == self.no_id:
            raise DataError("<llm teacher>", f"'{yes}' and '{no}' share their first token")
        params = inspect.signature(self.model.forward).parameters
        self._extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._pad = next((t for t in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id)
                          if t is not None), 0)

    def identity(self) -> dict[str, Any]:
        return {"kind": "llm", "backend": "transformers",
                "model": {"ref": self.ref.ref, "hf_id": self.ref.hf_id,
                          "weight_file": self.ref.weight_file, "sha256": self.ref.sha256},
                "template": self.template, "chat": self.chat,
                "yes": {"token": self.yes, "id": self.yes_id},
                "no": {"token": self.no, "id": self.no_id},
                "max_length": self.max_length, "dtype": self.dtype,
                "score": "logit(yes) - logit(no)"}

    # -- prompt ---------------------------------------------------------------------------
    def _render(self, query: str, passage: str) -> str:
        text = self.template.format(query=query, passage=passage)
        if not self.chat:
            return text
        return self.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                  tokenize=False, add_generation_prompt=True)

    def _encode(self, query: str, passage: str) -> list[int]:
        return self.tokenizer(self._render(query, passage), add_special_tokens=not self.chat)["input_ids"]

    def _head(self, text: str, n: int) -> str:
        """The prefix of ``text`` covered by its first ``n`` tokens."""
        if n <= 0:
            return ""
        if getattr(self.tokenizer, "is_fast", False):
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            offs = enc["offset_mapping"]
            return text if n >= len(offs) else text[:offs[n - 1][1]]
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.decode(ids[:n], skip_special_tokens=True)

    def _fit(self, query: str, passage: str) -> list[int]:
        """Token ids of the prompt, cutting the passage (then the query) to fit max_length."""
        return fit_prompt(self._encode, lambda t: len(self.tokenizer.encode(t, add_special_tokens=False)),
                          self._head, query, passage, self.max_length)

    # -- scoring --------------------------------------------------------------------------
    def score(self, pairs: list[Pair]) -> np.ndarray:
        import torch

        if not pairs:
            return np.zeros(0)
        if self.model is None:
            raise RkdError(f"{self.ref.ref}: this LLM teacher was closed; build a new one to score")
        ids = [self._fit(p.query, p.passage) for p in pairs]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")
        out = np.empty(len(pairs), dtype=np.float64)
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                b = order[s:s + self.batch_size]
                L = int(lengths[b].max())
                input_ids = torch.full((len(b), L), self._pad, dtype=torch.long)
                mask = torch.zeros((len(b), L), dtype=torch.long)
                for r, i in enumerate(b):  # left padding: the answer position is always -1
                    n = int(lengths[i])
                    input_ids[r, L - n:] = torch.tensor(ids[i])
                    mask[r, L - n:] = 1
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(input_ids=input_ids.to(self.device),
                                    attention_mask=mask.to(self.device),
                                    position_ids=pos.to(self.device), **self._extra).logits[:, -1]
                diff = (logits[:, self.yes_id] - logits[:, self.no_id]).float().cpu().numpy()
                out[b] = diff
        return out

    def close(self) -> None:
        self.model = None
