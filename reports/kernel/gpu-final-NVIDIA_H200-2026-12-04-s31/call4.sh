#!/bin/bash
# s31 final call: the kernel suite, and the tool and A/B suites (transformers 5.24, lm_eval from carried wheels), at HEAD
export ACCVAL_HYPOTHESIS_PROFILE=ci
unset TRITON_INTERPRET CI
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "import torch, triton, transformers; print('box:', torch.__version__, triton.__version__, transformers.__version__)"
# the box's own transformers 5.17: the engine refuses it, naming both versions (exit 2)
PYTHONPATH=$PWD timeout 120 python3 -m accval.cli serve --arm a --model builtin --port 0 --idle-timeout 5 > $OUT/serve-transformers-5.17.log 2>&1
echo "rc=$?" >> $OUT/serve-transformers-5.17.log
pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl > /dev/null 2>&1
t0=$(date +%s)
(PYTHONPATH=$PWD timeout 560 python3 -m pytest -p accval.pytest_plugin suites/kernel -q -rfEs -p no:cacheprovider -n 4 --timeout 400 > $OUT/gpu-suite.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $OUT/gpu-suite.log) &
(HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=/tmp/site:$PWD timeout 560 python3 -m pytest -p accval.pytest_plugin suites/tool suites/ab -q -rfEs -p no:cacheprovider -n 6 --timeout 400 --ignore suites/tool/test_results.py > $OUT/gpu-tool-ab-suite.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $OUT/gpu-tool-ab-suite.log) &
wait
cat $OUT/serve-transformers-5.17.log | tail -3
for f in $OUT/gpu-*.log; do echo "== $(basename $f)"; grep -E "^FAILED|^ERROR|^producer |^consumer |^[0-9]+ (passed|failed)|^rc=" $f | cut -c1-250; done
