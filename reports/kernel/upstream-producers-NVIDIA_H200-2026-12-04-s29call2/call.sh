#!/bin/bash
# s29 call 2: accval's kernel suite after the plugged-op opcheck and the fitted non-finite/positions cases, and the
# real upstream producers (TensorRT-LLM's, vLLM's fp32 and packed paths; ./_upstream, not in the repository) plugged
# as shipped and with accval_positions = "contiguous" declared
export ACCVAL_HYPOTHESIS_PROFILE=ci
unset TRITON_INTERPRET CI
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
python -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
t0=$(date +%s)
(PYTHONPATH=$PWD python3 -m pytest -p accval.pytest_plugin suites/kernel -q -rfEs -p no:cacheprovider -n 4 --timeout 300 \
   > $OUT/gpu-suite.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $OUT/gpu-suite.log) &
for t in trtllm_plug:fused_inv_rope_fp8_quant trtllm_plug:declared vllm_plug:fused_inv_rope_fp8_quant vllm_plug:declared \
         vllm_plug:fused_inv_rope_fp8_quant_packed; do
  (PYTHONPATH=$PWD:$PWD/_upstream python3 -m pytest -p accval.pytest_plugin suites/kernel --producer $t -q -rfEs \
     -p no:cacheprovider -n 2 --timeout 300 > $OUT/plugged-${t//:/__}.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $OUT/plugged-${t//:/__}.log) &
done
wait
for f in $OUT/*.log; do echo "== $(basename $f)"; grep -E "^FAILED|^producer |^[0-9]+ (passed|failed)|^rc=" $f | cut -c1-420; done
