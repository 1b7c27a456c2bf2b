//! The guest TSC frequency, to turn the probe's cycle counts into nanoseconds.

use serde::Serialize;

/// Where the TSC frequency came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TscSource {
    /// `KVM_GET_TSC_KHZ` on the probe's vCPU.
    KvmGetTscKhz,
    /// The host's `/proc/cpuinfo` "cpu MHz" (less exact: may be a nominal clock).
    ProcCpuinfo,
}

/// A TSC frequency in kHz and its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TscFreq {
    /// Ticks per millisecond.
    pub khz: u64,
    /// Where it came from.
    pub source: TscSource,
}

/// The first "cpu MHz" in a `/proc/cpuinfo` text, in kHz.
pub fn cpuinfo_khz(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() != "cpu MHz" {
            return None;
        }
        let mhz: f64 = v.trim().parse().ok()?;
        (mhz.is_finite() && mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
    })
}

/// `kvm_khz` (from `KVM_GET_TSC_KHZ`) if usable, else `/proc/cpuinfo`.
pub fn resolve(kvm_khz: Option<u32>) -> Option<TscFreq> {
    if let Some(khz) = kvm_khz.filter(|&k| k > 0) {
        return Some(TscFreq {
            khz: khz.into(),
            source: TscSource::KvmGetTscKhz,
        });
    }
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo_khz(&text).map(|khz| TscFreq {
        khz,
        source: TscSource::ProcCpuinfo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo() {
        let t =
            "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2894.562\ncache size\t: 512 KB\n";
        assert_eq!(cpuinfo_khz(t), Some(2_894_562));
        assert_eq!(cpuinfo_khz("cpu MHz : zero\n"), None);
        assert_eq!(cpuinfo_khz("nothing\n"), None);
    }

    #[test]
    fn prefers_kvm() {
        assert_eq!(
            resolve(Some(3_000_000)),
            Some(TscFreq {
                khz: 3_000_000,
                source: TscSource::KvmGetTscKhz
            })
        );
        if let Some(f) = resolve(Some(0)) {
            assert_eq!(f.source, TscSource::ProcCpuinfo);
        }
    }
}
