#!/usr/bin/env bash
# Nightly conformance run for any CI system (GitHub Actions uses ci/nightly.yml).
#
#   ci/nightly.sh [TARGET] [SHARD]        e.g.  ci/nightly.sh linux 2/4
#
# Installs what it needs (make test's set-up), runs one shard of the corpus plus
# generated traces against TARGET, and leaves JUnit, JSON and HTML reports in
# out/<target>-<shard>/ for the CI system to collect.  Caches worth keeping
# between runs: ~/.cache/ddi-harness (guest images, downloaded cloud images,
# provisioned illumos bases).  Exit status: 0 clean, 1 divergences, 2 set-up.
#
# Environment: DDIH_SEED (default: the date, so each night explores new traces
# and a failure can be replayed with the same seed), DDIH_GENERATE (default
# 200), DDIH_RUN_BUDGET seconds (default 4800), DDIH_DESTRUCTIVE=1 to include
# traces that panic or hang the kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-linux}"
shard="${2:-1/1}"
seed="${DDIH_SEED:-$(date -u +%Y%m%d)}"
out="out/${target}-${shard/\//of}"

make venv system-deps
args=(--target "$target" --shard "$shard" --out "$out" --run-budget "${DDIH_RUN_BUDGET:-4800}")
[ "${DDIH_DESTRUCTIVE:-0}" = 1 ] && args+=(--destructive)
if [ -c /dev/kvm ] && [ -w /dev/kvm ]; then
  echo "KVM device present: the harness will try it and fall back to TCG if it does not work"
fi
.venv/bin/ddi-harness doctor --target "$target" || true
status=0
.venv/bin/ddi-harness run "${args[@]}" || status=$?
# generated traces only on the Linux target: they are cheap there
if [ "$target" = linux ] && [ "$status" -le 1 ]; then
  .venv/bin/ddi-harness run --target linux --generate "${DDIH_GENERATE:-200}" --seed "$seed" \
    --shard "$shard" --out "$out/generated" || status=$?
fi
exit "$status"
