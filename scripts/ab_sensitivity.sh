#!/usr/bin/env bash
# The A/B's sensitivity on this machine: clean runs under dep8 and tep8, then every catalog mutant
# that runs in the torch chain injected into arm B; ends with `accval report` comparing them all.
# usage: scripts/ab_sensitivity.sh OUT_DIR [extra accval gsm8k args, e.g. --limit 8 --data-dir DIR]
set -uo pipefail
out=${1:?usage: scripts/ab_sensitivity.sh OUT_DIR [accval gsm8k args]}
shift
mkdir -p "$out"
runs=()
for mode in dep8 tep8; do
  accval gsm8k --ab --mode "$mode" --quiet --out "$out/$mode-clean" "$@" > "$out/$mode-clean.log" 2>&1
  echo "$mode clean: exit $?"
  runs+=("$out/$mode-clean")
done
for id in scale-pad-btm fp8-m-padded pad-rows-not-zeroed rope-sign rope-layout no-input-rounding \
          consumer-scale-stride-m silent-fallback; do
  accval gsm8k --ab --mode dep8 --quiet --inject "$id" --out "$out/dep8-$id" "$@" > "$out/dep8-$id.log" 2>&1
  echo "dep8 $id: exit $?"
  runs+=("$out/dep8-$id")
done
accval gsm8k --ab --mode tep8 --quiet --inject fp8-m-padded --out "$out/tep8-fp8-m-padded" "$@" > "$out/tep8-fp8-m-padded.log" 2>&1
echo "tep8 fp8-m-padded: exit $?"
runs+=("$out/tep8-fp8-m-padded")
accval report "${runs[@]}" | tee "$out/summary.md"
