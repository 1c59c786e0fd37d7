#!/bin/bash
# s30 call 4: accval's kernel suite (the large-M check now judges every producer in token windows; large inputs drawn
# on the GPU); SGLang's producer (Triton per-token-group quant after a torch inverse RoPE, ./_upstream_s) plugged in
# four ways; the large-M token windows for every engine's producer and accval's examples
export ACCVAL_HYPOTHESIS_PROFILE=ci
unset TRITON_INTERPRET CI
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
t0=$(date +%s)
suite() {  # log, plug dir or "", workers, pytest args...
  local log=$1 dir=$2 n=$3; shift 3
  PYTHONPATH=$PWD${dir:+:$PWD/$dir} timeout 540 python3 -m pytest -p accval.pytest_plugin -q -rfEs -p no:cacheprovider \
    -n $n --timeout 400 "$@" > $OUT/$log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $OUT/$log
}
suite gpu-suite.log "" 4 suites/kernel &
for fn in triton_fp32 triton_ue8m0 triton_ue8m0_rowmajor dsv4_ceil_after_quant; do
  suite sglang-$fn.log _upstream_s 2 suites/kernel -k "not large_m" --producer sglang_plug:$fn &
done
windows() {  # plug dir, producers...
  local dir=$1; shift
  for p in "$@"; do suite windows-${p//[:.]/_}.log "$dir" 0 suites/kernel/test_gpu_large.py -k token_windows --producer $p; done
}
(windows _upstream trtllm_plug:declared vllm_plug:declared vllm_plug:fused_inv_rope_fp8_quant_packed
 windows "" accval.examples.rcp_triton_producer:inv_rope_fp8_quant accval.examples.ue8m0_gptj_producer:inv_rope_fp8_quant \
   accval.examples.torch_producer:inv_rope_fp8_quant) &  # two lanes: each M = 65536 case holds ~13 GB of input and output
windows _upstream_s sglang_plug:triton_fp32 sglang_plug:triton_ue8m0 sglang_plug:triton_ue8m0_rowmajor &
wait
for f in $OUT/*.log; do echo "== $(basename $f)"; grep -E "^FAILED|^ERROR|^producer |^[0-9]+ (passed|failed)|^rc=|Error:" $f | cut -c1-300 | head -12; done
