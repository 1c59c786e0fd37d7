#!/bin/bash
# s33 GPU call 3: scale-pad-btm in the H200 A/B with batches large enough that a DEP8 rank's M passes 1024,
# where the pull request's token blocks (8/16/32) pad differently from pad4(M) (the default batch of 32 gave M <= 894).
unset TRITON_INTERPRET CI
L=/tmp/s33logs3; mkdir -p $L
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L/device.txt
pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl > /dev/null 2>&1
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=/tmp/site:$PWD timeout 540 python3 -m accval.cli gsm8k --ab --mode dep8 \
   --limit 500 --batch-size 128 --inject scale-pad-btm --quiet --out $L/h200-sentinel-dep8-scale-pad-btm-pr-blocks-batch128-limit500 > $L/ab.log 2>&1; echo "rc=$?" >> $L/ab.log
tar czf $OUT/s33-call3-logs.tar.gz -C $L .
grep -E "Verdict|^\| (A|B|strict)|site, arm B|Agreement|^rc=" $L/ab.log | cut -c1-300
