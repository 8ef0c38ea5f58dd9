"""A listwise LLM teacher: RankGPT-style sliding windows, permutations turned into graded targets.

Each query's candidates start in their first-stage order (the order the score store hands
them over: run rank, forced positives last). A window of ``window`` passages slides from the
back of the list to the front in steps of ``step`` (RankGPT's order, so a relevant passage
can climb to the top in one pass); the last window always starts at the top. For each window
the model is asked (greedy, temperature 0) for a permutation ``[3] > [1] > [2] ...`` of the
window's passages, which reorders them in place. ``passes`` repeats the whole sweep.

Small chat models tend to answer with the ids in the order they were shown, which hands the
first stage's order back. ``orders`` > 1 runs the sweeps from several input orders
(permutation self-consistency, Tang et al., NAACL 2024): the first-stage order, then
``orders - 1`` shuffles seeded by the query id (so a rerun gives the same scores); the final
order sorts the candidates by their mean rank over those rankings (ties: first-stage order).

The answer is parsed forgivingly (:func:`parse_permutation`): bracketed ids are read (bare
numbers when no bracket is found), repeated ids and ids outside ``1..n`` are dropped, and ids
the answer misses keep their prior order after those it ranked. Every repair is counted:
the counts of a chunk of queries go with its rows (the Parquet part's metadata, key
``rkd.teacher_stats``) and the store's manifest sums them (``teacher_stats``).

Rank-to-score map (:func:`rank_scores`), over a query's ``n`` candidates at final rank ``r``
(1 = best): ``neg_log_rank`` (default) ``score = -ln(r)``: 0 for the top, -0.69, -1.10, ...,
gaps shrinking with depth like the attention a ranking gets, so a softmax over the scores
(the KL loss, temperature 1) gives mass ``1/r / H_n``: Zipf over ranks; ``linear``
``score = (n - r) / (n - 1)``: 1 for the top, 0 for the last, equal gaps (Margin-MSE sees
the same margin for every step). Both are graded targets for the KL / Margin-MSE losses;
scores of different queries are not comparable (as with any per-query teacher).

Backends: ``llama.cpp`` (a local GGUF model, :mod:`retrieval_kd.teachers.gguf`) or ``openai``
(an OpenAI-compatible server: vLLM, llama.cpp server; ``concurrency`` queries at a time).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from retrieval_kd.errors import DataError, RkdError
from retrieval_kd.teachers.base import Pair, Teacher, add_counts
from retrieval_kd.teachers.prompts import LISTWISE_SYSTEM, TaskPrompt, listwise_max_new_tokens

RANK_MAPS = ("neg_log_rank", "linear")
REPAIRS = ("windows", "unparsed", "missing", "duplicate", "unknown")
"""Counted per window: windows asked, answers with no id at all (prior order kept), ids
missing (appended), repeated (dropped), outside 1..n (dropped)."""

_BRACKET = re.compile(r"\[\s*(\d+)\s*\]")
_NUMBER = re.compile(r"\d+")


def parse_permutation(text: str, n: int) -> tuple[list[int], dict[str, int]]:
    """The 0-based order of ``n`` items an answer like ``[2] > [1] > [3]`` gives, repaired, and
    the repair counts (keys of :data:`REPAIRS`)."""
    found = [int(x) for x in _BRACKET.findall(text)] or [int(x) for x in _NUMBER.findall(text)]
    counts = dict.fromkeys(REPAIRS, 0)
    counts["windows"] = 1
    order: list[int] = []
    seen: set[int] = set()
    for k in found:
        if not 1 <= k <= n:
            counts["unknown"] += 1
        elif k - 1 in seen:
            counts["duplicate"] += 1
        else:
            seen.add(k - 1)
            order.append(k - 1)
    missing = [i for i in range(n) if i not in seen]
    counts["missing"] = len(missing) if order else 0
    counts["unparsed"] = int(not order)
    return order + missing, counts


def rank_scores(order: list[int], kind: str = "neg_log_rank") -> np.ndarray:
    """Scores of items ``0..n-1`` given their final ``order`` (best first); see the module doc."""
    n = len(order)
    ranks = np.empty(n, dtype=np.float64)
    ranks[np.asarray(order, dtype=np.int64)] = np.arange(1, n + 1)
    if kind == "neg_log_rank":
        return 0.0 - np.log(ranks)  # +0.0 at the top, not -0.0
    if kind == "linear":
        return (n - ranks) / (n - 1) if n > 1 else np.ones(n)
    raise DataError("<teacher spec>", f"unknown rank_map '{kind}' (known: {', '.join(RANK_MAPS)})")


def sliding_windows(n: int, window: int, step: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each window, back to front; the last one starts at 0."""
    if window < 2 or not 1 <= step <= window:
        raise DataError("<teacher spec>", f"need window >= 2 and 1 <= step <= window (got {window}, {step})")
    out, end = [], n
    while n > 1:
        start = max(end - window, 0)
        out.append((start, end))
        if start == 0:
            break
        end -= step
    return out


