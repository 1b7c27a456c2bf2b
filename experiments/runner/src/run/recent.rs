//! What happened lately in a running VM, for the control socket's `vm.recent`
//! (the live demo polls it): the last host fault latencies per path and the last
//! events (balloon batches, guest agent messages, control-socket actions).
//!
//! Everything is bounded: [`FAULTS_PER_PATH`] latencies per path and
//! [`EVENTS`] events, the oldest dropped first, so a reply stays small however
//! long the VM runs. The sampler feeds it the fault records it drains anyway.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use base::lock;
use serde_json::{json, Value};
use swapper::FaultRecord;

/// Latencies kept per fault path.
pub const FAULTS_PER_PATH: usize = 64;
/// Events kept.
pub const EVENTS: usize = 32;
/// Longest event text kept (guest lines are cut to this).
pub const MAX_EVENT_TEXT: usize = 120;

#[derive(Debug, Default)]
struct Inner {
    faults: BTreeMap<&'static str, VecDeque<u64>>,
    events: VecDeque<(u64, f64, String, String)>,
    next_seq: u64,
}

/// Recent faults and events of one VM.
#[derive(Debug)]
pub struct Recent {
    inner: Mutex<Inner>,
    started: Instant,
}

impl Recent {
    /// Empty; event times count from `started`.
    pub fn new(started: Instant) -> Self {
        Self {
            inner: Mutex::default(),
            started,
        }
    }

    /// Keeps the total latency of each record, by path.
    pub fn push_faults(&self, records: &[FaultRecord]) {
        if records.is_empty() {
            return;
        }
        let mut g = lock(&self.inner);
        // Only the newest ones can survive: skip the rest without touching them.
        let skip = records.len().saturating_sub(FAULTS_PER_PATH * 8);
        for r in &records[skip..] {
            let q = g.faults.entry(r.path.name()).or_default();
            if q.len() == FAULTS_PER_PATH {
                q.pop_front();
            }
            q.push_back(u64::from(r.total_ns));
        }
    }

    /// Adds an event from `source` (`host`, `guest`, `balloon`).
    pub fn push_event(&self, source: &str, text: &str) {
        let t = self.started.elapsed().as_secs_f64();
        let text: String = text.chars().take(MAX_EVENT_TEXT).collect();
        let mut g = lock(&self.inner);
        let seq = g.next_seq;
        g.next_seq += 1;
        if g.events.len() == EVENTS {
            g.events.pop_front();
        }
        g.events.push_back((seq, t, source.to_string(), text));
    }

    /// The `vm.recent` result: `faults` {path: [ns, …] oldest first},
    /// `events` [{seq, t_s, source, text}, …] oldest first.
    pub fn snapshot(&self) -> Value {
        let g = lock(&self.inner);
        let faults: serde_json::Map<String, Value> = g
            .faults
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.iter().collect::<Vec<_>>())))
            .collect();
        let events: Vec<Value> = g
            .events
            .iter()
            .map(|(seq, t, source, text)| {
                json!({ "seq": seq, "t_s": t, "source": source, "text": text })
            })
            .collect();
        json!({ "faults": faults, "events": events })
    }
}

/// A result-channel line worth showing as an event: the guest agent's
/// (`{"kind":"agent","event":…}`) as `event key=value…`; `None` for others.
pub fn agent_event(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    let obj = v.as_object()?;
    if obj.get("kind")?.as_str()? != "agent" {
        return None;
    }
    let mut text = obj.get("event")?.as_str()?.to_string();
    for (k, v) in obj {
        if k == "kind" || k == "event" {
            continue;
        }
        match v {
            Value::String(s) => text.push_str(&format!(" {k}={s}")),
            other => text.push_str(&format!(" {k}={other}")),
        }
    }
    Some(text)
}

