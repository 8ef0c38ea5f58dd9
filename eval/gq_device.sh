#!/bin/bash
# Device run of the generated-query rows (eval/pseudo_queries.py; seed_study kinds *-gq).
# $1 = python, $2 = out dir, $3 = extra (smoke) args. Inputs in .dev/: minilm-fp16, data/scifact,
# data/scifact-gq (no corpus: copied from scifact's here), gq/<store ids> (GQ and GQ_SCALED name them).
# What ran: pip install of .whl/*.whl into /tmp/site, then
#   PYTHONPATH=/tmp/site:$PWD bash eval/gq_device.sh python3 $OUT
PY=${1:-python3}; O=${2:-$OUT}; SMOKE=${3:-}
source eval/device_common.sh
[ -f .dev/data/scifact-gq/corpus.jsonl ] || cp .dev/data/scifact/corpus.jsonl .dev/data/scifact-gq/corpus.jsonl
timeout ${BUDGET_S:-480} $PY eval/seed_study.py train --init /tmp/minilm --data .dev/data \
  --store gq=.dev/gq/$GQ --store gq-scaled=.dev/gq/$GQ_SCALED --store base=.dev/gq/${BASE:-d9b748a5eaf0ce39} \
  --kinds ${KINDS:-label-only-8x2-gq,kl+infonce-8x2-gq} --seeds ${SEEDS:-42,43,44} \
  --work /tmp/students --out $O/s $SMOKE 2>&1 | quiet >> $O/log
echo "done: $SECONDS s" >> $O/log
