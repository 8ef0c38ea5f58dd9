# Sourced by the device drivers (research/distillation/*_device.sh): environment, SciFact and the fp32 init.
# Needs PY (python) and O (output folder). Inputs travel in .dev/ (see research/distillation/seed_study.py).
export RKD_DATA_HOME=$PWD/.dev/data HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p $O
[ -f .dev/data/scifact/corpus.jsonl ] || gunzip -k .dev/data/scifact/corpus.jsonl.gz
[ -d /tmp/minilm ] || $PY research/distillation/seed_study.py init-fp32 .dev/minilm-fp16 /tmp/minilm >> $O/log 2>&1
nvidia-smi --query-gpu=name,memory.used --format=csv >> $O/log 2>&1
# drop progress-bar and weight-loading noise from a log stream
quiet() { tr "\r" "\n" | grep --line-buffered -v "Loading weights\|Writing model\|it/s\]\|example/s\]"; }
