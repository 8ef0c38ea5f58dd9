"""Generated training queries (doc2query / InPars style): one query per sampled corpus passage,
written by a local GGUF model or an OpenAI-compatible server, cleaned, and saved as a BEIR
folder whose qrels point each query at its passage, so a teacher can label data that has no
human labels. ``rkd queries generate`` and the pipeline's ``queries`` section use it."""

from retrieval_kd.queries.clean import CleanRules, clean_query
from retrieval_kd.queries.params import DEFAULT_TEMPLATE, QueriesEntry, QueryGenParams

__all__ = ["DEFAULT_TEMPLATE", "CleanRules", "QueriesEntry", "QueryGenParams", "clean_query",
           "generate_queries"]


def __getattr__(name: str):
    if name == "generate_queries":
        from retrieval_kd.queries.generate import generate_queries

        return generate_queries
    raise AttributeError(name)
