#!/usr/bin/env bash
# Create .venv (if missing) and install retrieval-kd with the extras in $RKD_EXTRAS.
# pip (not uv/poetry) keeps torch on the local CPU wheel: see ../shared/install-notes.md.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${RKD_EXTRAS:-cpu,llm,dev,openvino}"  # openvino: the default backend on bf16 CPUs
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
# llama-cpp-python (extra llm-server) compiles llama.cpp: portable AVX2 flags, not -march=native
# (a native build segfaulted here on an AMX CPU; CI machines may differ from the build host).
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}"
# --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS, so a cached llama-cpp-python wheel built
# with other flags (e.g. native) would be reused silently.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-cache-dir -e ".[${extras}]" 2>&1 \
  | { grep -v "^WARNING: Location 'file:" || true; }
