//! What the demo shows, computed from control-socket replies: the latest
//! values, rates from deltas between polls, and the recent faults and events.
//! Pure (no I/O), so it is unit-tested without a VM.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

/// A counter read at a time (seconds on some clock).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// When, s.
    pub t_s: f64,
    /// The counter's value.
    pub value: u64,
}

/// Per second between two readings of a counter; `None` without a previous
/// reading, if time did not advance, or if the counter went backwards (a reset).
pub fn rate(prev: Option<Reading>, cur: Reading) -> Option<f64> {
    let prev = prev?;
    let dt = cur.t_s - prev.t_s;
    if dt <= 0.0 || cur.value < prev.value {
        return None;
    }
    Some((cur.value - prev.value) as f64 / dt)
}

/// Seconds of readings a rate is taken over: polls twice a second (and guest
/// statistics once) make single-interval rates jumpy.
pub const RATE_WINDOW_S: f64 = 2.0;

/// A counter whose rate is wanted: its recent readings and the rate over them.
#[derive(Debug, Clone, Default)]
pub struct Rated {
    window: VecDeque<Reading>,
    /// Per second, from the oldest reading of the window to the newest.
    pub per_s: Option<f64>,
}

impl Rated {
    /// Takes a reading. The same reading again (e.g. guest statistics that
    /// have not been refreshed since the last poll) changes nothing; a counter
    /// that went backwards starts the window again.
    pub fn update(&mut self, r: Reading) {
        if let Some(last) = self.window.back() {
            if last.t_s == r.t_s {
                return;
            }
            if r.value < last.value || r.t_s < last.t_s {
                self.window.clear();
            }
        }
        self.window.push_back(r);
        while self.window.len() > 2
            && self
                .window
                .front()
                .is_some_and(|o| o.t_s < r.t_s - RATE_WINDOW_S)
        {
            self.window.pop_front();
        }
        self.per_s = rate(
            self.window
                .front()
                .copied()
                .filter(|_| self.window.len() > 1),
            r,
        );
    }

    /// The latest value.
    pub fn value(&self) -> Option<u64> {
        self.window.back().map(|r| r.value)
    }
}

/// One event line.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The VM's sequence number.
    pub seq: u64,
    /// Seconds since the VM started.
    pub t_s: f64,
    /// `host`, `guest` or `balloon`.
    pub source: String,
    /// What happened.
    pub text: String,
}

/// Everything on the screen that comes from the VM.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Guest RAM as configured, bytes.
    pub guest_mem: Option<u64>,
    /// Guest total memory (balloon statistics), bytes.
    pub guest_total: Option<u64>,
    /// Guest free memory, bytes.
    pub guest_free: Option<u64>,
    /// Guest available memory, bytes.
    pub guest_avail: Option<u64>,
    /// Guest swap-ins (pages).
    pub guest_swap_in: Rated,
    /// Guest swap-outs (pages).
    pub guest_swap_out: Rated,
    /// Balloon size, bytes.
    pub balloon_actual: Option<u64>,
    /// Balloon target, bytes.
    pub balloon_target: Option<u64>,
    /// Host-resident guest memory, bytes.
    pub host_resident: Option<u64>,
    /// The host swapper's resident limit, bytes.
    pub host_limit: Option<u64>,
    /// Host swap-ins from the store (pages).
    pub host_swap_in: Rated,
    /// Host evictions (pages).
    pub host_evict: Rated,
    /// Recent fault latencies per path, ns, oldest first.
    pub faults: BTreeMap<String, Vec<u64>>,
    /// Recent events, oldest first.
    pub events: VecDeque<Event>,
    /// Host-resident history (bytes) for a sparkline, oldest first.
    pub resident_history: VecDeque<u64>,
    /// VM uptime, s.
    pub uptime_s: Option<f64>,
    /// Whether the guest agent said it is ready.
    pub agent_ready: bool,
    /// Whether the guest agent runs a workload, as it last said.
    pub workload_running: bool,
}

/// Events kept for the screen.
pub const EVENTS_KEPT: usize = 16;
/// Resident samples kept.
pub const HISTORY: usize = 120;

fn u(v: &Value) -> Option<u64> {
    v.as_u64()
}

