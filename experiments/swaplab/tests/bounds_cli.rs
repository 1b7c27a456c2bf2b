//! Out-of-range numbers and files the host cannot write are usage errors, reported
//! before anything runs (no VM, no sandbox): never panics or hangs.

mod common;

use common::assert_cli_usage_error as assert_usage_error;

#[test]
fn run_overrides_meet_the_scenario_files_bounds() {
    assert_usage_error(
        &["run", "--repetitions", "101"],
        "repetitions: 101 is out of range",
    );
    assert_usage_error(
        &["run", "--timeout", "18446744073709551615"],
        "timeout_s: 18446744073709551615 is out of range",
    );
    assert_usage_error(&["run", "--mem", "1T"], "guest.mem: 1T is out of range");
    assert_usage_error(
        &["run", "--passes", "0"],
        "workload.passes: 0 is out of range",
    );
}

#[test]
fn the_host_swapper_override_is_checked_against_each_scenario() {
    assert_usage_error(
        &["run", "--host-swapper", "linux"],
        "\"linux\" is not a host swapper (uffd or kernel)",
    );
    // The kernel has none of the userfaultfd swapper's mitigations.
    assert_usage_error(
        &["run", "host-swap-mitigated", "--host-swapper", "kernel"],
        "host.mitigations: \"silent-writes\" is a mitigation of swaplab's userfaultfd swapper",
    );
}

#[test]
fn durations_are_bounded_everywhere() {
    assert_usage_error(
        &["sandbox", "--timeout", "18446744073709551615", "--", "true"],
        "the timeout must be 1 to",
    );
    assert_usage_error(
        &["boot", "--timeout", "18446744073709551615"],
        "--timeout must be between 1 and",
    );
    assert_usage_error(
        &["bench", "boot", "--timeout", "18446744073709551615"],
        "--timeout must be between 1 and",
    );
    assert_usage_error(
        &["probe", "--spin-us", "20000", "--host-limit", "16M"],
        "--spin-us",
    );
}

#[test]
fn what_the_host_writes_is_checked_before_the_guest_boots() {
    assert_usage_error(
        &[
            "boot",
            "--mem",
            "256M",
            "--host-limit",
            "300M",
            "--run",
            "true",
        ],
        "--host-limit 300M must be at least 32M and below --mem 256M",
    );
    assert_usage_error(
        &[
            "boot",
            "--console",
            "/nonexistent/console.log",
            "--run",
            "true",
        ],
        "--console /nonexistent/console.log",
    );
    assert_usage_error(
        &["run", "--out", "/proc/swaplab-out"],
        "--out /proc/swaplab-out",
    );
}
