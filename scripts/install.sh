#!/usr/bin/env bash
# Create .venv (if missing) and install retrieval-kd with the extras in $RKD_EXTRAS.
# pip (not uv/poetry) keeps torch on the local CPU wheel: see ../shared/install-notes.md.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${RKD_EXTRAS:-cpu,llm,dev,openvino}"  # openvino: the default backend on bf16 CPUs
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
# llama-cpp-python (extra llm-server) compiles llama.cpp for this CPU's vector extensions, never
# -march=native or AMX (scripts/llama_flags.sh says why).
export CMAKE_ARGS="${CMAKE_ARGS:-$(bash scripts/llama_flags.sh)}"
# --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS, so a cached llama-cpp-python wheel built
# with other flags (e.g. native) would be reused silently.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-cache-dir -e ".[${extras}]" 2>&1 \
  | { grep -v "^WARNING: Location 'file:" || true; }
