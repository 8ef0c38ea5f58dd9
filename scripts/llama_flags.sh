#!/usr/bin/env bash
# CMake flags for compiling llama.cpp (llama-cpp-python) on this machine: AVX2 always, plus the
# AVX512 / VNNI / BF16 kernels this CPU has (1.1-1.6x prompt evaluation on an AVX512 Xeon,
# research/llm/FINDINGS.md). Never -march=native and never AMX: ggml's AMX kernels took SIGILL at
# their first tile instruction on a Xeon where oneDNN's AMX kernels run.
# The flags describe the build host, which install.sh makes the run host (the wheel is not cached).
# Usage: llama_flags.sh [cpuinfo file]   (default /proc/cpuinfo; prints one line)
set -euo pipefail
cpu=" $(grep -m1 '^flags' "${1:-/proc/cpuinfo}" 2>/dev/null | cut -d: -f2) "
has() { local f; for f in "$@"; do [[ "$cpu" == *" $f "* ]] || return 1; done; }
args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
if has avx_vnni; then args+=" -DGGML_AVX_VNNI=ON"; fi
if has avx512f avx512cd avx512vl avx512dq avx512bw; then  # what GGML_AVX512 compiles for
  args+=" -DGGML_AVX512=ON"
  if has avx512vbmi; then args+=" -DGGML_AVX512_VBMI=ON"; fi
  if has avx512_vnni; then args+=" -DGGML_AVX512_VNNI=ON"; fi
  if has avx512_bf16; then args+=" -DGGML_AVX512_BF16=ON"; fi
fi
echo "$args"
