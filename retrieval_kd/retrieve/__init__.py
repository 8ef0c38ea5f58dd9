"""First-stage retrieval: BM25 (bm25s, or pyserini) and exact dense search (FAISS flat)."""
