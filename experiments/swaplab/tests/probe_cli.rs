//! `swaplab probe` as a user runs it: the built binary, on this host's /dev/kvm.
//!
//! Runs that need KVM skip, with a printed reason, only when /dev/kvm is absent.

mod common;

use common::{assert_usage_error, have_kvm, probe_json, swaplab, u};

/// The acceptance run: every page touched once per pass; first touch (pass 1) is much
/// slower than touching resident pages (pass 2).
#[test]
fn random_256m_touches_every_page_and_resident_pass_is_faster() {
    if !have_kvm() {
        return;
    }
    let v = probe_json(&["--mem", "256M", "--pattern", "random", "--passes", "2"]);
    assert_eq!(u(&v["pages_touched"]), 65536);
    assert!(u(&v["wall_ns"]) > 0);
    assert!(u(&v["tsc_khz"]) > 0);
    let passes = v["passes"].as_array().expect("passes is a list");
    assert_eq!(passes.len(), 2);
    for p in passes {
        assert_eq!(u(&p["accesses"]), 65536);
        assert_eq!(u(&p["pages"]), 65536, "a permutation touches every page");
        let l = &p["latency_ns"];
        let (p50, p90, p99, max) = (u(&l["p50"]), u(&l["p90"]), u(&l["p99"]), u(&l["max"]));
        assert!(p50 <= p90 && p90 <= p99 && p99 <= max, "{l}");
    }
    assert_eq!(u(&passes[0]["new_pages"]), 65536);
    assert_eq!(u(&passes[1]["new_pages"]), 0);
    let first = u(&passes[0]["latency_ns"]["p50"]);
    let resident = u(&passes[1]["latency_ns"]["p50"]);
    assert!(
        2 * resident < first,
        "pass 2 p50 {resident} ns should be well below pass 1 p50 {first} ns"
    );
    // Doorbells are the only userspace exits: ready, a few chunk ends, finished.
    let mmio = &v["exits"]["mmio_write"];
    assert!(u(&mmio["count"]) >= 3, "{}", v["exits"]);
    assert!(mmio["time_ns"].is_u64());
    assert_eq!(v["integrity"]["ok"], true, "{}", v["integrity"]);
    assert_eq!(u(&v["integrity"]["pages_checked"]), 65536);
    let stats = &v["kvm_stats"];
    if stats["available"] == true {
        // In-kernel exits include at least the userspace ones.
        assert!(u(&stats["vcpu"]["exits"]) >= u(&mmio["count"]), "{stats}");
    } else {
        assert!(stats["unavailable_reason"].is_string());
    }
}

#[test]
fn every_pattern_runs_and_covers_what_it_should() {
    if !have_kvm() {
        return;
    }
    let pages = 4096; // 16M
    for (pattern, all_pages) in [
        ("seq", true),
        ("phase", true),
        ("phase:3", true),
        ("zipf", false),
        ("zipf:1.5", false),
    ] {
        let v = probe_json(&[
            "--mem",
            "16M",
            "--pattern",
            pattern,
            "--passes",
            "2",
            "--seed",
            "7",
        ]);
        let touched = u(&v["pages_touched"]);
        if all_pages {
            assert_eq!(touched, pages, "{pattern}");
        } else {
            assert!(touched > 0 && touched < pages, "{pattern}: {touched}");
        }
        assert_eq!(v["integrity"]["ok"], true, "{pattern}: {}", v["integrity"]);
        assert_eq!(v["passes"].as_array().unwrap().len(), 2);
    }
    // A more skewed zipf touches fewer distinct pages.
    let mild = probe_json(&["--mem", "16M", "--pattern", "zipf:0.5", "--passes", "1"]);
    let steep = probe_json(&["--mem", "16M", "--pattern", "zipf:2", "--passes", "1"]);
    assert!(u(&steep["pages_touched"]) < u(&mild["pages_touched"]));
}

#[test]
fn text_output_is_a_table() {
    if !have_kvm() {
        return;
    }
    let out = swaplab(&["probe", "--mem", "8M", "--pattern", "seq", "--passes", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("pattern seq, 3 passes"), "{text}");
    let header = text
        .lines()
        .find(|l| l.trim_start().starts_with("pass"))
        .expect("table header");
    for col in ["accesses", "p50", "p99", "max"] {
        assert!(header.contains(col), "{header}");
    }
    let rows = text
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u32>().is_ok())
        })
        .count();
    assert_eq!(rows, 3, "{text}");
    assert!(text.contains("pages touched 2048 of 2048"), "{text}");
    assert!(text.contains("mmio_write"), "{text}");
}

#[test]
fn bad_inputs_give_one_line_and_exit_2() {
    assert_usage_error(&["--mem", "0"], "--mem");
    assert_usage_error(&["--mem", "1T"], "host's memory");
    assert_usage_error(&["--pattern", "bogus"], "bogus");
    assert_usage_error(&["--passes", "-1"], "--passes");
    assert_usage_error(&["--passes", "0"], "--passes");
    assert_usage_error(&["--pattern", "zipf:-1"], "zipf skew");
    assert_usage_error(&["--pattern", "zipf:abc"], "zipf skew");
    assert_usage_error(&["--pattern", "phase:0"], "phase window");
    assert_usage_error(&["--mem", "12X"], "12X");
    assert_usage_error(&["--mem", "4097"], "multiple of 4K");
}
