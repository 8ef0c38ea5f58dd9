"""The ``datasets`` section: aliases for dataset sources, or for generated queries.

A datasets entry has no stages of its own: a ``{queries: NAME}`` entry is the folder the
queries section's stage writes (retrieval_kd/queries/stage.py), with ``filter`` that stage's
teacher-filtered copy. Checking the entries resolves every alias (``LoadedPipeline.datasets``),
which the other sections' checks and stages read, so this section comes first.
"""

from __future__ import annotations

from pydantic import model_validator

from retrieval_kd.pipeline.load import Checks, LoadedPipeline, Problem, _dataset_source, dataset_splits
from retrieval_kd.pipeline.schema import Name, _Strict
from retrieval_kd.pipeline.sections import Section
from retrieval_kd.queries.params import QueryFilter


class DatasetEntry(_Strict):
    source: str | None = None
    """A registered dataset name (``rkd data list``) or a dataset directory (relative to the
    pipeline file, else to the working directory)."""
    queries: Name | None = None
    """Instead of ``source``: the BEIR folder a ``queries`` entry generates (retrieval_kd/queries)."""
    filter: QueryFilter | None = None
    """With ``queries``: only the queries whose passage a teacher ranks within its top_k."""

    @model_validator(mode="after")
    def _one_origin(self) -> DatasetEntry:
        if (self.source is None) == (self.queries is None):
            raise ValueError("give exactly one of 'source' (a dataset) and 'queries' (a queries entry)")
        if self.filter is not None and self.queries is None:
            raise ValueError("'filter' filters generated queries: it goes with 'queries'")
        return self


class Datasets(Section):
    name = "datasets"
    entry = DatasetEntry
    required = True

    def check(self, c: Checks) -> list[Problem]:
        p, base, bad = c.p, c.base, c.bad
        lp = c.lp
        for alias, entry in p.datasets.items():
            if entry.queries is not None:  # generated: retrieval_kd/queries/stage.py
                from retrieval_kd.queries.stage import derived_source, filter_problem

                lp.datasets[alias] = derived_source(entry.queries, entry.filter and alias)
                lp.derived[alias] = entry.queries
                if entry.queries not in p.queries:
                    bad(("datasets", alias, "queries"), f"no queries entry '{entry.queries}' "
                                                        f"(queries: {', '.join(p.queries) or 'none'})")
                elif entry.filter is not None and (why := filter_problem(p, entry)):
                    bad(("datasets", alias, "filter", "teacher"), why)
                continue
            src, local = _dataset_source(entry.source, base)
            lp.datasets[alias] = src
            if c.check_sources and local is None and src == entry.source:
                from retrieval_kd.data.registry import registry
                from retrieval_kd.settings import offline

                prefix = src.split(":", 1)[0]
                if src not in registry() and prefix not in registry():
                    bad(("datasets", alias, "source"),
                        f"dataset '{entry.source}' is neither registered ({', '.join(registry())}) "
                        f"nor a directory (looked in {base} and the working directory)")
                elif offline():
                    bad(("datasets", alias, "source"),
                        f"dataset '{entry.source}' has no local copy and downloads are off (offline)")
        return c.problems

    def splits(self, lp: LoadedPipeline, alias: str) -> list[str] | None:
        """The splits dataset ``alias`` has, when that can be known before loading it."""
        from retrieval_kd.queries.stage import splits_of

        return splits_of(lp, alias) or dataset_splits(lp.datasets[alias])


SECTION = Datasets()
