"""Indexes: dense (FAISS flat / HNSW / IVF-PQ), SPLADE (inverted), ColBERT (late interaction).

* :mod:`~retrieval_kd.index.chunks`: resumable chunked corpus encoding.
* :mod:`~retrieval_kd.index.encoders`: the dense, SPLADE and token (ColBERT) encoders.
* :mod:`~retrieval_kd.index.faiss_index`: FAISS index construction and search parameters.
* :mod:`~retrieval_kd.index.sparse`: posting lists, sparse dot-product search, FLOPS.
* :mod:`~retrieval_kd.index.late`: token storage, candidate generation, exact MaxSim.
* :mod:`~retrieval_kd.index.plaid`: the ``plaid`` ColBERT engine (centroid pruning, then exact
  MaxSim on the survivors).
* :mod:`~retrieval_kd.index.build` / :mod:`~retrieval_kd.index.search`: the ``rkd index`` and
  ``rkd search`` stages (index directory / run directory with ``manifest.json``).
"""
