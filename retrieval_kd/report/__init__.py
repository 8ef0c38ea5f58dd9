"""Run reports: the systems' metrics with significance, stage timings and figures."""

from retrieval_kd.report.collect import RunReport, collect
from retrieval_kd.report.render import verify, write_report

__all__ = ["RunReport", "collect", "verify", "write_report"]
