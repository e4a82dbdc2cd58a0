#!/usr/bin/env bash
# Nightly conformance run for any CI system (GitHub Actions: ci/action.yml, used by ci/nightly.yml).
#
#   ci/nightly.sh [TARGET] [SHARD] [PREVIOUS_RUN_JSON]      e.g.  ci/nightly.sh linux 2/4
#
# Installs what it needs (make test's set-up), runs one shard of the corpus (plus generated
# traces on linux and illumos-gate) against TARGET, and leaves JUnit, JSON and HTML reports in
# out/<target>-<shard>/ for the CI system to collect.  Then it says what changed since the last
# night: `ddi-harness report diff` of the previous run.json (the third argument, $DDIH_PREVIOUS,
# or the copy this script kept in the cache last time) against tonight's, written to
# diff.txt, diff.md and diff.json next to the reports, and appended to $GITHUB_STEP_SUMMARY on
# GitHub.  Tonight's run.json is then kept in the cache for tomorrow.
#
# Caches worth keeping between runs: ~/.cache/ddi-harness (guest images, downloaded cloud
# images, provisioned illumos bases, the pinned illumos-gate sources, and nightly/, the last
# run.json of each target and shard).  Exit status: 0 clean, 1 divergences, 2 set-up.
#
# Environment: DDIH_SEED (default: the date, so each night explores new traces and a failure
# can be replayed with the same seed), DDIH_GENERATE (default 200; 0 for none), DDIH_RUN_BUDGET
# seconds (default 4800), DDIH_DESTRUCTIVE=1 to include traces that panic or hang the kernel,
# DDIH_MATCH (only traces whose name contains it), DDIH_FAULT (load the linux driver with a
# fault injected on purpose: to see a night catch it), DDIH_OUT_ROOT (default out),
# DDIH_NIGHTLY_KEEP (where tonight's run.json is kept for tomorrow).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-linux}"
shard="${2:-1/1}"
seed="${DDIH_SEED:-$(date -u +%Y%m%d)}"
name="${target}-${shard/\//of}"
out="${DDIH_OUT_ROOT:-out}/${name}"
keep="${DDIH_NIGHTLY_KEEP:-${XDG_CACHE_HOME:-$HOME/.cache}/ddi-harness/nightly/${name}}"
previous="${3:-${DDIH_PREVIOUS:-$keep/run.json}}"

make venv system-deps
# shrunk regressions are kept with the night's run.json and replayed first the next night
args=(--target "$target" --shard "$shard" --out "$out" --run-budget "${DDIH_RUN_BUDGET:-4800}"
      --regressions "$keep/regressions")
[ "${DDIH_DESTRUCTIVE:-0}" = 1 ] && args+=(--destructive)
[ -n "${DDIH_MATCH:-}" ] && args+=(--match "$DDIH_MATCH")
[ -n "${DDIH_FAULT:-}" ] && args+=(--fault "$DDIH_FAULT")
if [ -c /dev/kvm ] && [ -w /dev/kvm ]; then
  echo "KVM device present: the harness will try it and fall back to TCG if it does not work"
fi
.venv/bin/ddi-harness doctor --target "$target" || true
status=0
.venv/bin/ddi-harness run "${args[@]}" || status=$?
# generated traces where they are cheap: a Linux guest, or the real vmem.c in-process
generate="${DDIH_GENERATE:-200}"
if { [ "$target" = linux ] || [ "$target" = illumos-gate ]; } && [ "$generate" -gt 0 ] && [ "$status" -le 1 ]; then
  gen=(--target "$target" --generate "$generate" --seed "$seed" --shard "$shard" --out "$out/generated"
       --regressions "$keep/regressions")
  [ -n "${DDIH_FAULT:-}" ] && gen+=(--fault "$DDIH_FAULT")
  .venv/bin/ddi-harness run "${gen[@]}" || status=$?
fi

# what changed since the last night
if [ -f "$out/run.json" ]; then
  if [ -f "$previous" ]; then
    .venv/bin/ddi-harness report diff "$previous" "$out/run.json" > "$out/diff.txt" || true
    .venv/bin/ddi-harness report diff --markdown "$previous" "$out/run.json" > "$out/diff.md" || true
    .venv/bin/ddi-harness report diff --json "$previous" "$out/run.json" > "$out/diff.json" || true
  else
    printf '## ddi-harness: what changed since the last run\n\nNo earlier run to compare with (%s): this is the first night.\n' \
      "$previous" > "$out/diff.md"
    cp "$out/diff.md" "$out/diff.txt"
  fi
  cat "$out/diff.txt"
  if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    { echo "# ${target} ${shard}"; cat "$out/diff.md"; } >> "$GITHUB_STEP_SUMMARY"
  fi
  mkdir -p "$keep"
  cp "$out/run.json" "$keep/run.json"
fi
exit "$status"
