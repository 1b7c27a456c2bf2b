//! The probe's text report.

use std::fmt::Write as _;

use base::ByteSize;
use report::stats::fmt_ns;

use super::ProbeResult;

/// The human-readable report.
pub fn render_text(r: &ProbeResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "probe: {} test RAM ({} pages), pattern {}, {} pass{}, seed {}",
        ByteSize(r.mem_bytes),
        r.pages,
        r.pattern,
        r.passes.len(),
        if r.passes.len() == 1 { "" } else { "es" },
        r.seed
    );
    let _ = writeln!(
        s,
        "TSC {:.3} MHz ({:?})\n",
        r.tsc_khz as f64 / 1000.0,
        r.tsc_source
    );
    let _ = writeln!(
        s,
        "{:>4} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "pass", "accesses", "pages", "new", "wall", "min", "p50", "p90", "p99", "max"
    );
    for p in &r.passes {
        let l = &p.latency_ns;
        let _ = writeln!(
            s,
            "{:>4} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            p.pass,
            p.accesses,
            p.pages,
            p.new_pages,
            fmt_ns(p.wall_ns),
            fmt_ns(l.min),
            fmt_ns(l.p50),
            fmt_ns(l.p90),
            fmt_ns(l.p99),
            fmt_ns(l.max)
        );
    }
    let i = &r.integrity;
    let _ = writeln!(
        s,
        "\npages touched {} of {}, {} accesses, wall {}, integrity {}",
        r.pages_touched,
        r.pages,
        r.accesses,
        fmt_ns(r.wall_ns),
        if i.ok {
            format!("ok ({} pages checked)", i.pages_checked)
        } else {
            format!(
                "FAILED ({} bad tags, {} pages mismatched)",
                i.bad_tags, i.pages_mismatched
            )
        }
    );
    let _ = writeln!(
        s,
        "\nVM exits to the VMM (vCPU in KVM_RUN {}):",
        fmt_ns(r.vcpu_in_kvm_run_ns)
    );
    let _ = writeln!(
        s,
        "  {:<14} {:>8} {:>10} {:>10}",
        "reason", "count", "total", "mean"
    );
    for (reason, c) in &r.exits {
        let _ = writeln!(
            s,
            "  {:<14} {:>8} {:>10} {:>10}",
            reason.name(),
            c.count,
            fmt_ns(c.time_ns),
            fmt_ns(c.mean_ns())
        );
    }
    let k = &r.kvm_stats;
    if k.available {
        let pick = [
            "exits",
            "pf_taken",
            "pf_fixed",
            "pf_emulate",
            "mmio_exits",
            "halt_exits",
            "signal_exits",
        ];
        let shown: Vec<String> = pick
            .iter()
            .filter_map(|n| k.vcpu.get(*n).map(|v| format!("{n} {v}")))
            .collect();
        let _ = writeln!(s, "KVM stats (in kernel): {}", shown.join(", "));
    } else {
        let _ = writeln!(
            s,
            "KVM stats: unavailable ({})",
            k.unavailable_reason.as_deref().unwrap_or("unknown")
        );
    }
    s
}
