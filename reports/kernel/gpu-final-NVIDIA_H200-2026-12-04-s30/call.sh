#!/bin/bash
# s30 final call: accval's kernel suite and tool suite at HEAD on the GPU box
export ACCVAL_HYPOTHESIS_PROFILE=ci
unset TRITON_INTERPRET CI
git rev-parse --short HEAD 2>/dev/null; nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s)
(PYTHONPATH=$PWD timeout 560 python3 -m pytest -p accval.pytest_plugin suites/kernel -q -rfEs -p no:cacheprovider -n 4 --timeout 400 > $OUT/gpu-suite.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $OUT/gpu-suite.log) &
(PYTHONPATH=$PWD timeout 560 python3 -m pytest -p accval.pytest_plugin suites/tool -q -rfEs -p no:cacheprovider -n 4 --timeout 400 > $OUT/gpu-tool-suite.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $OUT/gpu-tool-suite.log) &
wait
for f in $OUT/*.log; do echo "== $(basename $f)"; grep -E "^FAILED|^ERROR|^producer |^consumer |^[0-9]+ (passed|failed)|^rc=" $f | cut -c1-250; done
