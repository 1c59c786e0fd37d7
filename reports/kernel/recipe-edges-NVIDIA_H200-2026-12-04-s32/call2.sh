#!/bin/bash
# s32 call 2 (boundaries again after the skip fix): the recipes'-edges property and the four new catalog mutants on the GPU: accval's kernel suite (ci
# profile), the boundary property alone under the gpu and nightly profiles, the engines' producers under it, and
# accval mutants for the new ids
export ACCVAL_HYPOTHESIS_PROFILE=ci
unset TRITON_INTERPRET CI
git rev-parse --short HEAD 2>/dev/null; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
t0=$(date +%s)

(for prof in gpu nightly; do
   ACCVAL_HYPOTHESIS_PROFILE=$prof PYTHONPATH=$PWD timeout 200 python3 -m pytest -p accval.pytest_plugin suites/kernel/test_producer.py -k boundaries -q -rfEs -p no:cacheprovider --timeout 190 > $OUT/boundaries-accval-$prof.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $OUT/boundaries-accval-$prof.log
 done
 for t in _upstream:trtllm_plug:declared _upstream:vllm_plug:declared _upstream:vllm_plug:fused_inv_rope_fp8_quant_packed \
          _upstream_s:sglang_plug:triton_fp32 _upstream_s:sglang_plug:triton_ue8m0 _upstream_s:sglang_plug:triton_ue8m0_rowmajor \
          _upstream_s:sglang_plug:dsv4_ceil_after_quant accval.examples.ue8m0_gptj_producer:inv_rope_fp8_quant \
          accval.examples.rcp_triton_producer:inv_rope_fp8_quant; do
   case $t in _upstream*) d=${t%%:*}; spec=${t#*:};; *) d=.; spec=$t;; esac
   ACCVAL_HYPOTHESIS_PROFILE=gpu PYTHONPATH=$PWD:$PWD/$d timeout 200 python3 -m pytest -p accval.pytest_plugin suites/kernel/test_producer.py -k boundaries --producer $spec -q -rfEs -p no:cacheprovider --timeout 190 > $OUT/boundaries-${spec//:/__}.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $OUT/boundaries-${spec//:/__}.log
 done) &

wait
for f in $OUT/*.log; do echo "== $(basename $f)"; grep -E "^FAILED|^ERROR|^producer |^[0-9]+ (passed|failed)|^rc=|failed [0-9]+x" $f | cut -c1-300; done
cat $OUT/mutants-new.md 2>/dev/null | head -12
