#!/usr/bin/env bash
# The main job: install, then the SciFact pipeline (pipelines/scifact.yaml) end to end:
# BM25, the ensemble teacher's scores, BERT-tiny bi-encoder and ColBERT students (distilled and
# their label-only twins, three seeds each), their indexes, evaluation on test and the report.
# A second run skips every finished stage; a killed run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
source scripts/env.sh
rkd run pipelines/scifact.yaml "$@"
r=runs/scifact/report/report.md  # (a run limited with --only writes no report)
if [ -f "$r" ]; then echo "report: $(pwd)/$r (and report.html)"; fi
