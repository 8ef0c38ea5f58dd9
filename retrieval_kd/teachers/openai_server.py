"""A yes/no LLM judge behind an OpenAI-compatible server (vLLM, llama.cpp, ...).

Each pair is one request for a single token at temperature 0 with the top ``top_logprobs``
alternatives. The score is ``log p(yes) - log p(no)`` where each side sums (logsumexp) every
listed token that reads as the answer once stripped of whitespace and of the SentencePiece /
byte-BPE space markers, in any case ("yes", " yes", "Yes", " YES", ...).

Floor: a side absent from the top list has probability below the smallest listed one; it is
taken as half of that, ``min(listed logprobs) - log 2``. Both sides absent scores 0.

HTTP through retrieval_kd.openai_client (standard library), a thread pool for concurrency.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from retrieval_kd.errors import RkdError
from retrieval_kd.openai_client import OpenAIClient
from retrieval_kd.teachers.base import Pair, Teacher
from retrieval_kd.teachers.prompts import TaskPrompt

_SPACE_MARKS = " \t\r\n\u2581\u0120\u010a"  # whitespace, SentencePiece '▁', byte-BPE 'Ġ' 'Ċ'
FLOOR = "min(listed logprobs) - log 2"


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def log_odds(top: Mapping[str, float] | list[tuple[str, float]], yes: str = "yes",
             no: str = "no") -> float:
    """``log p(yes) - log p(no)`` from one position's top logprobs (token text, logprob)."""
    items = list(top.items()) if isinstance(top, Mapping) else list(top)
    if not items:
        raise ValueError("no logprobs")
    sides: dict[str, list[float]] = {yes.lower(): [], no.lower(): []}
    for token, lp in items:
        key = token.strip(_SPACE_MARKS).lower()
        if key in sides:
            sides[key].append(float(lp))
    ys, ns = sides[yes.lower()], sides[no.lower()]
    if not ys and not ns:
        return 0.0
    floor = min(float(lp) for _, lp in items) - math.log(2)
    return (_logsumexp(ys) if ys else floor) - (_logsumexp(ns) if ns else floor)


def _top_of(response: dict[str, Any], chat: bool) -> list[tuple[str, float]]:
    """The first generated position's top logprobs as (token, logprob) pairs."""
    lp = response["choices"][0].get("logprobs") or {}
    if chat:  # a list of entries, so two tokens with the same text both count
        content = lp.get("content") or []
        return [(t["token"], t["logprob"]) for t in content[0]["top_logprobs"]] if content else []
    tops = lp.get("top_logprobs") or []
    return list(tops[0].items()) if tops else []


class OpenAITeacher(TaskPrompt, Teacher):
    """Pointwise relevance from an OpenAI-compatible ``/v1/completions`` (or chat) endpoint."""

    def __init__(self, base_url: str, model: str, template: str | None = None, task: str | None = None,
                 api_key: str | None = None, top_logprobs: int = 20, timeout: float = 60,
                 concurrency: int = 4, chat: bool = False, yes: str = "yes", no: str = "no",
                 retries: int = 4, backoff: float = 0.5) -> None:
        self.client = OpenAIClient(base_url, api_key, timeout, retries, backoff)
        self.api = self.client.api
        self.model = model
        self._set_prompt(template, task)
        self.top_logprobs, self.timeout, self.concurrency = top_logprobs, timeout, concurrency
        self.chat, self.yes, self.no = chat, yes.strip(), no.strip()
        self.served_model = self.client.served_model(model, self._request)

    def identity(self) -> dict[str, Any]:
        return {"kind": "llm", "backend": "openai", "model": self.served_model,
                "template": self.template, "chat": self.chat, "top_logprobs": self.top_logprobs,
                "yes": self.yes, "no": self.no, "floor": FLOOR,
                "score": "logsumexp log p(yes variants) - logsumexp log p(no variants)"}

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.client.request(method, path, body)

    def _score_one(self, pair: Pair) -> float:
        text = self.template.format(query=pair.query, passage=pair.passage)
        common = {"model": self.model, "max_tokens": 1, "temperature": 0}
        if self.chat:
            resp = self._request("POST", "/chat/completions", {
                **common, "messages": [{"role": "user", "content": text}],
                "logprobs": True, "top_logprobs": self.top_logprobs})
        else:
            resp = self._request("POST", "/completions",
                                 {**common, "prompt": text, "logprobs": self.top_logprobs})
        try:
            return log_odds(_top_of(resp, self.chat), self.yes, self.no)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            path = "/chat/completions" if self.chat else "/completions"
            raise RkdError(f"{self.api}{path}: no usable top logprobs in the response ({e!r})") from None

    def score(self, pairs: list[Pair]) -> np.ndarray:
        if not pairs:
            return np.zeros(0)
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return np.fromiter(pool.map(self._score_one, pairs), dtype=np.float64, count=len(pairs))
