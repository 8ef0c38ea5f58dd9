"""Row layout of teacher scores (Parquet / Arrow).

Required columns: ``qid`` (string), ``docid`` (string), ``score`` (float64, higher is more
relevant). Optional: ``rank`` (int32, the candidate's rank in the first-stage run) and
``label`` (int32, the qrels grade, null when unjudged).
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA = pa.schema([
    pa.field("qid", pa.string(), nullable=False),
    pa.field("docid", pa.string(), nullable=False),
    pa.field("score", pa.float64(), nullable=False),
    pa.field("rank", pa.int32()),
    pa.field("label", pa.int32()),
])


def make_table(qids: list[str], docids: list[str], scores, ranks=None, labels=None) -> pa.Table:
    """Build a table in :data:`SCHEMA` (missing optional columns are all-null)."""
    n = len(qids)
    return pa.table({
        "qid": pa.array(qids, pa.string()),
        "docid": pa.array(docids, pa.string()),
        "score": pa.array(scores, pa.float64()),
        "rank": pa.array(ranks if ranks is not None else [None] * n, pa.int32()),
        "label": pa.array(labels if labels is not None else [None] * n, pa.int32()),
    }, schema=SCHEMA)


def to_nested(table: pa.Table) -> dict[str, dict[str, float]]:
    """qid -> {docid: score}, in row order."""
    out: dict[str, dict[str, float]] = {}
    for q, d, s in zip(table.column("qid").to_pylist(), table.column("docid").to_pylist(),
                       table.column("score").to_pylist()):
        out.setdefault(q, {})[d] = s
    return out
