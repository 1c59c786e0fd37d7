#!/bin/bash
# s34 GPU call 1: the A/B with each rank's prompts prefilled together (--prefill-tokens 8192, the default) on the
# H200: the pull request's scale-pad defect injected under DEP8 and TEP8, the clean DEP8 run, and the tool and
# A/B suites (transformers 5.24 and lm_eval from carried wheels). Run directories live under runs/ of the
# device's tree (kept while the machine stays warm), so a second call can --resume what timed out.
unset TRITON_INTERPRET CI
L=/tmp/s34logs1; mkdir -p $L runs/s34
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L/device.txt
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $L/device.txt
pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl > /dev/null 2>&1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
ab() {  # name, then accval gsm8k arguments
  n=$1; shift
  (PYTHONPATH=/tmp/site:$PWD timeout 540 python3 -m accval.cli gsm8k --ab --quiet --out runs/s34/$n "$@" > $L/ab-$n.log 2>&1
   echo "rc=$?" >> $L/ab-$n.log) &
}
ab h200-sentinel-dep8-scale-pad-btm-limit256 --mode dep8 --limit 256 --inject scale-pad-btm
ab h200-sentinel-tep8-scale-pad-btm-limit256 --mode tep8 --limit 256 --inject scale-pad-btm
ab h200-sentinel-dep8-limit500 --mode dep8 --limit 500
XD=$(PYTHONPATH=/tmp/site python3 -c "import xdist" 2>/dev/null && echo "-n 4")
(ACCVAL_HYPOTHESIS_PROFILE=ci PYTHONPATH=/tmp/site:$PWD timeout 540 python3 -m pytest -p accval.pytest_plugin suites/ab suites/tool -q -rfE \
   -p no:cacheprovider $XD > $L/gpu-tool-ab-suite.log 2>&1; echo "rc=$? xdist='$XD'" >> $L/gpu-tool-ab-suite.log) &
wait
tar czf $OUT/s34-call1-logs.tar.gz -C $L . -C $PWD/runs s34
for f in $L/*.log; do echo "== $(basename $f)"; grep -E "^FAILED|^ERROR|^[0-9]+ (passed|failed)|^rc=|^# gsm8k|^\| (A|B|strict)|site, arm B|elapsed" $f | cut -c1-260; done
