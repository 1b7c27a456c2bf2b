//! Which of a run's records go into the trace and where: request/fault
//! pairs, the priority classes under the per-run cap, KVM exit slices and
//! nesting on each track.

use std::collections::{BTreeMap, HashMap};

use swapper::{FaultPath, FaultRecord, ThreadKind};
use vmm::virtio::blk::BlkKind;

use super::records::RunTrace;
use crate::run::join::{self, BlkSpan, HostFault};
use crate::run::ktrace::KtraceCapture;
use crate::run::result::HostSample;

/// Indices of `keep` of `n` items, evenly spaced (all when they fit).
pub(super) fn thin(n: usize, keep: usize) -> impl Iterator<Item = usize> {
    let keep = keep.min(n);
    (0..keep).map(move |i| i * n / keep)
}

/// Whether a fault brought data back (what the join pairs with requests).
pub(super) fn swapped_in(f: &FaultRecord) -> bool {
    matches!(
        f.path,
        FaultPath::Store | FaultPath::PrefetchHit | FaultPath::Named
    )
}

/// A slice to draw.
#[derive(Debug, Clone, Copy)]
pub(super) enum Item {
    Fault(usize),
    Request(usize),
    /// A KVM exit: index of its `kvm_exit` event.
    Exit(usize),
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Planned {
    pub(super) tid: u32,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) item: Item,
}

/// Trims slices on each track so they nest, as the format requires: a
/// slice that starts inside another of its kind (two faults of one vCPU:
/// a handler's wake-up ioctl can return after its vCPU already faulted
/// again) ends the earlier one; one that starts inside a container (a
/// device fault inside its blk request) is cut at the container's end.
/// Sorts `v`.
pub(super) fn nest(v: &mut [Planned]) {
    let kind = |p: &Planned| std::mem::discriminant(&p.item);
    v.sort_by_key(|p| (p.tid, p.start, std::cmp::Reverse(p.end)));
    let mut stack: Vec<usize> = Vec::new();
    for i in 0..v.len() {
        while let Some(&top) = stack.last() {
            let (t, p) = (v[top], v[i]);
            if t.tid != p.tid || t.end <= p.start {
                stack.pop();
            } else if kind(&t) == kind(&p) {
                v[top].end = p.start;
                stack.pop();
            } else {
                v[i].end = p.end.min(t.end);
                break;
            }
        }
        stack.push(i);
    }
}

/// Pairs each `kvm_exit` with the next `kvm_entry` on its thread: (exit
/// index, start, end); exits without an entry are left out (drawn as
/// instants). Ends are clamped before the thread's next exit.
pub(super) fn exit_slices(k: &KtraceCapture) -> (Vec<(usize, u64, u64)>, Vec<usize>) {
    let id = |n: &str| k.names.iter().position(|x| x == n).map(|i| i as u16);
    let (exit, entry) = (id("kvm_exit"), id("kvm_entry"));
    let mut by_tid: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (i, e) in k.events.iter().enumerate() {
        by_tid.entry(e.tid).or_default().push(i);
    }
    let mut slices = Vec::new();
    let mut instants = Vec::new();
    for idx in by_tid.values() {
        let mut open: Option<usize> = None;
        for (pos, &i) in idx.iter().enumerate() {
            let e = &k.events[i];
            if Some(e.name) == exit {
                if let Some(o) = open.replace(i) {
                    instants.push(o);
                }
            } else if Some(e.name) == entry {
                if let Some(o) = open.take() {
                    // Text timestamps are truncated to the µs: extend to the
                    // end of the entry's µs, but not past the next exit.
                    let next_exit = idx[pos + 1..]
                        .iter()
                        .map(|&j| &k.events[j])
                        .find(|x| Some(x.name) == exit)
                        .map_or(u64::MAX, |x| x.mono_ns);
                    let end = (e.mono_ns + 999).min(next_exit).max(e.mono_ns);
                    slices.push((o, k.events[o].mono_ns, end));
                }
            } else {
                instants.push(i);
            }
        }
        instants.extend(open);
    }
    (slices, instants)
}

/// `reason X` in a `kvm_exit` line → `X`.
pub(super) fn exit_reason(detail: &str) -> &str {
    let mut it = detail.split_whitespace();
    while let Some(w) = it.next() {
        if w == "reason" {
            return it.next().unwrap_or("?");
        }
    }
    "?"
}

/// A counter track: its name and series (name, field).
pub(super) const COUNTERS: &[(&str, &[(&str, Field)])] = &[
    ("host resident (MiB)", &[("resident", Field::Resident)]),
    (
        "balloon (MiB)",
        &[("actual", Field::Balloon), ("target", Field::BalloonTarget)],
    ),
    (
        "host swap (pages, total)",
        &[
            ("swap-ins", Field::SwapIns),
            ("evictions", Field::Evictions),
        ],
    ),
    (
        "swap disk (requests, total)",
        &[("reads", Field::DiskReads), ("writes", Field::DiskWrites)],
    ),
];

/// A timeline value drawn as a counter.
#[derive(Debug, Clone, Copy)]
pub(super) enum Field {
    Resident,
    Balloon,
    BalloonTarget,
    SwapIns,
    Evictions,
    DiskReads,
    DiskWrites,
}

impl Field {
    pub(super) fn of(self, s: &HostSample) -> f64 {
        const MIB: f64 = (1u64 << 20) as f64;
        match self {
            Self::Resident => s.host_resident_bytes as f64 / MIB,
            Self::Balloon => s.balloon_bytes as f64 / MIB,
            Self::BalloonTarget => s.balloon_target_bytes as f64 / MIB,
            Self::SwapIns => s.host_swap_ins as f64,
            Self::Evictions => s.host_evictions as f64,
            Self::DiskReads => s.disk_reads as f64,
            Self::DiskWrites => s.disk_writes as f64,
        }
    }
}

