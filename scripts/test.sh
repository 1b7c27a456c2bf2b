#!/usr/bin/env bash
# The whole test suite: set up (idempotent, cached), lint, and run every test tier
# this machine supports (KVM and userfaultfd tests run here; stock-guest tests go
# through the nested sandbox where /dev/kvm cannot boot a stock kernel).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: cargo fmt --check" >&2
cargo fmt --all --check
echo "test: cargo clippy" >&2
cargo clippy --quiet --workspace --all-targets -- -D warnings
echo "test: cargo test" >&2
cargo test --workspace --release 2>&1
