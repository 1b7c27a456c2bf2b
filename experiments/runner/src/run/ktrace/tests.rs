//! Parsing the text trace format; the no-tracefs path. (Recording around a
//! real KVM guest: `tests/ktrace_kvm.rs`.)

use super::*;

const EXIT: &str =
    "           vcpu0-32674   [001] d..2. 13026.966791: kvm_exit: vcpu 0 reason EPT_VIOLATION rip 0xffff info 0 0";

#[test]
fn parses_event_lines() {
    let Some(Line::Event(e)) = parse_line(EXIT) else {
        panic!("not an event");
    };
    assert_eq!(
        (e.comm, e.tid, e.cpu, e.ts_ns, e.event),
        ("vcpu0", 32674, 1, 13_026_966_791_000, "kvm_exit")
    );
    assert_eq!(e.detail, "vcpu 0 reason EPT_VIOLATION rip 0xffff info 0 0");
}

#[test]
fn parses_odd_comms_columns_and_precisions() {
    // A comm with dashes, spaces and brackets; a tgid column; no flags; ns.
    let l = "  my-worker [x] 2-77 (   70) [000] 5.000000001: kvmmmu_thing: a: b";
    let Some(Line::Event(e)) = parse_line(l) else {
        panic!("not an event: {l}");
    };
    assert_eq!(
        (e.comm, e.tid, e.cpu, e.ts_ns),
        ("my-worker [x] 2", 77, 0, 5_000_000_001)
    );
    assert_eq!((e.event, e.detail), ("kvmmmu_thing", "a: b"));
    // No detail at all.
    let Some(Line::Event(e)) = parse_line("x-1 [3] 1.5: ev:") else {
        panic!("not an event");
    };
    assert_eq!(
        (e.ts_ns, e.event, e.detail, e.cpu),
        (1_500_000_000, "ev", "", 3)
    );
}

#[test]
fn lost_events_and_garbage() {
    assert_eq!(parse_line("CPU:1 [LOST 123 EVENTS]"), Some(Line::Lost(123)));
    for bad in [
        "",
        "# tracer: nop",
        "no cpu column here",
        "vcpu0-1 [001] d..2. notatime: kvm_exit: x",
        "vcpu0-x [001] 1.0: kvm_exit: x",
        "vcpu0-1 [001] 1.0: two words: x",
        "vcpu0-1 [001] 1.0123456789: kvm_exit: x",
    ] {
        assert!(
            !matches!(parse_line(bad), Some(Line::Event(_))),
            "parsed {bad:?}"
        );
    }
    let mut c = KtraceCapture::default();
    for l in [
        "# header",
        "",
        "garbage",
        "CPU:0 [LOST 5 EVENTS]",
        EXIT,
        EXIT,
    ] {
        c.add_line(l, 1);
    }
    assert_eq!((c.unparsed, c.lost, c.dropped), (1, 5, 1));
    assert_eq!(c.events.len(), 1);
    assert_eq!(c.name(&c.events[0]), "kvm_exit");
    assert_eq!(c.comms.get(&32674).map(String::as_str), Some("vcpu0"));
}

#[test]
fn instance_names_name_their_process() {
    assert_eq!(instance_owner("swaplab-123"), Some(123));
    assert_eq!(instance_owner("swaplab-123-4"), Some(123));
    for other in ["swaplab-", "swaplab-x", "mine-123", "swaplab"] {
        assert_eq!(instance_owner(other), None, "{other}");
    }
}

#[test]
fn monotonic_conversion_matches_the_clock() {
    let before = clock_monotonic_ns();
    let t = Instant::now();
    let after = clock_monotonic_ns();
    let m = monotonic_ns(t);
    // Instant is CLOCK_MONOTONIC: the conversion lands between the two
    // readings, give or take its own reading's precision (another clock,
    // BOOTTIME or REALTIME, would be off by seconds or years).
    let slack = 1_000_000;
    assert!(
        before - slack <= m && m <= after + slack,
        "{before} <= {m} <= {after}"
    );
    let later = t + Duration::from_secs(5);
    assert!(monotonic_ns(later).abs_diff(m + 5_000_000_000) < slack);
}

