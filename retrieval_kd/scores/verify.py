"""Check a store against the dataset it claims to have scored."""

from __future__ import annotations

from dataclasses import dataclass, field

from retrieval_kd.data.types import Dataset
from retrieval_kd.scores.store import ScoreStore, text_hash


@dataclass
class VerifyReport:
    rows: int = 0
    missing_queries: list[str] = field(default_factory=list)
    missing_docs: list[str] = field(default_factory=list)
    changed_queries: list[str] = field(default_factory=list)
    changed_passages: list[str] = field(default_factory=list)
    duplicates: int = 0
    row_count_expected: int | None = None
    dataset_mismatch: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_queries or self.missing_docs or self.changed_queries
                    or self.changed_passages or self.duplicates or self.dataset_mismatch
                    or (self.row_count_expected is not None and self.rows != self.row_count_expected))

    def lines(self, examples: int = 5) -> list[str]:
        out = []
        for label, items in (("queries absent from the dataset", self.missing_queries),
                             ("documents absent from the corpus", self.missing_docs),
                             ("queries whose text changed since scoring", self.changed_queries),
                             ("passages whose text changed since scoring", self.changed_passages)):
            if items:
                out.append(f"{len(items)} {label} (e.g. {', '.join(items[:examples])})")
        if self.duplicates:
            out.append(f"{self.duplicates} duplicated (qid, docid) rows")
        if self.row_count_expected is not None and self.rows != self.row_count_expected:
            out.append(f"{self.rows} rows, manifest says {self.row_count_expected}")
        out += self.dataset_mismatch
        return out


def verify_store(store: ScoreStore, ds: Dataset) -> VerifyReport:
    """Recompute every row's query and passage text hash from ``ds`` and compare."""
    man = store.manifest
    t = store.table(with_hashes=True, check=False)  # row by row: report, do not stop at a part
    rep = VerifyReport(rows=t.num_rows, row_count_expected=man.get("n_rows"))
    inputs = man.get("inputs", {})
    if inputs.get("dataset") not in (None, ds.name) or inputs.get("split") not in (None, ds.split):
        rep.dataset_mismatch.append(
            f"store scored {inputs.get('dataset')}/{inputs.get('split')}, "
            f"checked against {ds.name}/{ds.split}")
    seen: set[tuple[str, str]] = set()
    bad_q: dict[str, None] = {}
    bad_p: dict[str, None] = {}
    cols = [t.column(c).to_pylist() for c in ("qid", "docid", "q_hash", "p_hash")]
    for qid, did, qh, ph in zip(*cols):
        if (qid, did) in seen:
            rep.duplicates += 1
        seen.add((qid, did))
        qtext = ds.queries.texts.get(qid)
        if qtext is None:
            if qid not in rep.missing_queries:
                rep.missing_queries.append(qid)
        elif text_hash(qtext) != qh:
            bad_q[qid] = None
        doc = ds.corpus.docs.get(did)
        if doc is None:
            if did not in rep.missing_docs:
                rep.missing_docs.append(did)
        elif text_hash(doc.joined()) != ph:
            bad_p[did] = None
    rep.changed_queries, rep.changed_passages = list(bad_q), list(bad_p)
    return rep
