#!/usr/bin/env bash
# One device call that spends a short GPU lease well: every check.sh stage in
# order of value, each time-boxed, all under one deadline (seconds, default
# 540), so that the call ends inside its limit and every log comes back.
# Run ON THE LENT GPU MACHINE after tools/gpu/prepare.sh ran here:
#   run(command="bash tools/gpu/session.sh 540", carry=[".gpu"], timeout_s=600)
# Stages (cap in seconds): build 300, test-cuda 150, bench 200, train 90,
# sync 90, racecheck 120, sanitizer 150, fewer when time runs short;
# STAGES="build test-cuda ..." picks and orders them. $OUT/summary.txt lists
# each stage's exit status and time (124: it ran out of its time box).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/gpu-out}"; mkdir -p "$OUT"
DEADLINE=$((SECONDS + ${1:-540}))
export GPU_TEST_TIMEOUT="${GPU_TEST_TIMEOUT:-60}"   # per test (pytest-timeout), so one hang cannot eat the lease

box() {  # cap stage...: run check.sh stages with min(cap, time left - 10 s)
  local cap=$1; shift
  local left=$((DEADLINE - SECONDS - 10))
  (( left < cap )) && cap=$left
  if (( cap < 20 )); then echo "$* skipped: $left s left" | tee -a "$OUT/summary.txt"; return; fi
  local t0=$SECONDS
  timeout --kill-after=5 "$cap" bash tools/gpu/check.sh "$@"
  echo "$*: rc=$? in $((SECONDS - t0)) s (box $cap s)" | tee -a "$OUT/summary.txt"
}

STAGES=${STAGES:-build test-cuda bench train sync racecheck sanitizer}
declare -A CAP=([build]=300 [test-cuda]=150 [bench]=200 [train]=90 [sync]=90 [racecheck]=120 [sanitizer]=150)
for s in $STAGES; do
  box "${CAP[$s]:-120}" "$s"
  if [ "$s" = build ] && ! ls python/deepcore/_cuda*.so >/dev/null 2>&1; then echo "build failed: see build.log"; break; fi
done
# The device tool returns at most 8 files: the three compute-sanitizer tools
# share race.log, and build.log goes to the end of summary.txt.
for f in racecheck synccheck initcheck; do [ -f "$OUT/$f.log" ] && cat "$OUT/$f.log" >> "$OUT/race.log" && rm "$OUT/$f.log"; done
[ -f "$OUT/build.log" ] && { echo "--- build.log"; tail -20 "$OUT/build.log"; } >> "$OUT/summary.txt" && rm "$OUT/build.log"
cat "$OUT/summary.txt"
