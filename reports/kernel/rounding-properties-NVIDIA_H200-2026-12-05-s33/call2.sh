#!/bin/bash
# s33 GPU call 2 of 2: accval's kernel suite (ci profile), the whole catalog with the pull request's baseline test,
# the recipes'-edges property (gpu profile) on the engines' producers, and the tool and A/B suites (transformers
# 5.24 and lm_eval from carried wheels). Logs come back as one tarball (the device returns at most 8 files).
export ACCVAL_HYPOTHESIS_PROFILE=ci
unset TRITON_INTERPRET CI
L=/tmp/s33logs2; mkdir -p $L
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L/device.txt
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers (box)', transformers.__version__)" | tee -a $L/device.txt
pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl > /dev/null 2>&1
t0=$(date +%s)
(for t in _upstream:trtllm_plug:declared _upstream:vllm_plug:declared _upstream:vllm_plug:fused_inv_rope_fp8_quant_packed \
          _upstream_s:sglang_plug:triton_fp32 _upstream_s:sglang_plug:triton_ue8m0 _upstream_s:sglang_plug:triton_ue8m0_rowmajor \
          _upstream_s:sglang_plug:dsv4_ceil_after_quant; do
   d=${t%%:*}; spec=${t#*:}
   (ACCVAL_HYPOTHESIS_PROFILE=gpu PYTHONPATH=$PWD:$PWD/$d timeout 400 python3 -m pytest -p accval.pytest_plugin suites/kernel/test_producer.py -k 'mirror or boundaries or explicit' --producer $spec -q -rfEs -p no:cacheprovider --timeout 390 > $L/judged-${spec//:/__}.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $L/judged-${spec//:/__}.log) &
 done; wait) &
# vLLM's consumer against the new rounding property (one product per output) and the K=1152/8192 cases
(ACCVAL_HYPOTHESIS_PROFILE=gpu PYTHONPATH=$PWD:$PWD/_upstream_c timeout 300 python3 -m pytest -p accval.pytest_plugin suites/kernel/test_consumer_chain.py \
   -k "rounds_its_output or consumer_matches" --consumer vllm_consumer_plug:fp8_block_bmm -q -rfEs -p no:cacheprovider > $L/vllm-consumer-rounding.log 2>&1; echo "rc=$?" >> $L/vllm-consumer-rounding.log) &
# scale-pad-btm now takes the pull request's token blocks: the H200 A/B of it (limit 500 said "no regression" before)
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=/tmp/site:$PWD timeout 500 python3 -m accval.cli gsm8k --ab --mode dep8 \
   --limit 500 --inject scale-pad-btm --quiet --out $L/h200-sentinel-dep8-scale-pad-btm-pr-blocks-limit500 > $L/ab-scale-pad-btm.log 2>&1; echo "rc=$?" >> $L/ab-scale-pad-btm.log
wait
tar czf $OUT/s33-call2-logs.tar.gz -C $L .
for f in $L/*.log; do echo "== $(basename $f)"; grep -E "^FAILED|^ERROR|^[0-9]+ (passed|failed)|^rc=|failed [0-9]+x" $f | cut -c1-250; done
