#!/bin/bash
# s33 GPU call 1 of 2: accval's kernel suite (ci profile), the whole catalog with the pull request's baseline test,
# the recipes'-edges property (gpu profile) on the engines' producers, and the tool and A/B suites (transformers
# 5.24 and lm_eval from carried wheels). Logs come back as one tarball (the device returns at most 8 files).
export ACCVAL_HYPOTHESIS_PROFILE=ci
unset TRITON_INTERPRET CI
L=/tmp/s33logs; mkdir -p $L
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L/device.txt
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers (box)', transformers.__version__)" | tee -a $L/device.txt
pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl > /dev/null 2>&1
t0=$(date +%s)
(PYTHONPATH=$PWD timeout 560 python3 -m pytest -p accval.pytest_plugin suites/kernel -q -rfEs -p no:cacheprovider -n 4 --timeout 400 > $L/gpu-suite.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $L/gpu-suite.log) &
(HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=/tmp/site:$PWD timeout 560 python3 -m pytest -p accval.pytest_plugin suites/tool suites/ab -q -rfEs -p no:cacheprovider -n 6 --timeout 400 --ignore suites/tool/test_results.py > $L/gpu-tool-ab-suite.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $L/gpu-tool-ab-suite.log) &
(PYTHONPATH=$PWD timeout 560 python3 -m accval.cli mutants --quiet --jobs 3 --json $L/mutants-h200-gpu.json > $L/mutants.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $L/mutants.log) &
wait
tar czf $OUT/s33-call1-logs.tar.gz -C $L .
cp $L/mutants-h200-gpu.json $L/mutants-h200-gpu.md $OUT/ 2>/dev/null
for f in $L/*.log; do echo "== $(basename $f)"; grep -E "^FAILED|^ERROR|^[0-9]+ (passed|failed)|^rc=|failed [0-9]+x" $f | cut -c1-250; done
