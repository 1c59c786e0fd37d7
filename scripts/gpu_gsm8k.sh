#!/usr/bin/env bash
# The gsm8k A/B on a lent GPU box (no network): install the carried wheels (.whl: lm-eval,
# transformers >= 5.24, datasets and what they need that the box lacks), then run one mode.
# usage: scripts/gpu_gsm8k.sh MODE RUN_DIR DATA_DIR [accval gsm8k args...]
# A run cut by the call's time limit resumes when called again with the same RUN_DIR.
set -uo pipefail
mode=${1:?mode}; run=${2:?run dir}; data=${3:?data dir}; shift 3
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 HF_HOME=/tmp/hf
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || true
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,driver_version --format=csv,noheader
resume=(); [ -f "$run/run.json" ] && resume=(--resume)
time python3 -m accval.cli gsm8k --ab --mode "$mode" --data-dir "$data" --out "$run" "${resume[@]}" "$@"