# -- generators: (system, user) -> the model's answer ------------------------------------------

class LlamaGenerator:
    """Greedy answers of a local GGUF model (llama.cpp)."""

    def __init__(self, model: str, n_ctx: int, threads: int | None, chat: bool | None) -> None:
        from retrieval_kd.models.resolve import resolve_model
        from retrieval_kd.teachers.gguf import _gguf_file, load_llama, ref_identity

        ref = resolve_model(model)
        path = _gguf_file(ref)
        if path is None:
            raise DataError("<llm-listwise teacher>", f"{model}: backend llama.cpp needs a GGUF file")
        self.model = ref_identity(ref)
        self.llm = load_llama(path, n_ctx=n_ctx, threads=threads)
        has_template = bool(self.llm.metadata.get("tokenizer.chat_template"))
        self.chat = has_template if chat is None else chat
        if self.chat and not has_template:
            raise DataError("<llm-listwise teacher>", f"{model}: chat=True but the GGUF has no chat template")
        self.lock = threading.Lock()  # one context: one answer at a time

    def __call__(self, system: str, user: str, max_tokens: int) -> str:
        with self.lock:
            try:
                if self.chat:
                    r = self.llm.create_chat_completion(
                        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                        temperature=0.0, max_tokens=max_tokens, seed=0)
                    return r["choices"][0]["message"]["content"] or ""
                r = self.llm.create_completion(f"{system}\n\n{user}\n", temperature=0.0,
                                               max_tokens=max_tokens, seed=0)
                return r["choices"][0]["text"] or ""
            except ValueError as e:  # llama.cpp: the prompt exceeds the context
                raise RkdError(f"llama.cpp: {e}; lower window or passage_words, or raise n_ctx") from None

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
        self.llm = None


