"""Benchmark suites: a system run over every locally available dataset of a suite (BEIR, MS MARCO /
TREC DL, cross-lingual, MIRACL, Mr. TyDi) into one table beside the published numbers."""
