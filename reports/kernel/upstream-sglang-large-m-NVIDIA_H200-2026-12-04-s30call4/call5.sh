#!/bin/bash
# s30 call 5: call 4's large-M token-window runs whose logs did not come back (the device returns 8 files), again,
# logs in one archive
export ACCVAL_HYPOTHESIS_PROFILE=ci
unset TRITON_INTERPRET CI
mkdir -p /tmp/w
win() {  # plug dir, producer
  PYTHONPATH=$PWD:$PWD/$1 timeout 280 python3 -m pytest -p accval.pytest_plugin -q -rfEs -p no:cacheprovider -n 0 --timeout 250 \
    suites/kernel/test_gpu_large.py -k token_windows --producer $2 > /tmp/w/windows-${2//[:.]/_}.log 2>&1; echo "rc=$?" >> /tmp/w/windows-${2//[:.]/_}.log
}
(win _upstream trtllm_plug:declared; win _upstream vllm_plug:declared; win _upstream vllm_plug:fused_inv_rope_fp8_quant_packed) &
(win _upstream_s sglang_plug:triton_ue8m0_rowmajor; win _upstream_s sglang_plug:triton_fp32; win _upstream_s sglang_plug:triton_ue8m0) &
wait
(cd /tmp/w && tar czf $OUT/windows-logs.tgz *.log)
for f in /tmp/w/*.log; do echo "== $(basename $f)"; grep -E "^FAILED|^[0-9]+ (passed|failed)|^rc=" $f; done
