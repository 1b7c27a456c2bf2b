#!/usr/bin/env bash
# The whole test suite: set up (idempotent, cached), lint, and run every test tier
# this machine supports (KVM and userfaultfd tests run here; stock-guest tests go
# through the nested sandbox where /dev/kvm cannot boot a stock kernel).
#
# The tiers this machine has (`swaplab doctor --tiers`) are required: a test that
# would skip for want of one of them fails instead. Every skip is listed at the end
# with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: cargo fmt --check" >&2
cargo fmt --all --check
echo "test: cargo clippy" >&2
cargo clippy --quiet --workspace --all-targets -- -D warnings
# setup.sh installed every program the tests drive: the `tool` tier is required too.
SWAPLAB_REQUIRE_TIERS="$(./target/release/swaplab doctor --tiers),tool"
# Every temporary file of this run (the logs below, and every test's temp
# dirs through TMPDIR) lives in one directory named after this shell's pid. It
# goes at exit; a run that was killed before its trap ran leaves it behind, and
# the next run sweeps it once that pid is gone.
tmp_root="${TMPDIR:-/tmp}"
for old in "$tmp_root"/swaplab-test.*; do
    [ -d "$old" ] || continue
    if ! kill -0 "${old##*.}" 2>/dev/null; then
        echo "test: removing ${old} (left by a killed run)" >&2
        rm -rf --one-file-system "$old"
    fi
done
TMPDIR="$tmp_root/swaplab-test.$$"
mkdir -m 0700 "$TMPDIR"
export TMPDIR
trap 'rm -rf --one-file-system "$TMPDIR"' EXIT
SWAPLAB_SKIP_LOG="$TMPDIR/skips"
# Tests that ran again because the nested sandbox's L1 died under them.
SWAPLAB_RETRY_LOG="$TMPDIR/retries"
: >"$SWAPLAB_SKIP_LOG"
: >"$SWAPLAB_RETRY_LOG"
# cargo already runs tests side by side: each test's matrix runs in one
# sandbox (`swaplab run --jobs auto` would start one per CPU); the --jobs test
# asks for its shards itself.
SWAPLAB_JOBS=1
export SWAPLAB_REQUIRE_TIERS SWAPLAB_SKIP_LOG SWAPLAB_RETRY_LOG SWAPLAB_JOBS
echo "test: cargo test (this machine has the tiers: ${SWAPLAB_REQUIRE_TIERS:-none}; a skip of one fails the run)" >&2
status=0
cargo test --workspace --release 2>&1 || status=$?
skips=$(wc -l <"$SWAPLAB_SKIP_LOG")
echo "test: ${skips} tests skipped (tiers this machine lacks)" >&2
if [ "$skips" -gt 0 ]; then
    # tier, test, reason -> "tier: reason (N tests)"
    awk -F'\t' '{n[$1": "$3]++} END {for (k in n) printf "test:   %s (%d)\n", k, n[k]}' \
        "$SWAPLAB_SKIP_LOG" | sort >&2
fi
retries=$(wc -l <"$SWAPLAB_RETRY_LOG")
echo "test: ${retries} retries (RETRYING) of tests the sandbox's L1 died under" >&2
if [ "$retries" -gt 0 ]; then
    awk -F'\t' '{printf "test:   %s: %s\n", $1, $2}' "$SWAPLAB_RETRY_LOG" >&2
fi
exit "$status"
