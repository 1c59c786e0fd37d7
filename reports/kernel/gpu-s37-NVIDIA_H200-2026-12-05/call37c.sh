#!/bin/bash
# s37 call C: call A again without its concurrency's CUDA OOMs: accval's kernel suite alone beside the tool and A/B
# suites (truststore added to the wheels), then only the plugged runs' tests that hit CUDA OOM in call A, one run at a time
export PYTHONUNBUFFERED=1 ACCVAL_HYPOTHESIS_PROFILE=ci
unset TRITON_INTERPRET CI
W=/tmp/o3; mkdir -p $W; t0=$(date +%s); left() { echo $(( 290 - $(date +%s) + t0 )); }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $W/env.log
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl > $W/pip.log 2>&1
(PYTHONPATH=$PWD timeout 230 python3 -m pytest -p accval.pytest_plugin suites/kernel -q -rfEs -p no:cacheprovider -n 4 --timeout 240 > $W/gpu-suite.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $W/gpu-suite.log) &
(HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=/tmp/site:$PWD timeout 230 python3 -m pytest -p accval.pytest_plugin suites/tool suites/ab -q -rfEs -p no:cacheprovider -n 8 --timeout 240 --ignore suites/tool/test_results.py > $W/gpu-tool-ab-suite.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $W/gpu-tool-ab-suite.log) &
wait
for r in _upstream/rerun-*.txt; do
  n=$(basename $r .txt); n=${n#rerun-plugged-}; kind=${n%%__*}; t=${n#*__}; t=${t/__/:}
  [ $(left) -gt 20 ] || break
  PYTHONPATH=$PWD:$PWD/_upstream timeout $(left) python3 -m pytest -p accval.pytest_plugin -q -rfEs -p no:cacheprovider -n 2 --$kind $t $(cat $r) > $W/rerun-$n.log 2>&1; echo "rc=$? $(( $(date +%s) - t0 )) s" >> $W/rerun-$n.log
done
tar czf $OUT/s37c.tgz -C $W .
for f in $W/*.log; do echo "== $(basename $f)"; grep -E "^FAILED|^ERROR|^[0-9]+ (passed|failed)|^rc=" $f | cut -c1-200; done
