#!/bin/bash
# s34 GPU call 2: how much of the accumulation bound Hopper's consumers spend on same-sign products (the probe),
# the consumer tests (ci profile) with the new property on accval's consumer, the property against torch._scaled_mm
# and vLLM's Triton consumer (gpu profile), and the new catalog mutant, all side by side (little device time was left).
unset TRITON_INTERPRET CI
L=/tmp/s34logs2; mkdir -p $L
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L/device.txt
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $L/device.txt
pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl > /dev/null 2>&1
(PYTHONPATH=$PWD:$PWD/_upstream_c timeout 240 python3 scripts/consumer_accumulation_probe.py --out $L/consumer-accumulation-probe.json \
   --m 1,64,256,2048 --consumer vllm_consumer_plug:fp8_block_bmm > $L/probe.log 2>&1; echo "rc=$?" >> $L/probe.log) &
(ACCVAL_HYPOTHESIS_PROFILE=ci PYTHONPATH=/tmp/site:$PWD timeout 270 python3 -m pytest -p accval.pytest_plugin suites/kernel/test_consumer_chain.py -q -rfE \
   -p no:cacheprovider > $L/gpu-consumer-tests.log 2>&1; echo "rc=$?" >> $L/gpu-consumer-tests.log) &
for c in torch _upstream_c:vllm_consumer_plug:fp8_block_bmm; do
  d=${c%%:*}; spec=${c#*:}; [ "$d" = torch ] && spec=torch
  (ACCVAL_HYPOTHESIS_PROFILE=gpu PYTHONPATH=$PWD:$PWD/_upstream_c timeout 240 python3 -m pytest -p accval.pytest_plugin suites/kernel/test_consumer_chain.py \
     -k "keeps_small or matches_math or rounds_its_output" --consumer $spec -q -rfEs -p no:cacheprovider > $L/judged-${spec//:/__}.log 2>&1
   echo "rc=$?" >> $L/judged-${spec//:/__}.log) &
done
(ACCVAL_HYPOTHESIS_PROFILE=ci PYTHONPATH=/tmp/site:$PWD timeout 240 python3 -m accval.cli mutants --quiet --no-baseline \
   --only consumer-bf16-accumulator --json $L/mutants-consumer-bf16-accumulator.json > $L/mutants.log 2>&1; echo "rc=$?" >> $L/mutants.log) &
wait
tar czf $OUT/s34-call2-logs.tar.gz -C $L .
tail -n 14 $L/consumer-accumulation-probe.md
for f in $L/*.log; do echo "== $(basename $f)"; grep -E "^FAILED|^ERROR|^[0-9]+ (passed|failed)|^rc=|killed|survived" $f | cut -c1-250; done
