#!/bin/bash
# s31 call 5: the A/B and tool suites again after the two test fixes (transformers 5.24, lm_eval from carried wheels)
export ACCVAL_HYPOTHESIS_PROFILE=ci
unset TRITON_INTERPRET CI
nvidia-smi --query-gpu=name --format=csv,noheader
pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl > /dev/null 2>&1
t0=$(date +%s)
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=/tmp/site:$PWD timeout 560 python3 -m pytest -p accval.pytest_plugin suites/tool suites/ab -q -rfEs -p no:cacheprovider -n 8 --timeout 400 --ignore suites/tool/test_results.py > $OUT/gpu-tool-ab-suite.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $OUT/gpu-tool-ab-suite.log
grep -E "^FAILED|^ERROR|^[0-9]+ (passed|failed)|^rc=" $OUT/gpu-tool-ab-suite.log | cut -c1-250
