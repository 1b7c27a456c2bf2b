#!/usr/bin/env bash
# Run every fuzz target in fuzz/ (cargo-fuzz, nightly) for MINUTES minutes each
# (default 10), or for RUNS executions each, one after the other, and print one
# line per target: executions, executions per second, coverage, corpus size,
# crashes and time taken.
#
#   scripts/fuzz.sh [MINUTES [TARGET...]]        (TARGETs: only these)
#   scripts/fuzz.sh --runs RUNS [TARGET...]      (a campaign of RUNS execs each)
#
# Each target starts from its committed seeds (fuzz/corpus/<target>/, read only) and
# what earlier runs found (fuzz/work/<target>/, not committed, where new inputs go).
# libFuzzer's output is kept in fuzz/work/<target>.log. A crash leaves its input in
# fuzz/artifacts/<target>/ (reproduce: cd fuzz && cargo +nightly fuzz run <target>
# artifacts/<target>/crash-...); the script exits nonzero if any target crashed or
# failed to run.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: scripts/fuzz.sh [MINUTES [TARGET...]]   (minutes per target, 1..=10080, default 10)" >&2
    echo "       scripts/fuzz.sh --runs RUNS [TARGET...]  (executions per target, 1..=10^10)" >&2
    exit 2
}
# libFuzzer stops at whichever limit comes first: -max_total_time or -runs.
if [[ "${1:-}" == --runs ]]; then
    RUNS=${2:-}
    # At most 10^10 executions (11 digits; no leading zero).
    [[ "$RUNS" =~ ^[1-9][0-9]{0,10}$ ]] && ((RUNS <= 10000000000)) || usage
    shift 2
    limit=(-runs="$RUNS")
    what="$RUNS executions"
else
    MINUTES=${1:-10}
    # A week at most.
    [[ "$MINUTES" =~ ^[1-9][0-9]{0,4}$ ]] && ((MINUTES <= 10080)) || usage
    shift $(($# > 0))
    limit=(-max_total_time=$((MINUTES * 60)))
    what="$MINUTES min"
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: installing the nightly toolchain (cargo-fuzz needs it)" >&2
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# The fuzz crate is its own workspace, built instrumented with nightly into
# fuzz/target; a shared target directory would rebuild the main workspace's
# artifacts each way.
unset CARGO_TARGET_DIR
cd fuzz
mapfile -t targets < <(cargo +nightly fuzz list)
if ((${#targets[@]} == 0)); then
    echo "fuzz: no targets in fuzz/" >&2
    exit 1
fi
if (($#)); then
    for t in "$@"; do
        if ! printf '%s\n' "${targets[@]}" | grep -qx -- "$t"; then
            echo "fuzz: no target $t (targets: ${targets[*]})" >&2
            exit 2
        fi
    done
    targets=("$@")
fi
echo "fuzz: building ${targets[*]}" >&2
for t in "${targets[@]}"; do
    cargo +nightly fuzz build "$t"
done

# libFuzzer's artifacts: crashes, leaks, timeouts, out-of-memory inputs.
artifacts() {
    find "artifacts/$1" -maxdepth 1 -type f \
        \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) \
        2>/dev/null | sort
}

# libFuzzer's final statistic $1 in log $2.
final_stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }

summary=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "artifacts/$t"
    log="work/$t.log"
    before=$(artifacts "$t")
    echo "fuzz: $t for $what (log: fuzz/$log)" >&2
    rc=0
    start=$SECONDS
    cargo +nightly fuzz run "$t" "work/$t" "corpus/$t" -- \
        "${limit[@]}" -print_final_stats=1 2>"$log" || rc=$?
    took=$((SECONDS - start))
    new=$(comm -13 <(echo "$before") <(artifacts "$t") | grep -c . || true)
    execs=$(final_stat number_of_executed_units "$log")
    rate=$(final_stat average_exec_per_sec "$log")
    # The last status line: `#N  REDUCE cov: X ft: Y corp: U/SIZE ...`.
    last=$(grep -E '^#[0-9]+.*cov: [0-9]+' "$log" | tail -n 1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
    line=$(printf '%-12s execs %-10s execs/s %-7s cov %-6s ft %-6s corpus %-12s crashes %s  %ss' \
        "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$new" "$took")
    if ((new > 0)); then
        line+="  ($(comm -13 <(echo "$before") <(artifacts "$t") | sed 's|^|fuzz/|' | tr '\n' ' '))"
        failed=1
    elif ((rc != 0)); then
        line+="  (exit $rc, see fuzz/$log)"
        failed=1
    fi
    summary+=("$line")
    echo "$line" >&2
done

echo
echo "fuzz: $what per target"
printf '%s\n' "${summary[@]}"
exit "$failed"
