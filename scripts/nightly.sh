#!/usr/bin/env bash
# The nightly job (run by .github/workflows/nightly.yml on a self-hosted GPU runner):
#   kernel suite (nightly Hypothesis profile) -> accval mutants -> gsm8k A/B dep8 and tep8 ->
#   benchmarks (GPU only) -> trend of every A/B report under reports/ -> fail on any regression.
# usage: scripts/nightly.sh OUT_DIR
# env:   ACCVAL_NIGHTLY_DRY_RUN=1  CPU dry run with tiny limits (what .ci/run executes, so the job cannot rot)
#        ACCVAL_NIGHTLY_LIMIT=N    gsm8k questions per mode (default: all 1319; dry run: 2)
#        ACCVAL_NIGHTLY_MODEL=M    the A/B's model (default: sentinel, on its own problems; e.g. a checkpoint dir)
#        ACCVAL_GSM8K_DIR=DIR      read gsm8k from DIR instead of Hugging Face openai/gsm8k (models other than sentinel)
#        ACCVAL_NIGHTLY_SWEEP=1    also inject every catalog mutant into arm B (the weekly variant)
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
    # a mutant run is expected to say "regression": only an error (exit 2) fails the job
    accval gsm8k --ab --mode dep8 --quiet --inject "$id" --out "$out/sweep-$id" "${data[@]}" "${limit[@]}" \
      > "$out/sweep-$id.log" 2>&1; rc=$?
    echo "sweep $id: exit $rc" | tee -a "$out/steps.txt"; [ "$rc" -eq 2 ] && status=1
  done
fi
if [ "$dry" != 1 ] && python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  step bench accval bench --out "$out/bench"
fi
# the trend: earlier nightly A/B reports kept under reports/nightly, oldest first, then tonight's
mapfile -t earlier < <(ls -d reports/nightly/*/gsm8k-* 2>/dev/null | grep -v "^$out/" | sort | tail -n 14)
accval report "${earlier[@]}" "${reports[@]}" > "$out/trend.md" 2>&1 || true
cat "$out/trend.md"
echo "nightly: $( [ $status = 0 ] && echo ok || echo FAILED ) (steps in $out/steps.txt)"
exit $status
