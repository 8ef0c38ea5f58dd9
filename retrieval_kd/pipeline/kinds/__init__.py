"""The built-in pipeline sections, one module each (the queries section lives with the query
generator, retrieval_kd/queries/stage.py), registered here in pipeline-file order: the order of
the pipeline model's keys, of the loader's checks and of the stages in a plan."""

from retrieval_kd.pipeline.kinds import datasets, evals, indexes, retrieve, scores, students
from retrieval_kd.pipeline.sections import register_section
from retrieval_kd.queries import stage as queries

BUILTIN = (datasets.SECTION, queries.QUERIES, retrieve.SECTION, scores.TEACHERS, students.SECTION,
           scores.RERANKERS, indexes.SECTION, evals.SECTION)

for _section in BUILTIN:
    register_section(_section)

from retrieval_kd.bench import section as _benchmarks  # noqa: E402, F401 - the benchmarks section, after the built-in ones