/// Balloon events as text, one line per kind for a batch of them (the guest
/// inflates in 1 MiB buffers: one line each would flood the list);
/// statistics buffers (one a second) are left out.
pub fn balloon_events(events: &[balloon::BalloonEvent]) -> Vec<String> {
    use balloon::BalloonEventKind as K;
    let mib = |pages: u64| (pages * 4096) as f64 / (1 << 20) as f64;
    let mut out = Vec::new();
    for (kind, verb) in [
        (K::Inflate, "inflated"),
        (K::Deflate, "deflated"),
        (K::Report, "free page reports:"),
    ] {
        let of: Vec<_> = events.iter().filter(|e| e.kind == kind).collect();
        if of.is_empty() {
            continue;
        }
        let pages: u64 = of.iter().map(|e| e.pages).sum();
        let ms = of.iter().map(|e| e.ns).sum::<u64>() as f64 / 1e6;
        out.push(format!(
            "{verb} {:.1} MiB in {} batch{} ({ms:.1} ms)",
            mib(pages),
            of.len(),
            if of.len() == 1 { "" } else { "es" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use swapper::trace::FaultPath;
    use swapper::ThreadKind;

    fn record(path: FaultPath, ns: u32) -> FaultRecord {
        FaultRecord {
            seq: 0,
            page: 0,
            addr: 0,
            tid: 0,
            thread: ThreadKind::Vcpu(0),
            path,
            write: false,
            t_read_ns: 0,
            store_read_ns: 0,
            install_ns: 0,
            total_ns: ns,
            prefetched: 0,
            reclaimed: 0,
        }
    }

    #[test]
    fn faults_and_events_stay_bounded_newest_last() {
        let r = Recent::new(Instant::now());
        let many: Vec<FaultRecord> = (0..1000)
            .map(|i| record(FaultPath::Store, i))
            .chain([record(FaultPath::Zero, 7)])
            .collect();
        r.push_faults(&many);
        for i in 0..40 {
            r.push_event("host", &format!("event {i}"));
        }
        r.push_event("guest", &"x".repeat(500));
        let v = r.snapshot();
        let store = v["faults"]["store"].as_array().unwrap();
        assert_eq!(store.len(), FAULTS_PER_PATH);
        assert_eq!(store.last().unwrap(), 999);
        assert_eq!(v["faults"]["zero"], json!([7]));
        let ev = v["events"].as_array().unwrap();
        assert_eq!(ev.len(), EVENTS);
        assert_eq!(ev[0]["seq"], 9);
        assert_eq!(ev[EVENTS - 2]["text"], "event 39");
        assert_eq!(
            ev[EVENTS - 1]["text"].as_str().unwrap().len(),
            MAX_EVENT_TEXT
        );
        assert!(v.to_string().len() < 16 << 10);
    }

    #[test]
    fn agent_and_balloon_lines_become_text() {
        assert_eq!(
            agent_event(r#"{"kind":"agent","event":"started","mb":64,"pattern":"random"}"#)
                .as_deref(),
            Some("started mb=64 pattern=random")
        );
        assert_eq!(agent_event(r#"{"kind":"touch","pass":1}"#), None);
        assert_eq!(agent_event("not json"), None);
        let e = balloon::BalloonEvent {
            t_ns: 0,
            kind: balloon::BalloonEventKind::Inflate,
            pages: 256,
            ns: 2_000_000,
        };
        let stats = balloon::BalloonEvent {
            kind: balloon::BalloonEventKind::Stats,
            ..e
        };
        let deflate = balloon::BalloonEvent {
            kind: balloon::BalloonEventKind::Deflate,
            ..e
        };
        assert_eq!(
            balloon_events(&[e, stats, e, e]),
            ["inflated 3.0 MiB in 3 batches (6.0 ms)"]
        );
        assert_eq!(
            balloon_events(&[deflate, e]),
            [
                "inflated 1.0 MiB in 1 batch (2.0 ms)",
                "deflated 1.0 MiB in 1 batch (2.0 ms)"
            ]
        );
        assert!(balloon_events(&[stats]).is_empty());
    }
}
