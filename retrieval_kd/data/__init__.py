"""Datasets: typed corpus / queries / qrels, loaders and the dataset registry."""

from retrieval_kd.data.types import Corpus, Dataset, Document, Qrels, Queries

__all__ = ["Corpus", "Dataset", "Document", "Qrels", "Queries"]
