//! `swaplab-guest report`: the guest's swap, fault and reclaim counters
//! (`/proc/vmstat`), its memory (`/proc/meminfo`) and two timestamps, one JSON line
//! per sample.
//!
//! `--count N` samples N times (`--count 0`: until `SIGTERM`/`SIGINT`), every
//! `--interval-ms` (default 1000) on a fixed schedule. Without either flag it
//! samples once; with only `--interval-ms` it samples until stopped.

use std::io::Write;

use super::clock::{boottime_ns, monotonic_ns};
use super::error::GuestError;
use super::info::parse_meminfo;
use super::json::{emit, line, Value};
use super::{args::Flags, output};

/// `/proc/vmstat` counters reported by exact name.
pub const VMSTAT_KEYS: &[&str] = &[
    "pswpin",
    "pswpout",
    "pgpgin",
    "pgpgout",
    "pgfault",
    "pgmajfault",
    "pgactivate",
    "pgdeactivate",
    "pgrefill",
    "pgfree",
    "swap_ra",
    "swap_ra_hit",
    "oom_kill",
    "nr_free_pages",
    "nr_anon_pages",
    "nr_file_pages",
    "nr_swapcached",
    "thp_swpout",
    "thp_swpout_fallback",
    "balloon_inflate",
    "balloon_deflate",
];
/// `/proc/vmstat` counters reported by prefix (`pgscan_kswapd`, `pgsteal_direct`, …).
pub const VMSTAT_PREFIXES: &[&str] = &[
    "pgscan",
    "pgsteal",
    "workingset_refault",
    "workingset_activate",
    "workingset_restore",
];

/// Arguments of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportArgs {
    /// Time between samples.
    pub interval_ms: u64,
    /// Samples (0: until stopped).
    pub count: u64,
}

impl ReportArgs {
    /// Parse `[--interval-ms M] [--count N]`.
    pub fn parse(args: &[String]) -> Result<Self, GuestError> {
        let f = Flags::parse("report", args, &["--interval-ms", "--count"])?;
        let interval = f.u64_in("--interval-ms", 0, 86_400_000)?;
        let count = f.u64_in("--count", 0, u64::MAX)?;
        Ok(Self {
            interval_ms: interval.unwrap_or(1000),
            count: count.unwrap_or(if interval.is_some() { 0 } else { 1 }),
        })
    }
}

/// The reported `/proc/vmstat` counters, in file order.
pub fn select_vmstat(text: &str) -> Vec<(&str, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            let wanted =
                VMSTAT_KEYS.contains(&k) || VMSTAT_PREFIXES.iter().any(|p| k.starts_with(p));
            Some((k, v.trim().parse().ok()?)).filter(|_| wanted)
        })
        .collect()
}

/// One sample as a JSON line.
pub fn sample_line(seq: u64, mono_ns: u64, boot_ns: u64, meminfo: &str, vmstat: &str) -> String {
    let m = parse_meminfo(meminfo);
    let mut fields: Vec<(&str, Value<'_>)> = vec![
        ("seq", Value::U(seq)),
        ("monotonic_ns", Value::U(mono_ns)),
        ("boottime_ns", Value::U(boot_ns)),
        ("mem_total_kib", Value::U(m.total_kib)),
        ("mem_free_kib", Value::U(m.free_kib)),
        ("mem_available_kib", Value::U(m.available_kib)),
        ("cached_kib", Value::U(m.cached_kib)),
        ("swap_total_kib", Value::U(m.swap_total_kib)),
        ("swap_free_kib", Value::U(m.swap_free_kib)),
    ];
    fields.extend(
        select_vmstat(vmstat)
            .into_iter()
            .map(|(k, v)| (k, Value::U(v))),
    );
    line("report", &fields)
}

/// A `/proc` file's text; the error names the file.
pub(super) fn read(path: &str) -> Result<String, GuestError> {
    std::fs::read_to_string(path).map_err(GuestError::io(format!("reading {path}")))
}

/// Sample and print.
pub fn run(args: &ReportArgs, out: &mut dyn Write) -> Result<(), GuestError> {
    let start = monotonic_ns();
    let interval = args.interval_ms * 1_000_000;
    let mut seq = 0u64;
    loop {
        seq += 1;
        let (mono, boot) = (monotonic_ns(), boottime_ns());
        let l = sample_line(
            seq,
            mono,
            boot,
            &read("/proc/meminfo")?,
            &read("/proc/vmstat")?,
        );
        emit(out, &l)?;
        if args.count != 0 && seq >= args.count {
            return Ok(());
        }
        if !output::sleep_until(start + seq * interval) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<ReportArgs, GuestError> {
        ReportArgs::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_flags_and_defaults() {
        assert_eq!(
            args(&[]).unwrap(),
            ReportArgs {
                interval_ms: 1000,
                count: 1
            }
        );
        assert_eq!(
            args(&["--interval-ms", "200"]).unwrap(),
            ReportArgs {
                interval_ms: 200,
                count: 0
            }
        );
        assert_eq!(
            args(&["--count=3", "--interval-ms=0"]).unwrap(),
            ReportArgs {
                interval_ms: 0,
                count: 3
            }
        );
        assert!(matches!(
            args(&["--count", "-1"]),
            Err(GuestError::Usage(_))
        ));
        assert!(matches!(args(&["--mb", "1"]), Err(GuestError::Usage(_))));
    }

    #[test]
    fn selects_the_swap_and_reclaim_counters() {
        let vmstat = "nr_free_pages 1000\nnr_zone_inactive_anon 5\npswpin 7\npswpout 9\npgfault 100\npgmajfault 3\npgscan_kswapd 11\npgscan_direct 12\npgsteal_kswapd 13\nworkingset_refault_anon 14\nworkingset_refault_file 15\npgscan_bogus x\nunrelated 1\n";
        let got = select_vmstat(vmstat);
        let keys: Vec<&str> = got.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "nr_free_pages",
                "pswpin",
                "pswpout",
                "pgfault",
                "pgmajfault",
                "pgscan_kswapd",
                "pgscan_direct",
                "pgsteal_kswapd",
                "workingset_refault_anon",
                "workingset_refault_file"
            ]
        );
        let l = sample_line(
            2,
            10,
            20,
            "MemTotal: 100 kB\nCached: 7 kB\nSwapFree: 3 kB\n",
            vmstat,
        );
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["kind"], "report");
        assert_eq!(
            (v["seq"].as_u64(), v["monotonic_ns"].as_u64()),
            (Some(2), Some(10))
        );
        assert_eq!(v["boottime_ns"], 20);
        assert_eq!(
            (v["mem_total_kib"].as_u64(), v["cached_kib"].as_u64()),
            (Some(100), Some(7))
        );
        assert_eq!(v["swap_free_kib"], 3);
        assert_eq!(
            (v["pswpin"].as_u64(), v["pswpout"].as_u64()),
            (Some(7), Some(9))
        );
        assert!(v.get("unrelated").is_none());
    }

    #[test]
    fn samples_this_host() {
        let mut out = Vec::new();
        run(
            &ReportArgs {
                interval_ms: 0,
                count: 3,
            },
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let v: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(v.len(), 3);
        assert!(v[0]["mem_total_kib"].as_u64().unwrap() > 0);
        assert!(v[0]["pgfault"].as_u64().is_some());
        assert!(v[2]["monotonic_ns"].as_u64() >= v[0]["monotonic_ns"].as_u64());
        assert_eq!(v[2]["seq"], 3);
    }
}
