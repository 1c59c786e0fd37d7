#!/bin/bash
# s30 call 2: the gsm8k-format A/B (sentinel model) with vLLM's Triton block-scaled FP8 matmul plugged into arm B as
# the consumer (./_upstream_c), DEP8 and TEP8, limit 200; lm_eval, datasets and transformers 5.24 from carried wheels
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 2
export PYTHONPATH=/tmp/site:$PWD:$PWD/_upstream_c PYTHONUNBUFFERED=1 HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 HF_HOME=/tmp/hf
unset TRITON_INTERPRET CI
for mode in dep8 tep8; do
  run="$OUT/h200-sentinel-$mode-vllm-triton-consumer-limit200"
  ( /usr/bin/time -f "elapsed %e s" python3 -m accval.cli gsm8k --ab --mode $mode --model sentinel --limit 200 --batch-size 64 \
      --quiet --consumer vllm_consumer_plug:fp8_block_bmm --out "$run" > "$OUT/ab-$mode.log" 2>&1; echo "rc=$?" >> "$OUT/ab-$mode.log" ) &
done
wait
for mode in dep8 tep8; do echo "== $mode"; tail -25 "$OUT/ab-$mode.log"; done
# the run directories come back as one archive (the device returns a limited number of files)
(cd "$OUT" && tar czf ab-runs.tgz --exclude=.lock h200-sentinel-*-vllm-triton-consumer-limit200 && rm -rf h200-sentinel-*-vllm-triton-consumer-limit200)
ls -la "$OUT"
