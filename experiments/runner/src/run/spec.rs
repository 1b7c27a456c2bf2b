//! From a [`Scenario`] to what the machine needs: the guest command, the
//! swapper configuration (with the mitigations switched on or off), the
//! sampling interval.

use std::path::Path;
use std::time::Duration;

use swapper::{StoreKind, SwapperConfig};

use scenario::{
    BalloonPolicy, HostConfig, HostSwapper, Mitigation, Scenario, StoreChoice, WorkloadKind,
};

/// The workload's guest command (results go to the channel), then the disk
/// read if the scenario asks for one; the workload's status is the command's
/// unless the read fails.
pub fn workload_command(s: &Scenario) -> String {
    let w = &s.workload;
    let mut cmd = match w.kind {
        WorkloadKind::Touch => {
            let mut c = format!(
                "swaplab-guest touch --mb {} --passes {} --pattern {} --seed {}",
                w.mb, w.passes, w.pattern, w.seed
            );
            if w.write_ratio < 1.0 {
                c += &format!(" --write-ratio {}", w.write_ratio);
            }
            c
        }
        WorkloadKind::Integrity if w.duration_s > 0 => format!(
            // Until stopped: SIGTERM ends it, within the round it is in, but
            // never before one whole round is verified.
            "swaplab-guest integrity --mb {} --rounds 0 --seed {} & W=$!; sleep {}; kill -TERM $W; wait $W",
            w.mb, w.seed, w.duration_s
        ),
        WorkloadKind::Integrity => format!(
            "swaplab-guest integrity --mb {} --rounds {} --seed {}",
            w.mb, w.passes, w.seed
        ),
        // A subshell: the command's `exit` or `cd` does not end the script
        // around it (the reporter must still be stopped).
        WorkloadKind::Command => format!("( {} )", w.command.as_deref().unwrap_or("false")),
        WorkloadKind::App => match w.application() {
            Some(app) => format!(
                "( cd /root && {} )",
                workloads::apps::command(
                    app,
                    &workloads::apps::AppParams {
                        mb: w.mb,
                        passes: w.passes,
                        cpus: s.guest.cpus,
                        sequential: w.pattern == workloads::probe::Pattern::Seq,
                        seed: w.seed,
                    },
                )
            ),
            None => "false".to_string(),
        },
    };
    if w.disk_read_mb > 0 {
        // Buffered: the guest's page cache takes frames the workload just
        // freed, and the disk's data lands in them.
        cmd = format!(
            "{cmd} && dd if={GUEST_DISK} of=/dev/null bs=1M count={} 2>/dev/null",
            w.disk_read_mb
        );
    }
    if w.disk_cache_mb > 0 {
        // Into the page cache before the workload, used again after it.
        let read = format!(
            "dd if={GUEST_DISK} of=/dev/null bs=1M skip={} count={} 2>/dev/null",
            w.disk_read_mb, w.disk_cache_mb
        );
        cmd = format!("{read} && {cmd} && {read}");
    }
    cmd
}

/// The guest's disk (the swap disk) as the guest names it.
pub const GUEST_DISK: &str = "/dev/vda";

/// The whole guest command: a vmstat reporter in the background, the
/// workload, a final sample; the workload's status is the command's.
///
/// With a manual balloon the workload waits until the balloon holds its
/// target (`swaplab-guest balloon-wait`): the scenario is about the memory the
/// host leaves the guest, not about a race between the workload and the
/// inflation.
pub fn guest_command(s: &Scenario) -> String {
    let ms = sample_interval(s).as_millis();
    // Steps the workload needs done first, each ending in `&& `.
    let mut before = String::new();
    if free_page_reporting(s) {
        before += &format!(
            "echo {REPORTING_ORDER} > /sys/module/page_reporting/parameters/page_reporting_order && "
        );
    }
    if let BalloonPolicy::Manual { target } = &s.balloon.policy {
        if target.bytes() >= 1 << 20 {
            before += &format!(
                "swaplab-guest balloon-wait --mb {} --timeout-s {BALLOON_WAIT_S} && ",
                target.bytes() >> 20
            );
        }
    }
    format!(
        "swaplab-guest report --interval-ms {ms} & R=$!; {before}{}; S=$?; kill $R; wait $R 2>/dev/null; swaplab-guest report --count 1; exit $S",
        workload_command(s)
    )
}

/// How long a manual balloon's workload waits for the inflation, seconds.
pub const BALLOON_WAIT_S: u64 = 120;

/// How often the guest reports vmstat and the host samples its timeline.
pub fn sample_interval(s: &Scenario) -> Duration {
    match s.balloon.stats_interval_ms {
        0 => Duration::from_millis(500),
        ms => Duration::from_millis(u64::from(ms).clamp(100, 2000)),
    }
}

/// Whether `m` is on.
pub fn has(h: &HostConfig, m: Mitigation) -> bool {
    h.mitigations.contains(&m)
}

