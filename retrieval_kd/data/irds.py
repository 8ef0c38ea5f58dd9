"""ir_datasets ids as a data source (needs a network the first time)."""

from __future__ import annotations

from retrieval_kd.data.types import Corpus, Dataset, Document, Qrels, Queries


def load_ir_datasets(dataset_id: str, name: str | None = None, split: str = "test") -> Dataset:
    """Load corpus, queries and qrels of an ir_datasets id into the typed containers."""
    import ir_datasets

    ds = ir_datasets.load(dataset_id)
    docs = {
        d.doc_id: Document(text=getattr(d, "text", "") or "", title=getattr(d, "title", "") or "")
        for d in ds.docs_iter()
    }
    all_q = {q.query_id: getattr(q, "text", None) or q[1] for q in ds.queries_iter()}
    qrels: Qrels = {}
    for r in ds.qrels_iter():
        qrels.setdefault(r.query_id, {})[r.doc_id] = int(r.relevance)
    return Dataset.judged(name or dataset_id, split, Corpus(docs), Queries(all_q), qrels,
                          sources={"ir_datasets": dataset_id})
