"""Benchmarks a user runs, each writing its tables to eval/results/: ``python -m eval.<name>``
from the repository root (bench_speed, bench_score, bench_index, bench_colbert_engines, bench_blas,
xling_eval); pipelines/ beside them are run with ``rkd run``."""