/// The host swapper's configuration for `h`, stores in `scratch`.
///
/// - `silent-writes` on: dirty tracking (write-protect), so a clean page with
///   a valid store copy is dropped without a write. Off: every eviction
///   writes, and the swapper counts the silent ones by checksum.
/// - `decayed-sequentiality` on: read-ahead of 8 pages (unless the scenario
///   sets its own), which turns a sequential guest scan into few store reads
///   whatever the slots' order.
/// - `stale-reads` / `false-reads`: the blk device side (see
///   [`false_reads_mitigated`]); `false-reads` also gives the guest a balloon
///   with free page reporting ([`super::balloon::attach`]).
/// - `false-anonymity` on: the Swap Mapper's named pages
///   ([`swapper::named`]): pages the guest read from a disk are dropped at
///   eviction and read back from the disk. Off: they are counted
///   (`false_anonymity`).
pub fn swapper_config(h: &HostConfig, scratch: &Path) -> SwapperConfig {
    let prefetch = if has(h, Mitigation::DecayedSequentiality) && h.prefetch == 0 {
        8
    } else {
        h.prefetch
    };
    SwapperConfig {
        limit_bytes: h.limit.bytes(),
        store: match h.store {
            StoreChoice::File => StoreKind::File {
                dir: scratch.to_path_buf(),
                direct: false,
            },
            StoreChoice::Memory => StoreKind::Memory,
            StoreChoice::Lz4 => StoreKind::Lz4,
            StoreChoice::Redis => StoreKind::Redis {
                // Validation requires it with this store.
                url: h.store_url.clone().unwrap_or_default(),
            },
        },
        policy: policy_kind(h.policy),
        prefetch,
        dirty_tracking: has(h, Mitigation::SilentWrites),
        named: has(h, Mitigation::FalseAnonymity),
        checksums: true,
        trace_capacity: 1 << 20,
        store_timeout: store_timeout(sandbox::in_sandbox()),
        ..SwapperConfig::default()
    }
}

/// A remote store's request timeout in the nested sandbox. L1 stands still
/// for seconds at a time when its host is busy (its emulation stalls: up to
/// 25 s seen with three L1s on two cores), and a request's timer runs on
/// through the stall while the server, in the same L1, cannot answer: the
/// default second would stop the run with a store failure that is the
/// emulation's. The stall guard reports such stalls and runs the repetition
/// again; the store only has to outlast them.
pub const SANDBOX_STORE_TIMEOUT: Duration = Duration::from_secs(60);

/// A remote store's request timeout: the store's default natively,
/// [`SANDBOX_STORE_TIMEOUT`] in the nested sandbox.
pub fn store_timeout(in_sandbox: bool) -> Duration {
    if in_sandbox {
        SANDBOX_STORE_TIMEOUT
    } else {
        swapper::store::redis::conn::DEFAULT_TIMEOUT
    }
}

/// The swapper's policy for a scenario's choice.
pub fn policy_kind(p: scenario::PolicyKind) -> swapper::PolicyKind {
    match p {
        scenario::PolicyKind::Fifo => swapper::PolicyKind::Fifo,
        scenario::PolicyKind::Random => swapper::PolicyKind::Random,
        scenario::PolicyKind::Clock => swapper::PolicyKind::Clock,
    }
}

/// Whether the guest gets free page reporting (the `false-reads`
/// mitigation): a balloon device that offers it ([`super::balloon::attach`])
/// and [`REPORTING_ORDER`], set by the guest command.
pub fn free_page_reporting(s: &Scenario) -> bool {
    s.host
        .as_ref()
        .is_some_and(|h| has(h, Mitigation::FalseReads))
}

/// The guest's `page_reporting.page_reporting_order` with free page
/// reporting: blocks of 2^3 pages (32 KiB). Linux reports only while a zone
/// has `32 << order` pages free above its low watermark; at its default
/// order (9, 2 MiB blocks) that is 64 MiB more, which a guest of the
/// matrix's size never has while its workload runs, and it reports nothing.
/// The guest command writes it to sysfs once the balloon driver is up: 6.1
/// overwrites the boot parameter when the driver registers.
pub const REPORTING_ORDER: u32 = 3;

/// Whether the blk device installs whole pages it reads from disk into
/// host-evicted guest pages instead of letting the swapper read their stale
/// copies first.
pub fn false_reads_mitigated(h: Option<&HostConfig>) -> bool {
    h.is_some_and(|h| has(h, Mitigation::StaleReads) || has(h, Mitigation::FalseReads))
}

