#!/usr/bin/env bash
# Soak of the host swapper (no KVM): ROUND_TRIPS page round trips (swap-ins;
# default 10^8) over a userfaultfd-registered mapping, shared by every store
# (memory, lz4, file) × policy (fifo, random, clock) × dirty tracking (on, off),
# with store write faults injected at random; every page checked on every read.
# Exits with the soak's status: 0 only when no page was wrong. Needs userfaultfd
# (root here). See swapper/examples/soak.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p swapper --example soak
exec "${CARGO_TARGET_DIR:-target}/release/examples/soak" --round-trips "${1:-100000000}"
