"""The native GGUF backend of the local LLM teachers: llama.cpp through llama-cpp-python.

The quantised weights run as they are (no dequantisation). A pointwise score is
``logit(yes) - logit(no)`` of the next-token logits at the end of the prompt: the same
quantity as the transformers path (:mod:`retrieval_kd.teachers.llm`), from the same prompt
(the template, the GGUF's own chat template when it has one, the passage cut at a token
boundary to fit ``max_length``), so the two backends' scores are comparable.

Prompts are evaluated one after another, each as one batch of tokens (``n_batch``, matrix
products over all its tokens on ``threads`` threads, default: this machine's cores); the
longest prefix a prompt shares with the one before (chat header, instruction, the same
query) is kept in the KV cache and not evaluated again, so a query's candidates in a row cost
little more than their passages. ``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` (see
:func:`load_llama`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from retrieval_kd.errors import DataError, RkdError
from retrieval_kd.models.resolve import ModelRef, resolve_model
from retrieval_kd.teachers.base import Pair, Teacher
from retrieval_kd.teachers.llm import _gguf_file, answer_token, fit_prompt
from retrieval_kd.teachers.prompts import TaskPrompt


def llama_cpp_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


def gguf_of(model: str) -> Path | None:
    """The GGUF file a model reference names (None: not a GGUF model, or not resolvable)."""
    try:
        return _gguf_file(resolve_model(model))
    except Exception:  # noqa: BLE001 - not resolvable here: the build reports it
        return None


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def load_llama(path: Path, n_ctx: int, threads: int | None = None):
    """A ``llama_cpp.Llama`` on ``path`` (CPU unless llama.cpp was built for a GPU), quiet."""
    if not llama_cpp_available():
        raise RkdError("the llama.cpp backend needs llama-cpp-python: pip install 'retrieval-kd[llm-server]'")
    # llama.cpp's OpenMP threads spin at each barrier by default: on a CPU shared with other
    # work that is several times slower than sleeping (measured 5x on 2 busy cores); the
    # environment's own setting wins. Read once, when llama.cpp's OpenMP runtime loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from llama_cpp import Llama

    n = threads or default_threads()
    return Llama(str(path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), n_ubatch=min(n_ctx, 512),
                 n_threads=n, n_threads_batch=n, seed=0, verbose=False)


class _Tok:
    """The llama.cpp tokenizer behind the ``encode`` call :func:`answer_token` makes."""

    def __init__(self, llm) -> None:
        self.llm = llm

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=False)


def chat_formatter(llm):
    """The GGUF's own chat template as a renderer of messages (None when it has none)."""
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return None
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text(tid: int) -> str:
        return llm._model.token_get_text(tid) if tid != -1 else ""

    return Jinja2ChatFormatter(template, eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos()),
                               add_generation_prompt=True)


def ref_identity(ref: ModelRef) -> dict[str, Any]:
    return {"ref": ref.ref, "hf_id": ref.hf_id, "weight_file": ref.weight_file, "sha256": ref.sha256}


class GGUFTeacher(TaskPrompt, Teacher):
    """Pointwise yes/no relevance from a GGUF model run by llama.cpp."""

    def __init__(self, model: str, template: str | None = None, task: str | None = None,
                 yes: str = "Yes", no: str = "No", max_length: int = 512, chat: bool | None = None,
                 threads: int | None = None) -> None:
        self._set_prompt(template, task)
        self.ref = resolve_model(model)
        path = _gguf_file(self.ref)
        if path is None:
            raise DataError("<llm teacher>", f"{model}: backend llama.cpp needs a GGUF file "
                                             f"(found {self.ref.location}); use backend transformers")
        self.max_length = max_length
        t0 = time.perf_counter()
        self.llm = load_llama(path, n_ctx=max_length + 8, threads=threads)
        self.load_s = time.perf_counter() - t0
        self._chat = chat_formatter(self.llm)
        self.chat = self._chat is not None if chat is None else chat
        if self.chat and self._chat is None:
            raise DataError("<llm teacher>", f"{model}: chat=True but the GGUF file has no chat template")
        tok = _Tok(self.llm)
        after_space = self._render("q", "p")[-1:].isspace()
        self.yes, self.yes_id = answer_token(tok, yes, after_space)
        self.no, self.no_id = answer_token(tok, no, after_space)
        if self.yes_id == self.no_id:
            raise DataError("<llm teacher>", f"'{yes}' and '{no}' share their first token")
        self._stateful = bool(getattr(self.llm, "_is_recurrent", False) or getattr(self.llm, "_is_hybrid", False))

    def identity(self) -> dict[str, Any]:
        return {"kind": "llm", "backend": "llama.cpp", "model": ref_identity(self.ref),
                "template": self.template, "chat": self.chat,
                "yes": {"token": self.yes, "id": self.yes_id}, "no": {"token": self.no, "id": self.no_id},
                "max_length": self.max_length, "score": "logit(yes) - logit(no)"}

    # -- prompt ---------------------------------------------------------------------------
    def _render(self, query: str, passage: str) -> str:
        text = self.template.format(query=query, passage=passage)
        if not self.chat:
            return text
        return self._chat(messages=[{"role": "user", "content": text}]).prompt

    def _encode(self, query: str, passage: str) -> list[int]:
        text = self._render(query, passage).encode("utf-8")
        if self.chat:  # the chat template writes its own BOS and markers
            return self.llm.tokenize(text, add_bos=False, special=True)
        return self.llm.tokenize(text, add_bos=True, special=False)

    def _count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _head(self, text: str, n: int) -> str:
        if n <= 0:
            return ""
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return text if n >= len(ids) else self.llm.detokenize(ids[:n]).decode("utf-8", errors="ignore")

    def _fit(self, query: str, passage: str) -> list[int]:
        return fit_prompt(self._encode, self._count, self._head, query, passage, self.max_length)

    # -- scoring --------------------------------------------------------------------------
    def next_logits(self, ids: list[int]) -> np.ndarray:
        """Next-token logits after ``ids``, reusing the KV cache of the longest shared prefix."""
        llm = self.llm
        keep = 0
        if not self._stateful:
            for a, b in zip(llm.input_ids[:llm.n_tokens], ids):
                if a != b:
                    break
                keep += 1
        # At least two tokens are evaluated (the last one's logits are read). A one-token batch
        # takes llama.cpp's matrix-vector kernels, which on AVX512 builds quantise activations
        # differently from the matrix kernels: a prompt found whole in the cache scored 0.0035
        # off the same prompt evaluated after a shorter shared prefix.
        keep = max(0, min(keep, len(ids) - 2))
        llm.n_tokens = keep
        if self._stateful:
            llm.reset()
        llm.eval(ids[keep:])
        return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm._n_vocab,))

    def score(self, pairs: list[Pair]) -> np.ndarray:
        if not pairs:
            return np.zeros(0)
        if self.llm is None:
            raise RkdError(f"{self.ref.ref}: this LLM teacher was closed; build a new one to score")
        out = np.empty(len(pairs), dtype=np.float64)
        for i, p in enumerate(pairs):
            logits = self.next_logits(self._fit(p.query, p.passage))
            out[i] = float(logits[self.yes_id]) - float(logits[self.no_id])
        return out

    def close(self) -> None:
        if getattr(self, "llm", None) is not None:
            self.llm.close()
        self.llm = None