/// The host's configuration where the kernel swaps guest RAM
/// (`host.swapper = "kernel"`), not swaplab's userfaultfd swapper.
pub fn kernel_host(h: Option<&HostConfig>) -> Option<&HostConfig> {
    h.filter(|h| h.swapper == HostSwapper::Kernel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scenario::load;

    fn builtin(name: &str) -> Scenario {
        load(name).unwrap().scenarios.remove(0)
    }

    #[test]
    fn a_remote_stores_timeout_outlasts_the_sandboxs_stalls_and_is_a_valid_setting() {
        assert_eq!(
            store_timeout(false),
            swapper::store::redis::conn::DEFAULT_TIMEOUT
        );
        assert_eq!(store_timeout(true), SANDBOX_STORE_TIMEOUT);
        for t in [store_timeout(false), store_timeout(true)] {
            assert!(
                swapper::store::redis::conn::TIMEOUT_RANGE.contains(&t),
                "{t:?}"
            );
        }
        let far = load("far-memory").unwrap();
        let h = far.scenarios[1].host.as_ref().unwrap();
        let cfg = swapper_config(h, Path::new("/tmp"));
        assert_eq!(cfg.store_timeout, store_timeout(sandbox::in_sandbox()));
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn commands_name_the_workload() {
        let s = builtin("guest-swap");
        let c = guest_command(&s);
        assert!(
            c.contains("swaplab-guest touch --mb 384 --passes 2 --pattern random"),
            "{c}"
        );
        assert!(c.starts_with("swaplab-guest report --interval-ms"));
        assert!(!c.contains("--write-ratio") && !c.contains("dd "), "{c}");
        // The standard matrix caches the disk's second 64 MiB, reads after
        // writing, then reads the first 64 MiB and the cached ones again.
        let m = load("default").unwrap();
        let hs = m.scenarios.iter().find(|s| s.name == "host-swap").unwrap();
        let c = workload_command(hs);
        assert!(
            c.contains("--passes 2") && c.contains("--write-ratio 0"),
            "{c}"
        );
        let cache = "dd if=/dev/vda of=/dev/null bs=1M skip=64 count=64 2>/dev/null";
        let read = "dd if=/dev/vda of=/dev/null bs=1M count=64 2>/dev/null";
        assert!(
            c.starts_with(&format!("{cache} && swaplab-guest touch")),
            "{c}"
        );
        assert!(c.ends_with(&format!("&& {read} && {cache}")), "{c}");
    }

    #[test]
    fn a_manual_balloon_is_full_before_the_workload_starts() {
        let m = load("default").unwrap();
        let b = m.scenarios.iter().find(|s| s.name == "balloon").unwrap();
        let c = guest_command(b);
        let wait = c.find("swaplab-guest balloon-wait --mb 72 --timeout-s 120 && ");
        let touch = c.find("swaplab-guest touch");
        assert!(wait.is_some() && wait < touch, "{c}");
        let hs = m.scenarios.iter().find(|s| s.name == "host-swap").unwrap();
        assert!(!guest_command(hs).contains("balloon-wait"));
    }

    #[test]
    fn false_reads_brings_free_page_reporting_at_a_small_order() {
        let m = load("default").unwrap();
        let by = |n: &str| m.scenarios.iter().find(|s| s.name == n).unwrap();
        let (hs, mit) = (by("host-swap"), by("host-swap-mitigated"));
        assert!(!free_page_reporting(hs) && free_page_reporting(mit));
        let c = guest_command(mit);
        let order =
            c.find("echo 3 > /sys/module/page_reporting/parameters/page_reporting_order && ");
        assert!(
            order.is_some() && order < c.find("swaplab-guest touch"),
            "{c}"
        );
        assert!(!guest_command(hs).contains("page_reporting"));
    }

    #[test]
    fn a_timed_integrity_run_is_stopped_after_its_duration() {
        let soak = builtin("soak");
        let c = workload_command(&soak);
        assert!(
            c.starts_with("swaplab-guest integrity --mb 56 --rounds 0 --seed 1 & W=$!; sleep 600;"),
            "{c}"
        );
        assert!(c.ends_with("kill -TERM $W; wait $W"), "{c}");
    }

    #[test]
    fn mitigations_map_to_swapper_settings() {
        let plain = builtin("host-swap");
        let h = plain.host.as_ref().unwrap();
        let c = swapper_config(h, Path::new("/tmp"));
        assert!(!c.dirty_tracking);
        assert_eq!(c.prefetch, 0);
        assert!(!false_reads_mitigated(Some(h)));
        let mut m = builtin("host-swap-mitigated");
        let h = m.host.as_mut().unwrap();
        h.mitigations.retain(|x| *x != Mitigation::FalseAnonymity);
        let c = swapper_config(h, Path::new("/tmp"));
        assert!(c.dirty_tracking);
        assert_eq!(c.prefetch, 8);
        assert!(false_reads_mitigated(Some(h)));
        assert!(!c.named);
        h.mitigations.push(Mitigation::FalseAnonymity);
        let c = swapper_config(h, Path::new("/tmp"));
        assert!(c.named);
    }
}
