#!/bin/bash
# s37 call B: two accval bench runs at HEAD on a quiet card, then the tool and A/B suites (transformers 5.25, lm_eval
# 0.4.13, datasets 5.2.0 from the carried wheels in .whl)
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET CI
W=/tmp/o; mkdir -p $W
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader | tee $W/env.log
t0=$(date +%s)
for i in 1 2; do PYTHONPATH=$PWD timeout 200 python3 -m accval.cli bench --out $W/bench > $W/bench$i.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $W/bench$i.log; done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl > $W/pip.log 2>&1
(HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=/tmp/site:$PWD timeout $(( 560 - $(date +%s) + t0 )) python3 -m pytest -p accval.pytest_plugin suites/tool suites/ab -q -rfEs -p no:cacheprovider -n 10 --timeout 400 --ignore suites/tool/test_results.py > $W/gpu-tool-ab-suite.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $W/gpu-tool-ab-suite.log)
tar czf $OUT/s37b.tgz -C $W .
for f in $W/bench*.log; do echo "== $f"; tail -4 $f; done
ls $W/bench
grep -E "^FAILED|^ERROR|^[0-9]+ (passed|failed)|^rc=" $W/gpu-tool-ab-suite.log | cut -c1-250
