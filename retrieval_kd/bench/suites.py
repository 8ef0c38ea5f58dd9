"""Benchmark suites (``suites.yaml``): the rows of a suite's table and where their data is.

A suite lists registry datasets; each becomes one row of the table, or one row per subset for
an entry whose protocol reports its subsets separately (MIRACL's languages). A row is made of
units, the datasets actually retrieved on: one, or every subset of an entry whose protocol
averages them (BEIR's CQADupStack, 12 sub-forums). A row is runnable when every unit has a
complete local copy; otherwise it is listed with where it was looked for and its sources.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retrieval_kd.data.registry import DatasetSpec, Reference, missing_local, registry
from retrieval_kd.errors import DataError, NotFoundError

SUITES_FILE = Path(__file__).with_name("suites.yaml")


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    split: str = "test"
    datasets: list[str] = Field(min_length=1)


@dataclass(frozen=True)
class Unit:
    """One dataset split to retrieve on: ``source`` is what load_dataset gets."""

    source: str
    split: str
    subset: str | None = None


@dataclass
class Row:
    """One row of a suite's table."""

    label: str
    """``scifact``, ``miracl:sw``, ``xquad-r:de-en``."""
    spec: DatasetSpec
    split: str
    units: list[Unit]
    metrics: list[str]
    average_of_subsets: bool = False
    missing: dict[str, list[str]] = field(default_factory=dict)
    """unit source -> what its local copy lacks (empty: runnable)."""

    @property
    def available(self) -> bool:
        return not self.missing

    def references(self, system: str) -> list[Reference]:
        """The registry's published numbers for ``system`` on this row (a subset's own; for an
        averaged row, each label's mean over the subsets when every subset has one)."""
        refs = [r for r in self.spec.references.get(self.split, []) if r.system == system]
        if not self.spec.subsets:
            return refs
        if not self.average_of_subsets:
            return [r for r in refs if r.subset == self.units[0].subset]
        out = []
        for label in dict.fromkeys(r.label for r in refs):
            same = [r for r in refs if r.label == label]
            if {r.subset for r in same} >= set(self.spec.subsets):
                vals = [r.value for r in same if r.subset in self.spec.subsets]
                out.append(Reference(system=system, label=f"{label} (mean of {len(vals)})", metric=same[0].metric,
                                     value=sum(vals) / len(vals), source=same[0].source))
        return out

    def where(self) -> dict[str, object]:
        """Where the data was looked for, and where it can be had (for the 'not available' list)."""
        local = self.spec.local_dir()
        if not local.is_dir():
            missing: dict[str, list[str]] = {"": ["the folder itself"]}
        elif len({tuple(v) for v in self.missing.values()}) == 1 and len(self.missing) == len(self.units):
            missing = {"": next(iter(self.missing.values()))}
        else:
            missing = self.missing
        subset = "{subset}" if len(self.units) > 1 else self.units[0].subset
        return {"local": str(local), "missing": missing,
                "sources": self.spec.download_sources(self.split, subset)}


@lru_cache(maxsize=1)
def suites() -> dict[str, Suite]:
    raw = yaml.safe_load(SUITES_FILE.read_text(encoding="utf-8")) or {}
    out = {}
    for name, entry in raw.items():
        try:
            out[name] = Suite(name=name, **entry)
        except (TypeError, ValidationError) as e:
            raise DataError(SUITES_FILE, f"suite '{name}': {e}") from None
    return out


def get_suite(name: str) -> Suite:
    s = suites()
    if name not in s:
        raise NotFoundError(f"unknown suite '{name}' (suites: {', '.join(s)}; {SUITES_FILE})")
    return s[name]


def _parse(item: str, default_split: str) -> tuple[str, str | None, str]:
    ref, _, split = item.partition("@")
    name, _, variant = ref.partition(":")
    return name, variant or None, split or default_split


def suite_rows(suite: Suite) -> list[Row]:
    """The suite's rows in file order, each with its availability checked."""
    reg, rows = registry(), []
    for item in suite.datasets:
        name, variant, split = _parse(item, suite.split)
        if name not in reg:
            raise DataError(SUITES_FILE, f"suite '{suite.name}': '{item}' is not a registered dataset")
        spec = reg[name]
        if split not in spec.splits:
            raise DataError(SUITES_FILE, f"suite '{suite.name}': '{item}': no split '{split}' ({spec.splits})")
        metrics = spec.protocol.metrics_for(split)
        if spec.subsets and variant is None:
            units = [Unit(f"{name}:{s}", split, s) for s in spec.subsets]
            if spec.protocol.subsets == "average":
                rows.append(Row(name, spec, split, units, metrics, average_of_subsets=True))
            else:
                rows += [Row(u.source, spec, split, [u], metrics) for u in units]
        else:
            subset = variant if spec.subsets else None
            rows.append(Row(f"{name}:{variant}" if variant else name, spec, split,
                            [Unit(f"{name}:{variant}" if variant else name, split, subset)], metrics))
    for row in rows:
        for u in row.units:
            if lacks := missing_local(row.spec, u.split, u.subset):
                row.missing[u.source] = lacks
    return rows
