"""Where generations come from: a local GGUF model (llama-cpp-python) or an OpenAI-compatible server.

A backend turns prompts into ``(raw text, finish reason)`` pairs, one per prompt, each decoded on its own with its own
seed, so a passage's generation does not depend on which chunk or run it falls in:

- local: ``llama_cpp.Llama``, one prompt after another (its high-level API decodes one
  sequence at a time). The context is reset before each prompt (no prefix reuse from the
  previous one), which keeps greedy outputs identical across chunkings and resumed runs.
- server: ``/v1/completions`` or ``/v1/chat/completions``, ``concurrency`` requests in
  flight, with the teachers' HTTP client (retries with backoff on connection errors, 429, 5xx).
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

from retrieval_kd.errors import RkdError
from retrieval_kd.queries.params import QueryGenParams


class Backend:
    chat: bool

    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def generate(self, prompts: list[str], seeds: list[int]) -> list[tuple[str, str | None]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def gguf_of(model: str) -> tuple[Path, dict[str, Any]]:
    """The GGUF file a model reference stands for, with its provenance; a clear error when it
    is none (an unknown name, a folder of safetensors, a file that is not there)."""
    from retrieval_kd.models.registry import model_registry
    from retrieval_kd.models.resolve import resolve_model

    reg = model_registry()
    if model in reg and reg[model].family != "causal-lm":
        causal = ", ".join(n for n, s in reg.items() if s.family == "causal-lm")
        raise RkdError(f"model '{model}' is a {reg[model].family}, not a generator (causal-lm: {causal})")
    if model not in reg and not Path(model).expanduser().exists():
        causal = ", ".join(n for n, s in reg.items() if s.family == "causal-lm")
        raise RkdError(f"model '{model}': not a registered generator ({causal}) nor an existing GGUF file")
    ref = resolve_model(model)
    loc = Path(ref.location)
    if loc.is_dir():
        ggufs = sorted(loc.glob("*.gguf"))
        if len(ggufs) != 1:
            raise RkdError(f"model '{model}': {loc} holds {len(ggufs)} .gguf files; name the file")
        loc = ggufs[0]
    if loc.suffix != ".gguf" or not loc.is_file():
        raise RkdError(f"model '{model}': {loc} is not a GGUF file (local generation runs GGUF "
                       "models through llama-cpp-python; serve other models and give --base-url)")
    with open(loc, "rb") as f:
        if f.read(4) != b"GGUF":
            raise RkdError(f"model '{model}': {loc} is not a GGUF file (bad magic)")
    prov = {"ref": model, "hf_id": ref.hf_id, "weight_file": loc.name, "sha256": ref.sha256}
    return loc, prov


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp prints its model-load chatter on fd 2 whatever ``verbose`` says."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


class LlamaCppBackend(Backend):
    def __init__(self, params: QueryGenParams) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise RkdError("local generation needs llama-cpp-python (pip install llama-cpp-python), "
                           "or give --base-url for a server") from None
        self.path, self.provenance = gguf_of(params.model)
        self.params = params
        with _quiet_stderr():
            try:
                self.llm = Llama(str(self.path), n_ctx=params.n_ctx, n_threads=params.threads,
                                 n_threads_batch=params.threads, seed=params.seed, verbose=False)
            except (ValueError, RuntimeError) as e:
                raise RkdError(f"model '{params.model}': llama.cpp could not load {self.path} ({e})") from None
        has_template = "tokenizer.chat_template" in self.llm.metadata
        self.chat = has_template if params.chat is None else params.chat
        if self.chat and not has_template:
            raise RkdError(f"model '{params.model}': chat is on but the GGUF file has no chat template")

    def identity(self) -> dict[str, Any]:
        return {"backend": "llama-cpp", "model": self.provenance, "chat": self.chat,
                "llama_cpp_python": metadata.version("llama_cpp_python")}

    def _one(self, prompt: str, seed: int) -> tuple[str, str | None]:
        p = self.params
        kw = dict(max_tokens=p.max_new_tokens, temperature=p.temperature, top_p=p.top_p,
                  top_k=p.top_k, seed=seed)
        self.llm.reset()
        try:
            if self.chat:
                c = self.llm.create_chat_completion([{"role": "user", "content": prompt}], **kw)["choices"][0]
                return c["message"]["content"] or "", c.get("finish_reason")
            c = self.llm.create_completion(prompt, **kw)["choices"][0]
            return c["text"] or "", c.get("finish_reason")
        except ValueError as e:  # "Requested tokens (n) exceed context window of m"
            raise RkdError(f"llama.cpp: {e} (lower max_passage_chars or raise n_ctx)") from None

    def generate(self, prompts: list[str], seeds: list[int]) -> list[tuple[str, str | None]]:
        return [self._one(p, s) for p, s in zip(prompts, seeds)]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.llm.close()


class ServerBackend(Backend):
    """An OpenAI-compatible server; ``model`` None takes the one model it serves."""

    def __init__(self, params: QueryGenParams) -> None:
        from retrieval_kd.openai_client import OpenAIClient

        self.client = OpenAIClient(params.base_url, timeout=params.timeout)
        self.api = self.client.api
        self.params = params
        self.chat = True if params.chat is None else params.chat
        self.model = self.client.served_model(params.model)

    def identity(self) -> dict[str, Any]:
        return {"backend": "openai", "model": self.model, "chat": self.chat}

    def _one(self, args: tuple[str, int]) -> tuple[str, str | None]:
        prompt, seed = args
        p = self.params
        body = {"model": self.model, "max_tokens": p.max_new_tokens, "temperature": p.temperature,
                "top_p": p.top_p, "seed": seed}
        try:
            if self.chat:
                c = self.client.request("POST", "/chat/completions",
                                  {**body, "messages": [{"role": "user", "content": prompt}]})["choices"][0]
                return c["message"]["content"] or "", c.get("finish_reason")
            c = self.client.request("POST", "/completions", {**body, "prompt": prompt})["choices"][0]
            return c["text"] or "", c.get("finish_reason")
        except (KeyError, IndexError, TypeError) as e:
            raise RkdError(f"{self.api}: no generated text in the response ({e!r})") from None

    def generate(self, prompts: list[str], seeds: list[int]) -> list[tuple[str, str | None]]:
        with ThreadPoolExecutor(max_workers=self.params.concurrency) as pool:
            return list(pool.map(self._one, zip(prompts, seeds)))


def make_backend(params: QueryGenParams) -> Backend:
    return ServerBackend(params) if params.base_url else LlamaCppBackend(params)
