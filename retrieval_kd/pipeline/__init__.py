"""Pipelines: a YAML file of datasets, first stages, teachers, students, indexes and evals,
run as cached, resumable stages (``rkd run``) and reported (``rkd report``)."""

from retrieval_kd.pipeline.load import LoadedPipeline, PipelineError, load_pipeline
from retrieval_kd.pipeline.plan import Stage, plan
from retrieval_kd.pipeline.registry import STAGES, register
from retrieval_kd.pipeline.runner import describe_plan, run_stages
from retrieval_kd.pipeline.sections import Section, register_section

__all__ = [
           "STAGES",
           "LoadedPipeline",
           "PipelineError",
           "Section",
           "Stage",
           "describe_plan",
           "load_pipeline",
           "plan",
           "register",
           "register_section",
           "run_stages",
]
