//! `trace.json`: every run of a matrix in one Chrome trace-event file for
//! Perfetto (ui.perfetto.dev → Open trace file), written as the runs end
//! ([`MatrixTrace`]) so only one run's records are in memory at a time.
//!
//! Each run is a process (pid = its index in the matrix, named
//! `scenario repetition i/N`). Its tracks are threads: one per vCPU, the blk
//! worker, the balloon worker and any other thread that faulted, named from
//! the swapper's thread registry ([`swapper::ThreadKind`]), and with
//! `--ktrace` a "kvm" track next to each vCPU for the kernel's events. On
//! them:
//!
//! - host faults as slices (`fault store`, `fault zero`, …; args: page,
//!   address, store read and install times, read-ahead);
//! - blk requests on the blk worker's track (`blk read`/`blk write`/…; args:
//!   sector, bytes, status), with the device's own faults nested inside;
//! - arrows from a blk request to the host fault it caused: `double paging`
//!   (a guest swap-out of a host-evicted page) and `stale swap read`;
//! - counters from the host timeline (resident memory, balloon, host swap
//!   and swap-disk totals);
//! - with `--ktrace`, KVM exits as slices (`kvm exit: REASON`, from
//!   `kvm_exit` to the next `kvm_entry`) and other kernel events as instants.
//!
//! Times are µs since the run's swapper epoch (the clock of fault and blk
//! records). A run keeps at most [`MAX_EVENTS_PER_RUN`] events: double-paging
//! pairs first, then the timeline, blk requests, host swap-ins, other faults,
//! KVM exits and other kernel events, each class thinned evenly over time when
//! it does not fit; the process name and a `trace truncated` marker say how
//! many were left out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use swapper::{FaultPath, ThreadKind};
use vmm::virtio::blk::BlkKind;

use super::threads::{BALLOON_DEVICE, BLK_DEVICE, ROOT_DEVICE};
use report::trace_event::{Arg, Point, Scope, Slice, TimeUnit, TraceError, TraceWriter};

mod plan;
mod records;
pub mod session;

pub use records::RunTrace;

#[cfg(test)]
use plan::thin;
use plan::{counter_tracks, exit_reason, nest, select, Item, Planned, Selection};

/// Most events one run puts in the trace.
pub const MAX_EVENTS_PER_RUN: u64 = 200_000;