/// The counter tracks worth drawing for `timeline` (not all zero).
pub(super) fn counter_tracks(
    timeline: &[HostSample],
) -> Vec<(&'static str, &'static [(&'static str, Field)])> {
    COUNTERS
        .iter()
        .copied()
        .filter(|(_, fields)| {
            timeline
                .iter()
                .any(|s| fields.iter().any(|(_, f)| f.of(s) != 0.0))
        })
        .collect()
}

/// A blk request and a host fault it caused.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pair {
    pub(super) fault: usize,
    pub(super) request: usize,
    pub(super) name: &'static str,
}

/// The request/fault pairs of a run (double paging, stale swap reads), in
/// time order.
pub(super) fn pairs(run: &RunTrace<'_>) -> Vec<Pair> {
    let spans: Vec<BlkSpan> = run
        .requests
        .iter()
        .filter(|r| matches!(r.kind, BlkKind::Read | BlkKind::Write))
        .map(BlkSpan::from)
        .collect();
    let device_faults: Vec<HostFault> = run
        .faults
        .iter()
        .filter(|f| matches!(f.thread, ThreadKind::Device(_)) && swapped_in(f))
        .map(|f| HostFault {
            seq: f.seq,
            tid: f.tid,
            t_ns: f.t_read_ns,
            total_ns: u64::from(f.total_ns),
            page: f.page,
        })
        .collect();
    let joined = join::join(&spans, &device_faults);
    let fault_at: HashMap<u64, usize> = run
        .faults
        .iter()
        .enumerate()
        .map(|(i, f)| (f.seq, i))
        .collect();
    let req_at: HashMap<u64, usize> = run
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| (r.seq, i))
        .collect();
    let named = joined
        .double_paging
        .iter()
        .map(|e| (e, "double paging"))
        .chain(joined.stale_reads.iter().map(|e| (e, "stale swap read")));
    let mut out: Vec<Pair> = named
        .filter_map(|(e, name)| {
            Some(Pair {
                fault: *fault_at.get(&e.fault_seq)?,
                request: *req_at.get(&e.request_seq)?,
                name,
            })
        })
        .collect();
    out.sort_by_key(|p| run.faults[p.fault].t_read_ns);
    out
}

/// What of a run goes into the trace.
#[derive(Debug, Default)]
pub(super) struct Selection {
    pub(super) pairs: Vec<Pair>,
    pub(super) faults: Vec<bool>,
    pub(super) requests: Vec<bool>,
    /// Indices into the timeline.
    pub(super) samples: Vec<usize>,
    /// (kvm_exit index, start, end) in CLOCK_MONOTONIC ns.
    pub(super) exits: Vec<(usize, u64, u64)>,
    /// Other kernel events (indices).
    pub(super) instants: Vec<usize>,
    /// Left out, by class.
    pub(super) dropped: BTreeMap<&'static str, u64>,
}

/// Chooses at most `cap` events of `run` by class priority (see the
/// module docs), thinning each class evenly.
pub(super) fn select(run: &RunTrace<'_>, cap: u64) -> Selection {
    let mut sel = Selection {
        faults: vec![false; run.faults.len()],
        requests: vec![false; run.requests.len()],
        ..Selection::default()
    };
    let mut budget = cap;
    let mut take =
        |dropped: &mut BTreeMap<&'static str, u64>, class: &'static str, n: usize, cost: u64| {
            let fit = (budget / cost).min(n as u64) as usize;
            budget -= fit as u64 * cost;
            if fit < n {
                *dropped.entry(class).or_default() += (n - fit) as u64;
            }
            thin(n, fit)
        };
    // A pair is its request, its fault and a two-event arrow.
    let all = pairs(run);
    sel.pairs = take(&mut sel.dropped, "request-fault pairs", all.len(), 4)
        .map(|i| all[i])
        .collect();
    for p in &sel.pairs {
        sel.faults[p.fault] = true;
        sel.requests[p.request] = true;
    }
    let per_sample = counter_tracks(run.timeline).len().max(1) as u64;
    sel.samples = take(
        &mut sel.dropped,
        "timeline samples",
        run.timeline.len(),
        per_sample,
    )
    .collect();
    let rest: Vec<usize> = (0..run.requests.len())
        .filter(|&i| !sel.requests[i])
        .collect();
    for i in take(&mut sel.dropped, "blk requests", rest.len(), 1) {
        sel.requests[rest[i]] = true;
    }
    let important = |f: &FaultRecord| swapped_in(f) || f.path == FaultPath::Fatal;
    for pass in [true, false] {
        let rest: Vec<usize> = (0..run.faults.len())
            .filter(|&i| !sel.faults[i] && (!pass || important(&run.faults[i])))
            .collect();
        let class = if pass {
            "host swap-ins"
        } else {
            "other host faults"
        };
        for i in take(&mut sel.dropped, class, rest.len(), 1) {
            sel.faults[rest[i]] = true;
        }
    }
    if let Some((k, _)) = run.ktrace {
        let (exits, instants) = exit_slices(k);
        sel.exits = take(&mut sel.dropped, "kvm exits", exits.len(), 1)
            .map(|i| exits[i])
            .collect();
        sel.instants = take(&mut sel.dropped, "kernel events", instants.len(), 1)
            .map(|i| instants[i])
            .collect();
    }
    sel
}
