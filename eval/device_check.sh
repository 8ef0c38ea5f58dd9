#!/usr/bin/env bash
# The GPU paths, checked in one go on a machine with a GPU (issue 20, point 6), within 8 minutes:
#   1. faiss GPU: flat and IVF-PQ (+ refine) built and searched on the GPU vs the CPU, 1M x 128
#   2. CUDA training: rkd train under torchrun (nccl) on 1 GPU and on all GPUs
#   3. Ray GPU actors: rkd score --ray local --ray-workers <GPUs> --ray-gpus 1 vs one process
#   4. an LLM teacher on a vLLM or llama.cpp OpenAI-compatible server (wheel and RKD_DEVICE_LLM model there)
# Each step runs under `timeout`; a step whose library or wheel is missing is recorded as skipped.
# Figures: eval/results/device-check/device-check.{json,md} (and $OUT/, when set, for the device tool).
#
# Usage: bash eval/device_check.sh [--dry-run] [--wheels DIR] [--no-install] [--work DIR]
#   --dry-run     print the plan (what would be installed and run, each step's time limit) and exit
#   --wheels DIR  install these wheels only, no registry (a machine without one: fetch them beforehand
#                 with pip download --only-binary=:all: --python-version 3.12 ..., see docs/operations.md)
#   --no-install  use the Python environment as it is
# Without a GPU it prints one line and exits with status 3, having run and written nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

DRY=0 WHEELS="" INSTALL=1 WORK="${TMPDIR:-/tmp}/rkd-device-check"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --wheels) WHEELS="$2"; shift ;;
    --no-install) INSTALL=0 ;;
    --work) WORK="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "device_check: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PY="${PYTHON:-python3}"
RESULTS="$REPO/eval/results/device-check"
# seconds per step; the sum stays within the 8-minute budget
T_INSTALL=100 T_FAISS=110 T_TRAIN=120 T_RAY=80 T_SERVER=60 T_REPORT=10
TOTAL=$((T_INSTALL + T_FAISS + T_TRAIN + T_RAY + T_SERVER + T_REPORT))

gpu_count() {
  local n=0
  if command -v nvidia-smi >/dev/null 2>&1; then
    n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
  fi
  if [ "${n:-0}" -eq 0 ]; then
    n=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
  fi
  echo "${n:-0}"
}

if [ -n "$WHEELS" ]; then
  INSTALL_CMD="$PY -m pip install -q --no-index --no-deps $WHEELS/*.whl (the repo on PYTHONPATH)"
else
  INSTALL_CMD="$PY -m pip install -q -e .[scale] faiss-gpu-cu12 (else .[gpu]; the machine's torch is kept)"
fi
[ "$INSTALL" -eq 0 ] && INSTALL_CMD="none (--no-install)"

NGPU=$(gpu_count)
if [ "$DRY" -eq 1 ]; then
  cat <<EOF
device_check plan (budget ${TOTAL} s of 480):
  gpus seen now:   ${NGPU}
  install (${T_INSTALL} s): ${INSTALL_CMD}, only if retrieval_kd's dependencies are missing
  1. faiss (${T_FAISS} s): flat and IVF-PQ + refine on 1,000,000 x 128, GPU vs CPU: build s, QPS, recall@10
  2. train (${T_TRAIN} s): rkd train (tiny bi-encoder, InfoNCE) under torchrun on 1 GPU and on all ${NGPU}: examples/s
  3. ray (${T_RAY} s): rkd score --ray local --ray-workers ${NGPU} --ray-gpus 1 vs one process: same rows, seconds
  4. server (${T_SERVER} s): LLM teacher on a vLLM / llama.cpp server (needs the wheel and RKD_DEVICE_LLM=${RKD_DEVICE_LLM:-unset})
  report (${T_REPORT} s): ${RESULTS}/device-check.{json,md}${OUT:+ and copies in \$OUT=$OUT}
  work folder: ${WORK}
EOF
  [ "$NGPU" -eq 0 ] && echo "  (no GPU here: a real run would stop at once with status 3)"
  exit 0
fi

if [ "$NGPU" -eq 0 ]; then
  echo "device_check: no GPU found (nvidia-smi and torch see none): nothing to check; run this on a GPU machine"
  exit 3
fi

START=$(date +%s)
mkdir -p "$WORK" "$RESULTS"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
log() { echo "[device_check $(date +%H:%M:%S)] $*"; }

if [ "$INSTALL" -eq 1 ] && ! "$PY" -c 'import retrieval_kd.cli.main, faiss, pydantic, bm25s, ranx' 2>/dev/null; then
  log "installing: ${INSTALL_CMD}"
  if [ -n "$WHEELS" ]; then
    # the carried wheels as they are (the repo itself is on PYTHONPATH): no registry is asked
    timeout "$T_INSTALL" "$PY" -m pip install -q --no-index --no-deps --no-compile "$WHEELS"/*.whl \
      || log "install from $WHEELS incomplete: the steps that need what is missing are skipped"
  else
    # PyPI's faiss GPU wheels for current Pythons are faiss-gpu-cu12 (the extra 'gpu' names faiss-gpu)
    timeout "$T_INSTALL" bash -c "'$PY' -m pip install -q -e '.[scale]' faiss-gpu-cu12 \
      || '$PY' -m pip install -q -e '.[gpu,scale]'" \
      || log "install incomplete: the steps that need what is missing are skipped"
  fi
fi

step() {  # name, seconds
  log "step $1 (at most $2 s)"
  timeout --kill-after=10 "$2" "$PY" -m eval.device_check "$1" --work "$WORK"
  local rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "{\"status\": \"failed\", \"why\": \"ran past its ${2} s limit\"}" > "$WORK/$1.json"
  elif [ ! -f "$WORK/$1.json" ]; then
    echo "{\"status\": \"failed\", \"why\": \"exited with status $rc before writing a result\"}" > "$WORK/$1.json"
  fi
}

rm -f "$WORK"/{faiss,train,ray,server}.json
step faiss "$T_FAISS"
step train "$T_TRAIN"
step ray "$T_RAY"
step server "$T_SERVER"
timeout "$T_REPORT" "$PY" -m eval.device_check report --work "$WORK" --out "$RESULTS/device-check" --started "$START"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
  cp "$RESULTS"/device-check.json "$RESULTS"/device-check.md "$OUT"/ 2>/dev/null || true
fi
log "done in $(( $(date +%s) - START )) s: $RESULTS/device-check.md"
