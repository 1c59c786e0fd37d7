#!/bin/bash
# s37 call A: accval's kernel suite on the card at HEAD, the GPU-only mutant, and the engines' real producers and
# consumer plugged (./_upstream, not in the repository): checks.ROTATION_REL_TOL = 2**-20 (de4d387) never met a GPU.
export ACCVAL_HYPOTHESIS_PROFILE=ci PYTHONUNBUFFERED=1
unset TRITON_INTERPRET CI
W=/tmp/o; mkdir -p $W
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
  python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
  git log -1 --format=%h 2>/dev/null; sha256sum _upstream/upstream/*/*/*/*.py _upstream/upstream/vllm/models/deepseek_v4/common/ops/*.py _upstream/upstream/vllm/model_executor/layers/quantization/kernels/block_scaled_mm/triton.py 2>/dev/null; } > $W/env.log
t0=$(date +%s)
(PYTHONPATH=$PWD timeout 420 python3 -m pytest -p accval.pytest_plugin suites/kernel -q -rfEs -p no:cacheprovider -n 4 --timeout 300 \
   > $W/gpu-suite.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $W/gpu-suite.log
 PYTHONPATH=$PWD timeout 60 python3 -m pytest -p accval.pytest_plugin suites/kernel/test_gpu_large.py -q -x -p no:cacheprovider --producer mutant:int32-index > $W/int32.log 2>&1; echo "rc=$?" >> $W/int32.log) &
for t in "--producer trtllm_plug:fused_inv_rope_fp8_quant" "--producer trtllm_plug:declared" "--producer vllm_plug:declared" \
         "--producer vllm_plug:fused_inv_rope_fp8_quant_packed" "--consumer vllm_consumer_plug:fp8_block_bmm"; do
  n=$(echo $t | sed 's/--//; s/[ :]/__/g')
  (PYTHONPATH=$PWD:$PWD/_upstream timeout 480 python3 -m pytest -p accval.pytest_plugin suites/kernel $t -q -rfEs \
     -p no:cacheprovider -n 2 --timeout 300 > $W/plugged-$n.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $W/plugged-$n.log) &
done
wait
tar czf $OUT/s37a.tgz -C $W .
cat $W/env.log
for f in $W/*.log; do echo "== $(basename $f)"; grep -E "^FAILED|^ERROR|^producer |^consumer |^[0-9]+ (passed|failed)|^rc=| passed" $f | cut -c1-330; done
