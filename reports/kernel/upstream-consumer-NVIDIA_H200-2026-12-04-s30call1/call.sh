#!/bin/bash
# s30 call 1: accval's kernel suite (the DSv4-shape chain now through the consumer under test too), vLLM's Triton
# block-scaled FP8 matmul plugged as the consumer (./_upstream_c, not in the repository), the stride-M control,
# and suites/tool on a GPU box (examples moved under accval/, the CLI test naming --device cpu)
export ACCVAL_HYPOTHESIS_PROFILE=ci
unset TRITON_INTERPRET CI
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
python -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
sha256sum _upstream_c/upstream/vllm/model_executor/layers/quantization/kernels/block_scaled_mm/triton.py
t0=$(date +%s)
run() {  # log, workers, args...
  local log=$1 n=$2; shift 2
  (PYTHONPATH=$PWD:$PWD/_upstream_c timeout 540 python3 -m pytest -p accval.pytest_plugin -q -rfEs -p no:cacheprovider \
     -n $n --timeout 400 "$@" > $OUT/$log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $OUT/$log) &
}
run gpu-suite.log 4 suites/kernel
run plugged-vllm_consumer_plug__fp8_block_bmm.log 4 suites/kernel --consumer vllm_consumer_plug:fp8_block_bmm
run control-vllm_consumer_broken__stride_m.log 2 suites/kernel/test_consumer_chain.py --consumer vllm_consumer_broken:stride_m
run gpu-tool-suite.log 4 suites/tool
(PYTHONPATH=$PWD:$PWD/_upstream_c timeout 300 python3 _upstream_c/fake_ndim3.py > $OUT/fake_ndim3.log 2>&1; echo "rc=$?" >> $OUT/fake_ndim3.log) &
wait
for f in $OUT/*.log; do echo "== $(basename $f)"; grep -E "^FAILED|^ERROR|^producer |^consumer |^[0-9]+ (passed|failed)|^rc=" $f | cut -c1-400; done
tail -4 $OUT/fake_ndim3.log
