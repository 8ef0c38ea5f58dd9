#!/usr/bin/env bash
# The test suite: installs everything it needs (pyserini, openvino and scale (Ray) extras included), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
RKD_EXTRAS="${RKD_EXTRAS:-cpu,llm,llm-server,dev,pyserini,openvino,scale}" bash scripts/install.sh
source scripts/env.sh
exec python -m pytest -q "$@"
