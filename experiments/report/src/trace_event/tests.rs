//! The trace is valid JSON in the object format, each event has the fields its
//! phase needs, strings survive escaping, and output streams as it is written.

use super::*;
use serde_json::Value;

fn finish(w: TraceWriter<Vec<u8>>) -> Value {
    let bytes = w.finish().unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

fn events(doc: &Value) -> &Vec<Value> {
    doc["traceEvents"].as_array().expect("traceEvents array")
}

fn slice<'a>(name: &'a str, tid: u32, ts_us: f64, dur_us: f64) -> Slice<'a> {
    Slice {
        name,
        cat: "fault",
        pid: 1,
        tid,
        ts_us,
        dur_us,
        args: &[],
    }
}

/// The fields the trace-event format requires per phase.
fn check_event(e: &Value) {
    let ph = e["ph"].as_str().expect("ph");
    assert!(e["name"].is_string(), "{e}");
    assert!(e["pid"].is_u64() && e["tid"].is_u64(), "{e}");
    match ph {
        "M" => assert!(e["args"].is_object(), "{e}"),
        "X" => {
            assert!(e["ts"].is_number() && e["cat"].is_string(), "{e}");
            assert!(e["dur"].as_f64().unwrap() >= 0.0, "{e}");
        }
        "i" => {
            assert!(e["ts"].is_number(), "{e}");
            assert!(matches!(e["s"].as_str(), Some("t" | "p" | "g")), "{e}");
        }
        "C" => {
            assert!(e["ts"].is_number(), "{e}");
            let args = e["args"].as_object().unwrap();
            assert!(
                !args.is_empty() && args.values().all(Value::is_number),
                "{e}"
            );
        }
        "s" | "f" => {
            assert!(
                e["ts"].is_number() && e["id"].is_u64() && e["cat"].is_string(),
                "{e}"
            );
            if ph == "f" {
                assert_eq!(e["bp"], "e", "{e}");
            }
        }
        other => panic!("unexpected phase {other}"),
    }
}

#[test]
fn a_full_trace_is_valid_json_with_every_phase() {
    let mut w = TraceWriter::new(Vec::new(), TimeUnit::Ns).unwrap();
    w.process_name(1, "host-swap rep 1").unwrap();
    w.thread_name(1, 10, "vcpu0").unwrap();
    w.thread_name(1, 20, "virtio-blk").unwrap();
    w.thread_sort_index(1, 10, 0).unwrap();
    let blk = Slice {
        args: &[("sector", Arg::U64(2048)), ("dir", Arg::Str("write"))],
        ..slice("guest swap-out", 20, 100.0, 80.5)
    };
    let fault = Slice {
        args: &[
            ("path", Arg::Str("store")),
            ("ratio", Arg::F64(0.5)),
            ("minor", Arg::Bool(false)),
            ("delta", Arg::I64(-3)),
        ],
        ..slice("host swap-in", 21, 110.25, 40.125)
    };
    w.complete(&blk).unwrap();
    w.complete(&fault).unwrap();
    w.link(7, "double paging", &blk, &fault).unwrap();
    let at = Point {
        pid: 1,
        tid: 10,
        ts_us: 300.0,
    };
    w.instant(
        "evict",
        "swap",
        at,
        Scope::Thread,
        &[("page", Arg::U64(42))],
    )
    .unwrap();
    w.instant("balloon target", "balloon", at, Scope::Process, &[])
        .unwrap();
    w.counter("memory", 1, 0.0, &[("resident", 1.5e8), ("balloon", 0.0)])
        .unwrap();
    assert_eq!(w.events(), 11);
    let doc = finish(w);
    assert_eq!(doc["displayTimeUnit"], "ns");
    let ev = events(&doc);
    assert_eq!(ev.len(), 11);
    for e in ev {
        check_event(e);
    }
    assert_eq!(ev[0]["args"]["name"], "host-swap rep 1");
    assert_eq!(ev[3]["args"]["sort_index"], 0);
    assert_eq!(ev[4]["ts"], 100.0);
    assert_eq!(ev[4]["dur"], 80.5);
    assert_eq!(ev[4]["args"]["sector"], 2048);
    assert_eq!(ev[5]["args"]["delta"], -3);
    assert_eq!(ev[5]["args"]["minor"], false);
    assert_eq!(ev[5]["dur"], 40.125);
}

