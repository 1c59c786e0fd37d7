#!/usr/bin/env bash
# The nightly job (run by .github/workflows/nightly.yml on a self-hosted GPU runner):
#   kernel suite (nightly Hypothesis profile) -> accval mutants -> gsm8k A/B dep8 and tep8 ->
#   benchmarks (GPU only) -> trend of every A/B report under reports/ -> fail on any regression.
# usage: scripts/nightly.sh OUT_DIR
# env:   ACCVAL_NIGHTLY_DRY_RUN=1  CPU dry run with tiny limits (what .ci/run executes, so the job cannot rot)
#        ACCVAL_NIGHTLY_LIMIT=N    gsm8k questions per mode (default: all 1319; dry run: 2)
#        ACCVAL_NIGHTLY_MODEL=M    the A/B's model (default: sentinel, on its own problems; e.g. a checkpoint dir)
#        ACCVAL_GSM8K_DIR=DIR      read gsm8k from DIR instead of Hugging Face openai/gsm8k (models other than sentinel)
#        ACCVAL_NIGHTLY_SWEEP=1    also inject the pull request's defects into arm B (the weekly variant)
#        ACCVAL_NIGHTLY_HISTORY=D  where each night's A/B reports are kept for the trend (default: OUT_DIR's
#                                  parent, which a CI checkout cleans: the workflow keeps it on the runner)
set -uo pipefail
out=${1:?usage: scripts/nightly.sh OUT_DIR}
mkdir -p "$out"
dry=${ACCVAL_NIGHTLY_DRY_RUN:-0}
status=0
step() {  # step NAME CMD...: run, log, remember a failure, keep going so every report is produced
  local name=$1; shift
  echo "::group::$name"
  "$@" 2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "::endgroup::"
  echo "$name: exit $rc" | tee -a "$out/steps.txt"
  [ "$rc" -ne 0 ] && status=1
  return 0
}
model=${ACCVAL_NIGHTLY_MODEL:-sentinel}
data=(--model "$model"); [ -n "${ACCVAL_GSM8K_DIR:-}" ] && [ "$model" != sentinel ] && data+=(--data-dir "$ACCVAL_GSM8K_DIR")
if [ "$dry" = 1 ]; then
  export ACCVAL_HYPOTHESIS_PROFILE=ci
  limit=(--limit "${ACCVAL_NIGHTLY_LIMIT:-2}" --max-gen-toks 4 --batch-size 2)
  # the steps' commands, each on its cheapest real work (CI has just run the whole suite and every mutant)
  step kernel-suite python3 -m pytest -q -x suites/kernel/test_provenance.py -k "dispatch_is_recorded and 1-1-straight"
  step mutants accval mutants --quiet --no-baseline --only silent-fallback --json "$out/mutants.json"
else
  export ACCVAL_HYPOTHESIS_PROFILE=${ACCVAL_HYPOTHESIS_PROFILE:-nightly}
  limit=(); [ -n "${ACCVAL_NIGHTLY_LIMIT:-}" ] && limit=(--limit "$ACCVAL_NIGHTLY_LIMIT")
  step kernel-suite python3 -m pytest -q suites/kernel
  step ranks env ACCVAL_SLOW_TESTS=1 python3 -m pytest -q suites/ab/test_ranks.py
  step mutants accval mutants --quiet --json "$out/mutants.json"
fi
reports=()
for mode in dep8 tep8; do
  step "gsm8k-$mode" accval gsm8k --ab --mode "$mode" --quiet --out "$out/gsm8k-$mode" "${data[@]}" "${limit[@]}"
  reports+=("$out/gsm8k-$mode")
done
if [ "${ACCVAL_NIGHTLY_SWEEP:-0}" = 1 ]; then
  for id in scale-pad-btm fp8-m-padded consumer-scale-stride-m rope-sign; do
    # each is a defect the A/B must see (exit 1, regression): "no regression" (0) means it lost that power
    accval gsm8k --ab --mode dep8 --quiet --inject "$id" --out "$out/sweep-$id" "${data[@]}" "${limit[@]}" \
      > "$out/sweep-$id.log" 2>&1; rc=$?
    seen=$( [ "$rc" -eq 1 ] && echo "seen" || { [ "$rc" -eq 0 ] && echo "NOT SEEN" || echo "error"; } )
    echo "sweep $id: exit $rc ($seen)" | tee -a "$out/steps.txt"; [ "$rc" -ne 1 ] && status=1
  done
fi
if [ "$dry" != 1 ] && python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  step bench accval bench --out "$out/bench"
fi
# the trend: the last 14 earlier nights' A/B reports from the history, oldest first, then tonight's
history=${ACCVAL_NIGHTLY_HISTORY:-$(dirname "$out")}
night=$(basename "$out")
mapfile -t earlier < <(cd "$history" 2>/dev/null && ls -d -- */gsm8k-* 2>/dev/null | grep -v "^$night/" | sort | tail -n 14)
earlier=("${earlier[@]/#/$history/}")
accval report "${earlier[@]}" "${reports[@]}" > "$out/trend.md" 2>&1 || true
if [ "$(cd "$history" 2>/dev/null && pwd -P)" != "$(cd "$(dirname "$out")" && pwd -P)" ]; then
  mkdir -p "$history/$night" && cp -r "${reports[@]}" "$history/$night/"  # kept for the nights to come
fi
cat "$out/trend.md"
echo "nightly: $( [ $status = 0 ] && echo ok || echo FAILED ) (steps in $out/steps.txt)"
exit $status