/// Added to a vCPU's tid for its kernel-event track (tids stay below 2^22).
const KVM_TRACK: u32 = 0x4000_0000;
/// Plus the pid: the track of faults without a thread id (kept below 2^31,
/// as viewers may read tids as signed 32-bit numbers).
const NO_TID_TRACK: u32 = 0x2000_0000;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum TraceFileError {
    /// The file could not be created.
    #[error("creating {path}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing failed.
    #[error("writing the trace")]
    Write(#[from] TraceError),
    /// Flushing the finished trace or moving it into place failed.
    #[error("completing the trace")]
    Complete(#[from] std::io::Error),
}

/// What [`MatrixTrace::add_run`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTraceStats {
    /// The run's pid in the trace.
    pub pid: u32,
    /// Events written (metadata included).
    pub written: u64,
    /// Events left out to stay under the cap.
    pub dropped: u64,
}

/// The trace of a whole matrix, written as runs end.
pub struct MatrixTrace<W: Write> {
    w: TraceWriter<W>,
    next_pid: u32,
    cap: u64,
    next_flow: u64,
}

impl MatrixTrace<BufWriter<File>> {
    /// Creates `path`.
    pub fn create(path: &Path) -> Result<Self, TraceFileError> {
        let f = File::create(path).map_err(|source| TraceFileError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(BufWriter::new(f))
    }
}

/// Display name and sort order of a thread kind.
fn thread_label(kind: ThreadKind, tid: i32) -> (String, i64) {
    match kind {
        ThreadKind::Vcpu(n) => (format!("vCPU {n}"), 2 * i64::from(n)),
        ThreadKind::Device(BLK_DEVICE) => ("blk worker (guest swap disk)".into(), 10_000),
        ThreadKind::Device(BALLOON_DEVICE) => ("balloon worker".into(), 10_001),
        ThreadKind::Device(ROOT_DEVICE) => ("blk worker (guest root disk)".into(), 10_002),
        ThreadKind::Device(d) => (format!("device {d} worker"), 10_003 + i64::from(d)),
        ThreadKind::Vmm => (format!("VMM thread {tid}"), 20_000),
        ThreadKind::Unknown => match kernel_thread(tid) {
            // E.g. a kworker faulting a page in for a vCPU (KVM's async page faults).
            Some(comm) => (format!("kernel thread {comm} ({tid})"), 29_000),
            None => (format!("unknown thread {tid}"), 30_000),
        },
    }
}

/// The name of kernel thread `tid` (a child of kthreadd, which lives as
/// long as the kernel, so its id is not reused as a user thread's).
fn kernel_thread(tid: i32) -> Option<String> {
    if tid <= 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:"))?.trim();
    if ppid != "2" && tid != 2 {
        return None;
    }
    let comm = std::fs::read_to_string(format!("/proc/{tid}/comm")).ok()?;
    Some(comm.trim().to_string())
}

/// `vcpuN` (the VMM's vCPU thread names) → N.
fn vcpu_of_comm(comm: &str) -> Option<u32> {
    comm.strip_prefix("vcpu")?.parse().ok()
}

fn fault_name(p: FaultPath) -> &'static str {
    match p {
        FaultPath::Zero => "fault zero",
        FaultPath::Store => "fault store",
        FaultPath::Minor => "fault minor",
        FaultPath::PrefetchHit => "fault prefetch_hit",
        FaultPath::Named => "fault named",
        FaultPath::WriteProtect => "fault write_protect",
        FaultPath::Stale => "fault stale",
        FaultPath::Fatal => "fault FATAL",
    }
}

fn blk_name(k: BlkKind) -> &'static str {
    match k {
        BlkKind::Read => "blk read",
        BlkKind::Write => "blk write",
        BlkKind::Flush => "blk flush",
        BlkKind::GetId => "blk get_id",
        BlkKind::Discard => "blk discard",
        BlkKind::Unsupported => "blk unsupported",
        BlkKind::Invalid => "blk invalid",
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl<W: Write> MatrixTrace<W> {
    /// A trace written to `out`.
    pub fn new(out: W) -> Result<Self, TraceFileError> {
        Ok(Self {
            w: TraceWriter::new(out, TimeUnit::Ns)?,
            next_pid: 1,
            cap: MAX_EVENTS_PER_RUN,
            next_flow: 1,
        })
    }

    /// Changes the per-run event cap (at least 8).
    pub fn with_cap(mut self, cap: u64) -> Self {
        self.cap = cap.max(8);
        self
    }

    fn take_pid(&mut self) -> u32 {
        let pid = self.next_pid;
        self.next_pid += 1;
        pid
    }

    fn marker(&mut self, pid: u32, name: &str, args: &[(&str, Arg<'_>)]) -> Result<(), TraceError> {
        let at = Point {
            pid,
            tid: 0,
            ts_us: 0.0,
        };
        self.w.instant(name, "meta", at, Scope::Process, args)
    }

    /// A run that produced no records (it failed before or while running):
    /// a named process with a `run failed` marker.
    pub fn add_failed(&mut self, label: &str, why: &str) -> Result<u32, TraceFileError> {
        let pid = self.take_pid();
        self.w.process_name(pid, &format!("{label} (FAILED)"))?;
        self.marker(pid, "run failed", &[("reason", Arg::Str(why))])?;
        Ok(pid)
    }

    /// Writes one run as process `label`.
    pub fn add_run(
        &mut self,
        label: &str,
        run: &RunTrace<'_>,
    ) -> Result<RunTraceStats, TraceFileError> {
        let pid = self.take_pid();
        let before = self.w.events();
        let sel = select(run, self.cap);
        let dropped: u64 = sel.dropped.values().sum();
        let tid_of = |tid: i32| -> u32 {
            if tid > 0 {
                tid as u32
            } else {
                // No thread id recorded: a track of its own per run.
                NO_TID_TRACK + pid
            }
        };
        self.write_meta(pid, label, run, &sel, dropped, &tid_of)?;
        let tracks = counter_tracks(run.timeline);
        for &j in &sel.samples {
            let s = &run.timeline[j];
            let ts = us(run.start_ns + (s.t_s.max(0.0) * 1e9) as u64);
            for (name, fields) in &tracks {
                let v: Vec<(&str, f64)> = fields.iter().map(|(k, f)| (*k, f.of(s))).collect();
                self.w.counter(name, pid, ts, &v)?;
            }
        }
        self.write_slices(pid, run, &sel, &tid_of)?;
        if let Some((k, epoch_mono)) = run.ktrace {
            for &i in &sel.instants {
                let e = &k.events[i];
                let at = Point {
                    pid,
                    tid: tid_of(e.tid) | KVM_TRACK,
                    ts_us: us(e.mono_ns.saturating_sub(epoch_mono)),
                };
                let args = [
                    ("detail", Arg::Str(&e.detail)),
                    ("cpu", Arg::U64(u64::from(e.cpu))),
                ];
                self.w.instant(k.name(e), "kvm", at, Scope::Thread, &args)?;
            }
        }
        Ok(RunTraceStats {
            pid,
            written: self.w.events() - before,
            dropped,
        })
    }

    /// The process, its named tracks and the truncation/ktrace markers.
    fn write_meta(
        &mut self,
        pid: u32,
        label: &str,
        run: &RunTrace<'_>,
        sel: &Selection,
        dropped: u64,
        tid_of: &dyn Fn(i32) -> u32,
    ) -> Result<(), TraceError> {
        let name = if dropped > 0 {
            format!("{label} ({dropped} events left out)")
        } else {
            label.to_string()
        };
        self.w.process_name(pid, &name)?;
        let mut threads: BTreeMap<u32, (String, i64)> = BTreeMap::new();
        for f in run.faults {
            threads
                .entry(tid_of(f.tid))
                .or_insert_with(|| thread_label(f.thread, f.tid));
        }
        for r in run.requests {
            threads
                .entry(tid_of(r.tid))
                .or_insert_with(|| thread_label(ThreadKind::Device(BLK_DEVICE), r.tid));
        }
        if let Some((k, _)) = run.ktrace {
            for (&tid, comm) in &k.comms {
                let track = match threads.get(&tid_of(tid)) {
                    Some((n, s)) => (format!("{n} · kvm"), s + 1),
                    None => match vcpu_of_comm(comm) {
                        Some(v) => (format!("vCPU {v} · kvm"), 2 * i64::from(v) + 1),
                        None => (format!("{comm} ({tid}) · kvm"), 25_000),
                    },
                };
                threads.insert(tid_of(tid) | KVM_TRACK, track);
            }
        }
        for (&tid, (name, sort)) in &threads {
            self.w.thread_name(pid, tid, name)?;
            self.w.thread_sort_index(pid, tid, *sort)?;
        }
        if dropped > 0 || run.ring_dropped > 0 {
            let mut args: Vec<(&str, Arg<'_>)> = sel
                .dropped
                .iter()
                .map(|(k, v)| (*k, Arg::U64(*v)))
                .collect();
            args.push(("cap_per_run", Arg::U64(self.cap)));
            args.push(("records_lost_by_rings", Arg::U64(run.ring_dropped)));
            self.marker(pid, "trace truncated", &args)?;
        }
        if let Some((k, _)) = run.ktrace {
            let (enabled, missing) = (k.enabled.join(" "), k.missing.join(" "));
            self.marker(
                pid,
                "ktrace",
                &[
                    ("enabled", Arg::Str(&enabled)),
                    ("missing", Arg::Str(&missing)),
                    ("events", Arg::U64(k.events.len() as u64)),
                    ("not_kept", Arg::U64(k.dropped)),
                    ("lost_by_kernel", Arg::U64(k.lost)),
                ],
            )?;
        }
        Ok(())
    }

    /// Faults, requests and KVM exits as nested slices; arrows for pairs.
    fn write_slices(
        &mut self,
        pid: u32,
        run: &RunTrace<'_>,
        sel: &Selection,
        tid_of: &dyn Fn(i32) -> u32,
    ) -> Result<(), TraceError> {
        let mut plan: Vec<Planned> = Vec::new();
        for (i, f) in run
            .faults
            .iter()
            .enumerate()
            .filter(|(i, _)| sel.faults[*i])
        {
            plan.push(Planned {
                tid: tid_of(f.tid),
                start: f.t_read_ns,
                end: f.t_read_ns + u64::from(f.total_ns),
                item: Item::Fault(i),
            });
        }
        for (i, r) in run
            .requests
            .iter()
            .enumerate()
            .filter(|(i, _)| sel.requests[*i])
        {
            plan.push(Planned {
                tid: tid_of(r.tid),
                start: r.start_ns,
                end: r.end_ns(),
                item: Item::Request(i),
            });
        }
        let epoch_mono = run.ktrace.map_or(0, |(_, m)| m);
        for &(i, start, end) in &sel.exits {
            let Some((k, _)) = run.ktrace else { break };
            plan.push(Planned {
                tid: tid_of(k.events[i].tid) | KVM_TRACK,
                start: start.saturating_sub(epoch_mono),
                end: end.saturating_sub(epoch_mono),
                item: Item::Exit(i),
            });
        }
        nest(&mut plan);
        let pair_faults: HashSet<usize> = sel.pairs.iter().map(|p| p.fault).collect();
        let pair_reqs: HashSet<usize> = sel.pairs.iter().map(|p| p.request).collect();
        let mut at: HashMap<(bool, usize), Point> = HashMap::new();
        for p in &plan {
            let point = Point {
                pid,
                tid: p.tid,
                ts_us: us(p.start),
            };
            let dur_us = us(p.end.saturating_sub(p.start));
            match p.item {
                Item::Fault(i) => {
                    let f = &run.faults[i];
                    let (addr, kind) = (format!("{:#x}", f.addr), format!("{:?}", f.thread));
                    self.w.complete(&Slice {
                        name: fault_name(f.path),
                        cat: "host_fault",
                        pid,
                        tid: p.tid,
                        ts_us: point.ts_us,
                        dur_us,
                        args: &[
                            ("page", Arg::U64(u64::from(f.page))),
                            ("addr", Arg::Str(&addr)),
                            ("write", Arg::Bool(f.write)),
                            ("thread", Arg::Str(&kind)),
                            ("total_ns", Arg::U64(u64::from(f.total_ns))),
                            ("store_read_ns", Arg::U64(u64::from(f.store_read_ns))),
                            ("install_ns", Arg::U64(u64::from(f.install_ns))),
                            ("prefetched", Arg::U64(u64::from(f.prefetched))),
                            ("reclaimed", Arg::U64(u64::from(f.reclaimed))),
                            ("seq", Arg::U64(f.seq)),
                        ],
                    })?;
                    if pair_faults.contains(&i) {
                        at.insert((true, i), point);
                    }
                }
                Item::Request(i) => {
                    let r = &run.requests[i];
                    self.w.complete(&Slice {
                        name: blk_name(r.kind),
                        cat: "blk",
                        pid,
                        tid: p.tid,
                        ts_us: point.ts_us,
                        dur_us,
                        args: &[
                            ("sector", Arg::U64(r.sector)),
                            ("bytes", Arg::U64(u64::from(r.bytes))),
                            ("status", Arg::U64(u64::from(r.status))),
                            ("service_ns", Arg::U64(r.service_ns)),
                            ("seq", Arg::U64(r.seq)),
                        ],
                    })?;
                    if pair_reqs.contains(&i) {
                        at.insert((false, i), point);
                    }
                }
                Item::Exit(i) => {
                    let Some((k, _)) = run.ktrace else { continue };
                    let e = &k.events[i];
                    let name = format!("kvm exit: {}", exit_reason(&e.detail));
                    self.w.complete(&Slice {
                        name: &name,
                        cat: "kvm",
                        pid,
                        tid: p.tid,
                        ts_us: point.ts_us,
                        dur_us,
                        args: &[
                            ("detail", Arg::Str(&e.detail)),
                            ("cpu", Arg::U64(u64::from(e.cpu))),
                        ],
                    })?;
                }
            }
        }
        for p in &sel.pairs {
            if let (Some(&from), Some(&to)) =
                (at.get(&(false, p.request)), at.get(&(true, p.fault)))
            {
                let id = self.next_flow;
                self.next_flow += 1;
                self.w.flow_start(id, p.name, "flow", from)?;
                self.w.flow_end(id, p.name, "flow", to)?;
            }
        }
        Ok(())
    }

    /// Closes the document; returns the writer.
    pub fn finish(self) -> Result<W, TraceFileError> {
        Ok(self.w.finish()?)
    }
}

#[cfg(test)]
mod tests;