#[test]
fn link_binds_both_ends_to_their_slices() {
    let mut w = TraceWriter::new(Vec::new(), TimeUnit::Ms).unwrap();
    let a = slice("blk write", 20, 100.0, 50.0);
    let b = slice("fault", 21, 120.0, 10.0);
    w.complete(&a).unwrap();
    w.complete(&b).unwrap();
    w.link(99, "double paging", &a, &b).unwrap();
    let doc = finish(w);
    let ev = events(&doc);
    let (s, f) = (&ev[2], &ev[3]);
    assert_eq!((s["ph"].as_str(), f["ph"].as_str()), (Some("s"), Some("f")));
    assert_eq!(s["id"], f["id"]);
    assert_eq!((&s["name"], &s["cat"]), (&f["name"], &f["cat"]));
    // Each end lies within its slice on its slice's thread.
    for (end, sl) in [(s, &a), (f, &b)] {
        assert_eq!(end["tid"], sl.tid);
        let ts = end["ts"].as_f64().unwrap();
        assert!(ts >= sl.ts_us && ts <= sl.ts_us + sl.dur_us);
    }
}

#[test]
fn strings_survive_escaping() {
    let nasty = "q\"uote\\back\nnew\r\ttab\u{1}\u{8}\u{c}\u{1f} µs 🚀 </script>";
    let mut w = TraceWriter::new(Vec::new(), TimeUnit::Ms).unwrap();
    w.thread_name(1, 1, nasty).unwrap();
    w.complete(&Slice {
        cat: nasty,
        args: &[(nasty, Arg::Str(nasty))],
        ..slice(nasty, 1, 0.0, 1.0)
    })
    .unwrap();
    let doc = finish(w);
    let ev = events(&doc);
    assert_eq!(ev[0]["args"]["name"], nasty);
    assert_eq!(ev[1]["name"], nasty);
    assert_eq!(ev[1]["cat"], nasty);
    assert_eq!(ev[1]["args"][nasty], nasty);
}

#[test]
fn times_keep_nanosecond_precision() {
    assert_eq!(fmt_us(1.0), "1");
    assert_eq!(fmt_us(0.001), "0.001");
    assert_eq!(fmt_us(12.3456), "12.346");
    assert_eq!(fmt_us(-0.0001), "0");
    assert_eq!(fmt_us(1e12), "1000000000000");
    let mut w = TraceWriter::new(Vec::new(), TimeUnit::Ns).unwrap();
    w.complete(&slice("a", 1, 1_234_567.891, 0.042)).unwrap();
    let doc = finish(w);
    assert_eq!(events(&doc)[0]["ts"], 1_234_567.891);
    assert_eq!(events(&doc)[0]["dur"], 0.042);
}

#[test]
fn non_finite_and_negative_values_are_errors() {
    let mut w = TraceWriter::new(Vec::new(), TimeUnit::Ns).unwrap();
    let e = w.complete(&slice("bad", 1, f64::NAN, 1.0)).unwrap_err();
    assert!(
        matches!(e, TraceError::NonFinite { field: "ts", .. }),
        "{e}"
    );
    let e = w.complete(&slice("neg", 1, 0.0, -1.0)).unwrap_err();
    assert!(matches!(e, TraceError::NegativeDuration { .. }), "{e}");
    let e = w.counter("c", 1, 0.0, &[("v", f64::INFINITY)]).unwrap_err();
    assert!(
        matches!(e, TraceError::NonFinite { field: "args", .. }),
        "{e}"
    );
    // A rejected event leaves the document valid.
    w.complete(&slice("ok", 1, 0.0, 1.0)).unwrap();
    let doc = finish(w);
    assert_eq!(events(&doc).len(), 1);
}

#[test]
fn events_stream_in_write_order() {
    let mut w = TraceWriter::new(Vec::new(), TimeUnit::Ns).unwrap();
    let mut sizes = vec![w.get_ref().len()];
    for i in 0..100u32 {
        w.complete(&slice("e", i % 4, f64::from(i) * 10.0, 5.0))
            .unwrap();
        sizes.push(w.get_ref().len());
    }
    // Each event reaches the writer as it is written: nothing is held back.
    assert!(sizes.windows(2).all(|s| s[1] > s[0]));
    let doc = finish(w);
    let ts: Vec<f64> = events(&doc)
        .iter()
        .map(|e| e["ts"].as_f64().unwrap())
        .collect();
    assert!(
        ts.windows(2).all(|t| t[0] <= t[1]),
        "sorted input stays sorted"
    );
    assert_eq!(ts.len(), 100);
}

#[test]
fn empty_trace_is_valid() {
    let w = TraceWriter::new(Vec::new(), TimeUnit::Ms).unwrap();
    let doc = finish(w);
    assert_eq!(doc["displayTimeUnit"], "ms");
    assert!(events(&doc).is_empty());
}