#[test]
fn without_tracefs_start_says_so_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = KtraceConfig {
        tracefs: dir.path().join("tracing"),
        mount: false,
        ..KtraceConfig::default()
    };
    let e = Ktrace::start(&cfg).err().expect("no tracefs there");
    assert!(matches!(e, KtraceError::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("unavailable"), "{e}");
    // Allowed to mount, but the mount point does not exist.
    let cfg = KtraceConfig { mount: true, ..cfg };
    let e = Ktrace::start(&cfg).err().expect("no mount point");
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_full_capture_keeps_whole_windows_spread_over_the_run() {
    let mut c = KtraceCapture::default();
    // Two events in each of 64 windows, 4 ms apart inside a window.
    for w in 0..64u64 {
        for k in 0..2u64 {
            let ts = w * WINDOW_NS + k * 4_000_000;
            let l = format!(
                "vcpu0-7 [000] .... {}.{:09}: kvm_exit: reason X",
                ts / 1_000_000_000,
                ts % 1_000_000_000
            );
            c.add_line(&l, 20);
        }
    }
    assert!(c.events.len() <= 20);
    assert_eq!(c.events.len() as u64 + c.dropped, 128);
    let windows: Vec<u64> = c.events.iter().map(|e| e.mono_ns / WINDOW_NS).collect();
    // Every kept window is whole (both its events) and they reach the end.
    assert!(
        windows.chunks(2).all(|p| p.len() == 2 && p[0] == p[1]),
        "{windows:?}"
    );
    assert_eq!(c.window_stride, 8);
    assert_eq!(windows.first(), Some(&0));
    assert_eq!(windows.last(), Some(&56));
}

#[test]
fn a_thread_name_the_kernel_did_not_cache_is_found_or_filled_in_later() {
    let mut c = KtraceCapture::default();
    // This thread: the kernel's `<...>` is replaced by its name from /proc.
    let me = nix::unistd::gettid().as_raw();
    let mine = std::fs::read_to_string(format!("/proc/self/task/{me}/comm")).unwrap();
    c.add_line(&format!("<...>-{me} [001] d..2. 1.000001: kvm_exit: x"), 10);
    assert_eq!(c.comms[&me], mine.trim_end());
    // A thread that is gone keeps `<...>` until an event carries its name.
    let gone = 4_999_999;
    c.add_line(
        &format!("<...>-{gone} [001] d..2. 1.000002: kvm_exit: x"),
        10,
    );
    assert_eq!(c.comms[&gone], "<...>");
    c.add_line(
        &format!("vcpu0-{gone} [001] d..2. 1.000003: kvm_exit: x"),
        10,
    );
    assert_eq!(c.comms[&gone], "vcpu0");
    c.add_line(
        &format!("<...>-{gone} [001] d..2. 1.000004: kvm_exit: x"),
        10,
    );
    assert_eq!(c.comms[&gone], "vcpu0");
}

#[test]
fn async_page_faults_pair_not_present_with_ready_by_token() {
    let mut c = KtraceCapture::default();
    for l in [
        "vcpu0-10 [000] d..2. 1.000000: kvm_async_pf_not_present: token 0x1 gva 0x7f000",
        "vcpu0-10 [000] d..2. 1.000100: kvm_async_pf_not_present: token 0x2 gva 0x8f000",
        "vcpu0-10 [000] d..2. 1.000250: kvm_async_pf_ready: token 0x2 gva 0x8f000",
        "vcpu0-10 [000] d..2. 1.000400: kvm_async_pf_ready: token 0x1 gva 0x7f000",
        // A ready whose not-present was not recorded, and another event.
        "vcpu0-10 [000] d..2. 1.000500: kvm_async_pf_ready: token 0x9 gva 0x1000",
        "vcpu0-10 [000] d..2. 1.000600: kvm_exit: vcpu 0 reason HLT rip 0x1 info 0 0",
    ] {
        c.add_line(l, 100);
    }
    assert_eq!(async_pf_latencies(&c), [150_000, 400_000]);
}
