#!/bin/bash
# Device run of research/distillation/seed_study.py train: $KINDS x $SEEDS from the stores in $STORES
# ("name=folder ..."), time-boxed to $BUDGET_S. $1 = python, $2 = out dir, $3 = extra (smoke) args.
# Inputs in .dev/: minilm-fp16, data/scifact, and for the -gq kinds data/scifact-gq (its corpus
# is copied from scifact's here). Each call: pip install of .whl/*.whl into /tmp/site, then
#   PYTHONPATH=/tmp/site:$PWD STORES=... KINDS=... SEEDS=... bash research/distillation/seed_device.sh python3 $OUT
# seed-study-gq (H200; first run from research/distillation/gq_device.sh, since folded into this script):
#   STORES="gq=.dev/gq/30cd0f7ce84acff9 gq-scaled=.dev/gq/d816369005c366f2 base=.dev/gq/d9b748a5eaf0ce39"
#   KINDS=kl+infonce-8x2-gq,label-only-8x2-gq,label-only-8x2 SEEDS=42,43,44 BUDGET_S=530
PY=${1:-python3}; O=${2:-$OUT}; SMOKE=${3:-}
source research/distillation/device_common.sh
if [ -d .dev/data/scifact-gq ] && [ ! -f .dev/data/scifact-gq/corpus.jsonl ]; then
  cp .dev/data/scifact/corpus.jsonl .dev/data/scifact-gq/corpus.jsonl
fi
ARGS=(); for s in $STORES; do ARGS+=(--store "$s"); done
timeout ${BUDGET_S:-480} $PY research/distillation/seed_study.py train --init /tmp/minilm --data .dev/data "${ARGS[@]}" \
  --kinds $KINDS --seeds ${SEEDS:-42,43,44} --work /tmp/students --out $O/s $SMOKE 2>&1 | quiet >> $O/log
echo "done: $SECONDS s" >> $O/log
