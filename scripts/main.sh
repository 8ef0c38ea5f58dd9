#!/usr/bin/env bash
# The main job: install, then BM25 and all-MiniLM-L6-v2 dense baselines on SciFact test, evaluated.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
source scripts/env.sh
rkd retrieve bm25 --dataset scifact --split test --out runs/scifact-test/bm25
rkd models fetch minilm-l6
rkd retrieve dense --dataset scifact --split test --model minilm-l6 --out runs/scifact-test/minilm-l6
rkd eval runs/scifact-test/bm25 runs/scifact-test/minilm-l6 --dataset scifact --split test \
  --out eval/results/scifact-test-baselines