impl Model {
    /// `balloon.stats`'s result, polled at `t_s`.
    pub fn apply_balloon(&mut self, t_s: f64, v: &Value) {
        self.balloon_actual = u(&v["actual_bytes"]);
        self.balloon_target = u(&v["target_bytes"]);
        let stats = &v["stats"];
        let vals = &stats["values"];
        if vals.is_object() {
            self.guest_total = u(&vals["total-memory"]).or(self.guest_total);
            self.guest_free = u(&vals["free-memory"]).or(self.guest_free);
            self.guest_avail = u(&vals["available-memory"]).or(self.guest_avail);
            // The statistics are as old as their buffer: rate them on the
            // guest's clock, so 1 s refreshes polled twice a second stay smooth.
            let at = t_s - u(&stats["age_ms"]).unwrap_or(0) as f64 / 1000.0;
            for (key, rated) in [
                ("swap-in", &mut self.guest_swap_in),
                ("swap-out", &mut self.guest_swap_out),
            ] {
                if let Some(bytes) = u(&vals[key]) {
                    rated.update(Reading {
                        t_s: at,
                        value: bytes / 4096,
                    });
                }
            }
        }
    }

    /// `swapper.status`'s result, polled at `t_s`.
    pub fn apply_swapper(&mut self, t_s: f64, v: &Value) {
        self.host_limit = u(&v["limit_pages"]).map(|p| p * 4096);
        if let Some(n) = u(&v["counters"]["swapin_store"]) {
            self.host_swap_in.update(Reading { t_s, value: n });
        }
        if let Some(n) = u(&v["counters"]["evictions"]) {
            self.host_evict.update(Reading { t_s, value: n });
        }
    }

    /// `vm.stats`'s result.
    pub fn apply_vm(&mut self, v: &Value) {
        self.guest_mem = u(&v["guest_mem_bytes"]);
        self.host_resident = u(&v["host_resident_bytes"]);
        self.uptime_s = v["uptime_s"].as_f64();
        if let Some(r) = self.host_resident {
            if self.resident_history.len() == HISTORY {
                self.resident_history.pop_front();
            }
            self.resident_history.push_back(r);
        }
    }

    /// `vm.recent`'s result: faults replace the old ones, new events are added.
    pub fn apply_recent(&mut self, v: &Value) {
        if let Some(f) = v["faults"].as_object() {
            self.faults = f
                .iter()
                .map(|(k, l)| {
                    let ns = l
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_u64).collect())
                        .unwrap_or_default();
                    (k.clone(), ns)
                })
                .collect();
        }
        let last = self.events.back().map(|e| e.seq);
        for e in v["events"].as_array().into_iter().flatten() {
            let Some(seq) = u(&e["seq"]) else { continue };
            if last.is_some_and(|l| seq <= l) {
                continue;
            }
            let ev = Event {
                seq,
                t_s: e["t_s"].as_f64().unwrap_or(0.0),
                source: e["source"].as_str().unwrap_or("?").to_string(),
                text: e["text"].as_str().unwrap_or("").to_string(),
            };
            if ev.source == "guest" {
                if ev.text.starts_with("ready") {
                    self.agent_ready = true;
                } else if ev.text.starts_with("started") {
                    self.workload_running = true;
                } else if ev.text.starts_with("stopped") || ev.text.starts_with("exited") {
                    self.workload_running = false;
                }
            }
            if self.events.len() == EVENTS_KEPT {
                self.events.pop_front();
            }
            self.events.push_back(ev);
        }
    }
}