class ServerGenerator:
    """Greedy answers of an OpenAI-compatible server (``/chat/completions`` or ``/completions``)."""

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout: float, chat: bool | None,
                 retries: int = 4, backoff: float = 0.5) -> None:
        from retrieval_kd.openai_client import OpenAIClient

        self.client = OpenAIClient(base_url, api_key, timeout, retries, backoff)
        self.name = model
        self.model = self.client.served_model(model, self.client.request)
        self.chat = True if chat is None else chat

    def __call__(self, system: str, user: str, max_tokens: int) -> str:
        common = {"model": self.name, "max_tokens": max_tokens, "temperature": 0, "seed": 0}
        if self.chat:
            resp = self.client.request("POST", "/chat/completions", {
                **common, "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]})
        else:
            resp = self.client.request("POST", "/completions", {**common, "prompt": f"{system}\n\n{user}\n"})
        try:
            choice = resp["choices"][0]
            return (choice["message"]["content"] if self.chat else choice["text"]) or ""
        except (KeyError, IndexError, TypeError) as e:
            raise RkdError(f"{self.client.api}: no answer in the response ({e!r})") from None

    def close(self) -> None:
        pass


class ListwiseTeacher(TaskPrompt, Teacher):
    """Scores = a rank-to-score map of each query's candidates as an LLM permutes them."""

    FIELDS = frozenset({"query", "passages", "n"})
    LISTWISE = True

    def __init__(self, generate: Callable[[str, str, int], str], model_identity: Any, backend: str,
                 template: str | None = None, task: str | None = None, window: int = 20, step: int = 10,
                 passes: int = 1, orders: int = 1, passage_words: int = 100, rank_map: str = "neg_log_rank",
                 max_new_tokens: int | None = None, chat: bool = True, concurrency: int = 1) -> None:
        self._set_prompt(template, task)
        sliding_windows(window + 1, window, step)  # checks window and step
        rank_scores([0], rank_map)  # checks the map's name
        if passes < 1 or orders < 1 or passage_words < 1:
            raise DataError("<teacher spec>", "passes, orders and passage_words must be >= 1")
        self.generate, self.model_identity, self.backend = generate, model_identity, backend
        self.window, self.step, self.passes, self.passage_words = window, step, passes, passage_words
        self.orders = orders
        self.rank_map, self.chat, self.concurrency = rank_map, chat, max(1, concurrency)
        self.max_new_tokens = max_new_tokens or listwise_max_new_tokens(window)
        self._stats: dict[str, int] = {}
        self._lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        out = {"kind": "llm-listwise", "backend": self.backend, "model": self.model_identity,
               "template": self.template, "system": LISTWISE_SYSTEM, "chat": self.chat,
               "window": self.window, "step": self.step, "passes": self.passes,
               "passage_words": self.passage_words, "rank_map": self.rank_map,
               "max_new_tokens": self.max_new_tokens, "decoding": "greedy"}
        if self.orders > 1:  # absent at 1: stores made before the option keep their identity
            out.update(orders=self.orders, order_seed="blake2b-64(qid)", aggregate="mean-rank")
        return out

    def prompt(self, query: str, passages: list[str]) -> str:
        body = "\n".join(f"[{i}] {' '.join(p.split()[:self.passage_words])}" for i, p in enumerate(passages, 1))
        return self.template.format(query=query, passages=body, n=len(passages))

    def sweep(self, query: str, passages: list[str], order: list[int]) -> tuple[list[int], dict[str, int]]:
        """``order`` (indices into ``passages``) after ``passes`` window sweeps, and the repair counts."""
        order, stats = list(order), dict.fromkeys(REPAIRS, 0)
        for _ in range(self.passes):
            for s, e in sliding_windows(len(order), self.window, self.step):
                sub = order[s:e]
                answer = self.generate(LISTWISE_SYSTEM, self.prompt(query, [passages[i] for i in sub]),
                                       self.max_new_tokens)
                perm, counts = parse_permutation(answer, len(sub))
                order[s:e] = [sub[i] for i in perm]
                add_counts(stats, counts)
        return order, stats

    def rank_query(self, query: str, passages: list[str], qid: str = "") -> tuple[list[int], dict[str, int]]:
        """Final order (indices into ``passages``, best first) and the repair counts: one sweep
        from the first-stage order, or the mean rank over ``orders`` input orders."""
        n = len(passages)
        order, stats = self.sweep(query, passages, list(range(n)))
        if self.orders == 1:
            return order, stats
        rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(qid.encode(), digest_size=8).digest(), "big"))
        rank_sum = np.empty(n)
        rank_sum[order] = np.arange(n)
        for _ in range(self.orders - 1):
            shuffled, more = self.sweep(query, passages, [int(i) for i in rng.permutation(n)])
            rank_sum[shuffled] += np.arange(n)
            add_counts(stats, more)
        return sorted(range(n), key=lambda i: (rank_sum[i], i)), stats

    def score(self, pairs: list[Pair]) -> np.ndarray:
        if not pairs:
            return np.zeros(0)
        if self.generate is None:
            raise RkdError("this listwise teacher was closed; build a new one to score")
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(pairs):  # a query's candidates, in the order given (first-stage)
            groups.setdefault(p.qid, []).append(i)
        out = np.empty(len(pairs), dtype=np.float64)

        def one(idx: list[int]) -> dict[str, int]:
            order, stats = self.rank_query(pairs[idx[0]].query, [pairs[i].passage for i in idx], pairs[idx[0]].qid)
            out[np.asarray(idx)] = rank_scores(order, self.rank_map)
            return stats

        if self.concurrency > 1 and len(groups) > 1:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                results = list(pool.map(one, groups.values()))
        else:
            results = [one(idx) for idx in groups.values()]
        with self._lock:
            for st in results:
                add_counts(self._stats, st)
        return out

    def take_stats(self) -> dict[str, int] | None:
        """Repair counts since the last call (the score store keeps them with each part)."""
        with self._lock:
            stats, self._stats = self._stats, {}
        return stats or None

    def close(self) -> None:
        gen, self.generate = self.generate, None
        if gen is not None and hasattr(gen, "close"):
            gen.close()

