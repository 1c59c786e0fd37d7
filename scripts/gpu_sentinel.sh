#!/usr/bin/env bash
# The sentinel on a lent GPU box (no network): install the carried wheels (.whl), then
#   scripts/gpu_sentinel.sh train MINUTES [train args...]   -> $OUT/sentinel.tar.part* (checkpoint, train.json, log)
#     the shipped checkpoint: train 7 --batch-size 64 --lr 2e-3, then
#     train 6 --batch-size 64 --lr 1e-3 --seed 1 --init accval/sentinel/assets/checkpoint
#     (the fitted step counts are in train-stage1.json and train.json; --steps N repeats a schedule)
#   scripts/gpu_sentinel.sh ab MODE RUN_DIR [accval gsm8k args...]  (resumable: same RUN_DIR again)
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 HF_HOME=/tmp/hf
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,driver_version --format=csv,noheader
what=${1:?train|ab}; shift
case $what in
  train)
    minutes=${1:?minutes}; shift
    time python3 -m accval.sentinel.train --out "$OUT/sentinel" --minutes "$minutes" "$@" 2>&1 | tr "\r" "\n" \
      | grep -v "sentinel train:" | tee "$OUT/train.log" | tail -40
    # what comes back from the box: at most 8 files of 16 MiB; the checkpoint travels as a split tar
    # (on this machine: cat sentinel.tar.part* | tar xf - ; then copy sentinel/ to accval/sentinel/assets/checkpoint)
    tar cf - -C "$OUT" sentinel | split -b 12M - "$OUT/sentinel.tar.part" && rm -rf "$OUT/sentinel" ;;
  ab)
    mode=${1:?mode}; run=${2:?run dir}; shift 2
    resume=(); [ -f "$run/run.json" ] && resume=(--resume)
    time python3 -m accval.cli gsm8k --ab --mode "$mode" --model sentinel --out "$run" "${resume[@]}" "$@" ;;
  *) echo "usage: $0 train MINUTES | ab MODE RUN_DIR"; exit 2 ;;
esac