/// The `p`-quantile (0..=1) of `v` (nearest rank, [`base::stats::percentile_of`]
/// at `100·p`); `None` if empty.
pub fn quantile(v: &[u64], p: f64) -> Option<u64> {
    base::stats::percentile_of(v, p * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rates_are_deltas_over_time() {
        let r = |t_s, value| Reading { t_s, value };
        assert_eq!(rate(None, r(1.0, 5)), None);
        assert_eq!(rate(Some(r(1.0, 100)), r(3.0, 300)), Some(100.0));
        assert_eq!(rate(Some(r(1.0, 100)), r(1.0, 300)), None, "no time passed");
        assert_eq!(rate(Some(r(1.0, 100)), r(2.0, 50)), None, "counter reset");
        assert_eq!(rate(Some(r(1.0, 7)), r(1.5, 7)), Some(0.0));
    }

    #[test]
    fn a_repeated_reading_keeps_the_rate() {
        let mut c = Rated::default();
        c.update(Reading { t_s: 0.0, value: 0 });
        assert_eq!(c.per_s, None);
        c.update(Reading {
            t_s: 1.0,
            value: 50,
        });
        assert_eq!(c.per_s, Some(50.0));
        // Statistics not refreshed: same time, no change (not a zero rate).
        c.update(Reading {
            t_s: 1.0,
            value: 50,
        });
        assert_eq!(c.per_s, Some(50.0));
        // Over the window: 50 pages in 2 s.
        c.update(Reading {
            t_s: 2.0,
            value: 50,
        });
        assert_eq!(c.per_s, Some(25.0));
        c.update(Reading {
            t_s: 3.0,
            value: 50,
        });
        assert_eq!(c.per_s, Some(0.0));
        assert_eq!(c.value(), Some(50));
        // A reset starts over.
        c.update(Reading { t_s: 4.0, value: 3 });
        assert_eq!(c.per_s, None);
        c.update(Reading { t_s: 4.5, value: 5 });
        assert_eq!(c.per_s, Some(4.0));
    }

    #[test]
    fn replies_fill_the_model() {
        let mut m = Model::default();
        let balloon = |t: u64, age: u64, sin: u64| {
            json!({"actual_bytes": 64u64 << 20, "target_bytes": 96u64 << 20, "active": true,
               "stats": {"age_ms": age, "values": {"total-memory": 250u64 << 20,
               "free-memory": 100u64 << 20, "available-memory": 150u64 << 20,
               "swap-in": sin, "swap-out": 0, "tag-99": t}}})
        };
        m.apply_balloon(10.0, &balloon(0, 500, 0));
        m.apply_balloon(10.5, &balloon(0, 1000, 0));
        // A fresh buffer one guest-second later with 400 KiB swapped in.
        m.apply_balloon(11.0, &balloon(0, 500, 100 * 4096));
        assert_eq!(m.guest_swap_in.per_s, Some(100.0));
        assert_eq!(m.guest_free, Some(100 << 20));
        assert_eq!(m.balloon_target, Some(96 << 20));
        m.apply_swapper(
            1.0,
            &json!({"limit_pages": 16384, "counters": {"swapin_store": 10, "evictions": 0}}),
        );
        m.apply_swapper(
            3.0,
            &json!({"limit_pages": 16384, "counters": {"swapin_store": 410, "evictions": 20}}),
        );
        assert_eq!(m.host_limit, Some(64 << 20));
        assert_eq!(m.host_swap_in.per_s, Some(200.0));
        assert_eq!(m.host_swap_in.value(), Some(410));
        assert_eq!(m.host_evict.per_s, Some(10.0));
        m.apply_vm(&json!({"guest_mem_bytes": 256u64 << 20, "host_resident_bytes": 1u64 << 20, "uptime_s": 3.5}));
        assert_eq!(m.resident_history, [1 << 20]);
        let recent = json!({"faults": {"store": [1000, 2000]}, "events": [
            {"seq": 0, "t_s": 1.0, "source": "guest", "text": "ready"},
            {"seq": 1, "t_s": 2.0, "source": "guest", "text": "started mb=64 pattern=random"}]});
        m.apply_recent(&recent);
        m.apply_recent(&recent);
        assert_eq!(m.events.len(), 2, "events are not repeated");
        assert!(m.agent_ready && m.workload_running);
        assert_eq!(m.faults["store"], [1000, 2000]);
        m.apply_recent(&json!({"faults": {}, "events": [
            {"seq": 2, "t_s": 3.0, "source": "guest", "text": "stopped mb=64 status=0"}]}));
        assert!(!m.workload_running);
        assert!(m.faults.is_empty());
        // Garbage does not panic.
        m.apply_recent(&json!({"faults": 3, "events": [1, {"seq": "x"}]}));
        m.apply_balloon(1.0, &json!(null));
        m.apply_swapper(1.0, &json!([]));
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[5], 0.99), Some(5));
        assert_eq!(quantile(&[4, 1, 3, 2], 0.5), Some(2));
        assert_eq!(quantile(&[4, 1, 3, 2], 1.0), Some(4));
        assert_eq!(quantile(&[4, 1, 3, 2], 0.0), Some(1));
    }
}
