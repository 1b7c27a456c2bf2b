//! `swaplab-guest info`: what the guest sees.

use std::io::Write;

use super::error::GuestError;
use super::json::{line, Value};

/// The `/proc/meminfo` fields we report, in KiB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// MemTotal.
    pub total_kib: u64,
    /// MemFree.
    pub free_kib: u64,
    /// MemAvailable.
    pub available_kib: u64,
    /// SwapTotal.
    pub swap_total_kib: u64,
    /// SwapFree.
    pub swap_free_kib: u64,
    /// Cached (page cache).
    pub cached_kib: u64,
}

/// Parse the text of `/proc/meminfo`. Missing fields stay 0.
pub fn parse_meminfo(text: &str) -> MemInfo {
    let mut m = MemInfo::default();
    for l in text.lines() {
        let Some((key, rest)) = l.split_once(':') else {
            continue;
        };
        let Some(kib) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) else {
            continue;
        };
        match key.trim() {
            "MemTotal" => m.total_kib = kib,
            "MemFree" => m.free_kib = kib,
            "MemAvailable" => m.available_kib = kib,
            "SwapTotal" => m.swap_total_kib = kib,
            "SwapFree" => m.swap_free_kib = kib,
            "Cached" => m.cached_kib = kib,
            _ => {}
        }
    }
    m
}

fn read(path: &str) -> Result<String, GuestError> {
    std::fs::read_to_string(path).map_err(GuestError::io(format!("reading {path}")))
}

/// Print meminfo, cpus, kernel and uptime lines.
pub fn run(out: &mut dyn Write) -> Result<(), GuestError> {
    use super::json::emit;
    let m = parse_meminfo(&read("/proc/meminfo")?);
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let online = read("/sys/devices/system/cpu/online").unwrap_or_default();
    let release = read("/proc/sys/kernel/osrelease").unwrap_or_default();
    let uptime: f64 = read("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next().and_then(|s| s.parse().ok()))
        .unwrap_or(f64::NAN);
    let lines = [
        line(
            "meminfo",
            &[
                ("mem_total_kib", Value::U(m.total_kib)),
                ("mem_free_kib", Value::U(m.free_kib)),
                ("mem_available_kib", Value::U(m.available_kib)),
                ("swap_total_kib", Value::U(m.swap_total_kib)),
                ("swap_free_kib", Value::U(m.swap_free_kib)),
                ("cached_kib", Value::U(m.cached_kib)),
            ],
        ),
        line(
            "cpus",
            &[
                ("nproc", Value::U(nproc)),
                ("online", Value::S(online.trim())),
            ],
        ),
        line("kernel", &[("release", Value::S(release.trim()))]),
        line("uptime", &[("seconds", Value::F(uptime))]),
    ];
    for l in lines {
        emit(out, &l)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields() {
        let text = "MemTotal:         506112 kB\nMemFree:          480000 kB\nMemAvailable:     470000 kB\nBuffers: 1 kB\nCached: 9 kB\nSwapCached: 5 kB\nSwapTotal:        0 kB\nSwapFree: 7 kB\nbogus line\n";
        let m = parse_meminfo(text);
        assert_eq!(
            m,
            MemInfo {
                total_kib: 506112,
                free_kib: 480000,
                available_kib: 470000,
                swap_total_kib: 0,
                swap_free_kib: 7,
                cached_kib: 9,
            }
        );
    }
}
