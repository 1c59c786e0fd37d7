#!/usr/bin/env bash
# One call on a lent GPU: the kernel suite, the GPU-only mutant, then (optionally) the benchmark.
# Usage: scripts/gpu_check.sh [suite|bench|all]   (writes logs and reports under $OUT or ./gpu-out)
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
what=${1:-all}
if [[ $what == suite || $what == all ]]; then
  ACCVAL_HYPOTHESIS_PROFILE=${ACCVAL_HYPOTHESIS_PROFILE:-ci} python3 -m pytest -p accval.pytest_plugin suites/kernel -q \
    --durations=8 2>&1 | tee "$OUT/suite.log" | tail -25
  python3 -m pytest -p accval.pytest_plugin suites/kernel/test_gpu_large.py -q -x --producer mutant:int32-index 2>&1 \
    | tee "$OUT/int32.log" | tail -4
fi
if [[ $what == bench || $what == all ]]; then
  python3 -c "
from accval.bench import render, rows
r = rows.run(out_dir='$OUT/bench', progress=False)
print(render.to_markdown(r))" 2>&1 | tee "$OUT/bench.log" | tail -80
fi
