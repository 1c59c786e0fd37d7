#!/usr/bin/env bash
# One call on a lent GPU that checks everything a kernel or validation change needs, in parallel where
# the GPU allows: accval's kernel suite (+ the int32-index mutant), the suite against each example
# producer (accval/examples/*_producer.py), and a sentinel A/B with a plugged producer (carried wheels in .whl).
# Usage: scripts/gpu_verify.sh [AB_LIMIT]    (logs and the A/B report under $OUT or ./gpu-out)
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
ab_limit=${1:-200}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 ACCVAL_HYPOTHESIS_PROFILE=${ACCVAL_HYPOTHESIS_PROFILE:-ci}
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
suite() {  # name, pytest args...
  local name=$1; shift
  python3 -m pytest -p accval.pytest_plugin suites/kernel -q -rs -p no:cacheprovider "$@" > "$OUT/suite-$name.log" 2>&1
  echo "suite $name: exit $? $(tail -1 "$OUT/suite-$name.log")"
}
suite accval &
suite torch_producer --producer accval.examples.torch_producer:inv_rope_fp8_quant &
suite rcp_triton_producer --producer accval.examples.rcp_triton_producer:inv_rope_fp8_quant &
suite ue8m0_gptj_producer --producer accval.examples.ue8m0_gptj_producer:inv_rope_fp8_quant &
wait
# alone: beside the suites' large cases an out-of-memory failure would also exit 1 and read as a kill
python3 -m pytest -p accval.pytest_plugin suites/kernel/test_gpu_large.py -q -x --producer mutant:int32-index \
  > "$OUT/int32.log" 2>&1; echo "int32-index mutant: exit $? (1 = killed) $(tail -1 "$OUT/int32.log")"
grep -h -E "^(producer|consumer) " "$OUT"/suite-*.log
if [ "$ab_limit" != 0 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site:$PYTHONPATH HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 HF_HOME=/tmp/hf
  run="$OUT/h200-sentinel-dep8-ue8m0-gptj-producer-limit$ab_limit"
  time python3 -m accval.cli gsm8k --ab --mode dep8 --model sentinel --limit "$ab_limit" --batch-size 64 --quiet \
    --producer accval.examples.ue8m0_gptj_producer:inv_rope_fp8_quant --out "$run" > "$OUT/ab.log" 2>&1
  echo "A/B exit $?"; tail -22 "$OUT/ab.log"
  (cd "$OUT" && tar czf ab-report.tgz "$(basename "$run")" && rm -rf "$run")
fi
