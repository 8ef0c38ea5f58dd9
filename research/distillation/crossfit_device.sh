#!/bin/bash
# Device run of research/distillation/crossfit_teacher.py (cross-fitted cross-encoder teacher) and its students.
# $1 = python, $2 = out dir, $3 = extra (smoke) args. Inputs travel in .dev/ (see seed_study.py):
# .dev/minilm-fp16, .dev/data/scifact (corpus, queries, train and test qrels), .dev/stores/<ids>.
# What ran on the H200: (1) pip install of .whl/*.whl into /tmp/site, then
#   TEACHER_S=380 BUDGET_S=572 bash research/distillation/crossfit_device.sh python3 $OUT     (time-boxed in lr8e-5)
# (2) on the same warm machine:
#   XCE_CONFIGS=lr3e-5 XCE_TEST=0 TEACHER_S=120 BUDGET_S=400 bash research/distillation/crossfit_device.sh python3 $OUT
PY=${1:-python3}; O=${2:-$OUT}; SMOKE=${3:-}
source research/distillation/device_common.sh
BASE=.dev/stores/d9b748a5eaf0ce39
T0=$SECONDS
timeout ${TEACHER_S:-330} $PY research/distillation/crossfit_teacher.py teacher --init /tmp/minilm --base ${SMOKE_BASE:-$BASE} \
  --test-store ${SMOKE_TEST:-.dev/stores/d2f6bc6e72fd1c76} --out $O --env $SMOKE 2>&1 | quiet >> $O/log
echo "teacher step: $((SECONDS-T0)) s" >> $O/log
S=$(grep -a '^ENS_XCE_SCALED=' $O/log | tail -1 | cut -d= -f2)
[ -n "$S" ] || { echo "no ensemble store" >> $O/log; exit 1; }
LEFT=$(( ${BUDGET_S:-560} - SECONDS ))
echo "students: ${LEFT} s left" >> $O/log
timeout $LEFT $PY research/distillation/seed_study.py train --init /tmp/minilm --store base=${SMOKE_BASE:-$BASE} --store ens-xce-scaled=$S \
  --kinds label-only-8x2,kl+infonce-8x2-xce --seeds ${SEEDS:-42,43,44,45,46} --work /tmp/students --out $O/s $SMOKE 2>&1 | quiet >> $O/log
tar czf $O/stores.tgz runs/bench-distill/stores runs/bench-distill/crossfit/models/*/manifest.json 2>>$O/log
echo "done: $SECONDS s" >> $O/log
