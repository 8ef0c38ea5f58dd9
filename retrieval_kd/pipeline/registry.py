"""The stage registry: stage kind -> adapter ``fn(config, inputs, out) -> result``.

An adapter receives its stage's config (plain JSON data from the pipeline file, dataset
sources resolved), ``inputs`` (input name -> the finished upstream stage directory) and
``out``, the directory it must fill. ``out`` does not exist when the adapter starts unless
the adapter is ``resumable`` (then it is the same directory the previous, interrupted
attempt used, so finished pieces can be kept). The runner renames ``out`` into place once
the adapter returns; the adapter never needs to be atomic itself.

The returned dict (may be empty) is stored in the stage record. Conventions the report and
other adapters read:

``run``                 a TREC run file in ``out`` (relative path)
``model``               a trained model folder in ``out`` (relative path)
``store``               a score store folder in ``out`` (relative path)
``throughput``          {name: value}, e.g. ``queries_per_s``, ``pairs_per_s``
``latency_ms_per_query`` mean time to answer one query, end to end for this system
``parameters``          the model's parameter count (a teacher ensemble: its members' sum,
                        BM25 counting 0), from safetensors headers (models/params.py)
``loss_log``            a JSON/JSONL training-loss log in ``out`` (relative path)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Adapter = Callable[[dict[str, Any], dict[str, Path], Path], "dict[str, Any] | None"]


@dataclass(frozen=True)
class StageKind:
    kind: str
    fn: Adapter
    resumable: bool = False
    version: int = 1
    """Bump when the adapter's output for the same config changes: every key changes."""
    runtime_keys: frozenset[str] = field(default_factory=frozenset)
    """Config keys (at any depth) that do not change the output and stay out of the key."""
    requires: str | None = None
    """A module the adapter needs; a pipeline using the kind fails before any stage runs
    when it is missing."""

    def missing(self) -> str | None:
        if self.requires is None:
            return None
        import importlib.util

        try:
            found = importlib.util.find_spec(self.requires) is not None
        except ModuleNotFoundError:
            found = False
        return None if found else self.requires


STAGES: dict[str, StageKind] = {}


def register(kind: str, *, resumable: bool = False, version: int = 1,
             runtime_keys: tuple[str, ...] = (), requires: str | None = None
             ) -> Callable[[Adapter], Adapter]:
    """Register ``fn`` as the adapter of stage ``kind``."""

    def deco(fn: Adapter) -> Adapter:
        STAGES[kind] = StageKind(kind, fn, resumable, version, frozenset(runtime_keys), requires)
        return fn

    return deco


def unregister(kind: str) -> None:
    """Remove stage ``kind``'s adapter (tests registering their own)."""
    STAGES.pop(kind, None)


def stage_kind(kind: str) -> StageKind:
    from retrieval_kd.pipeline.sections import sections

    sections()  # the built-in sections' modules register their kinds
    if kind not in STAGES:
        from retrieval_kd.errors import RkdError

        raise RkdError(f"no adapter for stage kind '{kind}' (known: {', '.join(sorted(STAGES))})")
    return STAGES[kind]
