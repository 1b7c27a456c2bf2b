//! Serving the queue: pop descriptor chains, parse them ([`super::request`]), run
//! them against the backend, write the status, add the used entry, record the
//! request and raise the interrupt (honouring EVENT_IDX or
//! `VRING_AVAIL_F_NO_INTERRUPT`).
//!
//! Every guest buffer is copied here, on the worker thread ([`Bytes`] reads and
//! writes through a bounce buffer), so when the host swapper has evicted a data page
//! it is this thread that faults on it, while its request is being served.

use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Instant;

use virtio_bindings::bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::backend::BlkBackend;
use super::request::{self, InvalidReason, Limits, Op, Request, Segment, ID_BYTES};
use super::request::{SECTOR_SIZE, S_IOERR, S_OK, S_UNSUPP};
use super::shared::{Active, DiskMapper, Shared};
use super::trace::{bump, BlkKind, BlkRecord, STATUS_NONE};
use crate::devices::should_log;
use crate::virtio::VirtioInterrupt;

/// Largest bounce buffer between guest RAM and the backend; bigger requests go in
/// pieces.
const BOUNCE_MAX: usize = 512 * 1024;

/// The parts of an [`Active`] queue one request needs.
struct Ctx<'a> {
    mem: &'a GuestMemoryMmap,
    queue: &'a mut Queue,
    interrupt: &'a VirtioInterrupt,
    limits: &'a Limits,
}

/// Serves requests (everything but the event loop).
pub(super) struct Engine {
    backend: Box<dyn BlkBackend>,
    pub(super) shared: Arc<Shared>,
    id: [u8; ID_BYTES],
    epoch: Instant,
    tid: i32,
    bounce: Vec<u8>,
}

/// What executing a request did.
struct Outcome {
    kind: BlkKind,
    status: u8,
    /// Bytes written to the request's device-writable data, from its start.
    data_written: u32,
}

/// Walks a list of guest buffers as one byte stream.
struct Cursor<'a> {
    segs: &'a [Segment],
    idx: usize,
    off: u32,
}

impl<'a> Cursor<'a> {
    fn new(segs: &'a [Segment]) -> Self {
        Self {
            segs,
            idx: 0,
            off: 0,
        }
    }

    /// Copies between `buf` and the next `buf.len()` bytes of the stream.
    fn copy(
        &mut self,
        mem: &GuestMemoryMmap,
        buf: &mut [u8],
        to_guest: bool,
    ) -> Result<(), vm_memory::GuestMemoryError> {
        self.copy_mapping(mem, buf, to_guest, None)
    }

    /// [`Cursor::copy`]; towards the guest, whole aligned pages are first
    /// offered to the mapper (with their disk offset, `buf` being the disk's
    /// bytes from the first) and skipped if it took them.
    fn copy_mapping(
        &mut self,
        mem: &GuestMemoryMmap,
        buf: &mut [u8],
        to_guest: bool,
        mapper: Option<(&dyn DiskMapper, u64)>,
    ) -> Result<(), vm_memory::GuestMemoryError> {
        let mut done = 0;
        while done < buf.len() {
            let Some(s) = self.segs.get(self.idx) else {
                return Err(vm_memory::GuestMemoryError::PartialBuffer {
                    expected: buf.len(),
                    completed: done,
                });
            };
            let n = ((s.len - self.off) as usize).min(buf.len() - done);
            let addr = GuestAddress(s.addr.0 + u64::from(self.off));
            if to_guest {
                let mapper = mapper.map(|(m, disk)| (m, disk + done as u64));
                write_mapping(mem, &buf[done..done + n], addr, mapper)?;
            } else {
                mem.read_slice(&mut buf[done..done + n], addr)?;
            }
            done += n;
            self.off += n as u32;
            if self.off == s.len {
                self.idx += 1;
                self.off = 0;
            }
        }
        Ok(())
    }
}

/// Writes `data` (the disk's bytes from the mapper's offset) at `addr`,
/// offering each whole aligned page to the mapper first.
fn write_mapping(
    mem: &GuestMemoryMmap,
    data: &[u8],
    addr: GuestAddress,
    mapper: Option<(&dyn DiskMapper, u64)>,
) -> Result<(), vm_memory::GuestMemoryError> {
    const PAGE: u64 = 4096;
    let Some((mapper, disk)) = mapper else {
        return mem.write_slice(data, addr);
    };
    let mut off = 0usize;
    while off < data.len() {
        let a = addr.0 + off as u64;
        let left = data.len() - off;
        if a % PAGE == 0 && left >= PAGE as usize {
            let page: &[u8; 4096] = data[off..off + 4096].try_into().expect("slice of one page");
            if !mapper.page_read(GuestAddress(a), disk + off as u64, page) {
                mem.write_slice(page, GuestAddress(a))?;
            }
            off += PAGE as usize;
        } else {
            // Up to the next page boundary (or the end).
            let n = ((PAGE - a % PAGE) as usize).min(left);
            mem.write_slice(&data[off..off + n], GuestAddress(a))?;
            off += n;
        }
    }
    Ok(())
}

fn mem_error(e: vm_memory::GuestMemoryError) -> std::io::Error {
    std::io::Error::other(format!("guest memory: {e}"))
}

impl Engine {
    pub(super) fn new(
        backend: Box<dyn BlkBackend>,
        shared: Arc<Shared>,
        id: [u8; ID_BYTES],
        epoch: Instant,
        tid: i32,
    ) -> Self {
        Self {
            backend,
            shared,
            id,
            epoch,
            tid,
            bounce: Vec::new(),
        }
    }

    fn now_ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn queue_error(&self, what: std::fmt::Arguments<'_>) {
        let n = bump(&self.shared.counters.queue_errors);
        if should_log(n) {
            tracing::warn!(device = %self.shared.name, count = n, "virtio-blk queue: {what}");
        }
    }

    /// Serves every available chain (until preempted).
    pub(super) fn process(&mut self, a: &mut Active) {
        let Active {
            mem,
            queue,
            interrupt,
            limits,
            ..
        } = a;
        loop {
            // A driver may not make more than `size` chains available at once; the
            // queue crate would refuse (and log) every time, so check first.
            let next = Wrapping(queue.next_avail());
            match queue.avail_idx(mem, Ordering::Acquire) {
                Ok(idx) if (idx - next).0 <= queue.size() => {}
                Ok(idx) => {
                    self.queue_error(format_args!(
                        "available index {} is {} ahead of {} (queue size {}); waiting for the next notification",
                        idx.0,
                        (idx - next).0,
                        next.0,
                        queue.size()
                    ));
                    return;
                }
                Err(e) => {
                    self.queue_error(format_args!("cannot read the available index: {e}"));
                    return;
                }
            }
            if let Err(e) = queue.disable_notification(mem) {
                self.queue_error(format_args!("cannot disable notifications: {e}"));
            }
            while !self.shared.preempt.load(Ordering::SeqCst) {
                let Some(chain) = queue.pop_descriptor_chain(&*mem) else {
                    break;
                };
                let start = Instant::now();
                let ctx = Ctx {
                    mem,
                    queue: &mut *queue,
                    interrupt,
                    limits,
                };
                self.serve(ctx, chain, start);
            }
            if self.shared.preempt.load(Ordering::SeqCst) {
                return;
            }
            match queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => return,
                Err(e) => {
                    self.queue_error(format_args!("cannot enable notifications: {e}"));
                    return;
                }
            }
        }
    }

    /// Serves one chain: parse, execute, status, used entry, record, interrupt.
    fn serve(&mut self, a: Ctx<'_>, chain: DescriptorChain<&GuestMemoryMmap>, start: Instant) {
        let start_ns = self.now_ns(start);
        let head = chain.head_index();
        let mut record = BlkRecord {
            seq: 0,
            tid: self.tid,
            kind: BlkKind::Invalid,
            sector: 0,
            bytes: 0,
            start_ns,
            service_ns: 0,
            status: STATUS_NONE,
            major_faults: 0,
        };
        let faults_before = self.major_faults();
        if head >= a.queue.size() {
            // Nothing can be completed: the used ring only takes valid heads.
            self.invalid(InvalidReason::HeadOutOfRange, format_args!("head {head}"));
            self.finish(record, start, faults_before);
            self.shared.complete_one();
            return;
        }
        let parsed = request::parse(chain, a.mem, a.limits);
        let (status_addr, writable_len, outcome) = match parsed {
            Ok(req) => {
                record.sector = req.sector;
                record.bytes = req.data_len;
                let out = self.execute(a.mem, &req);
                (Some(req.status), req.writable_len, out)
            }
            Err(rej) => {
                record.sector = rej.sector;
                self.invalid(
                    rej.reason,
                    format_args!(
                        "type {:?} sector {} head {head}",
                        rej.request_type, rej.sector
                    ),
                );
                let kind = if rej.reason.status() == S_UNSUPP {
                    BlkKind::Unsupported
                } else {
                    BlkKind::Invalid
                };
                let out = Outcome {
                    kind,
                    status: rej.reason.status(),
                    data_written: 0,
                };
                (rej.status, rej.writable_len, out)
            }
        };
        record.kind = outcome.kind;
        let status_written =
            status_addr.is_some_and(|addr| a.mem.write_slice(&[outcome.status], addr).is_ok());
        if status_written {
            record.status = outcome.status;
        }
        // The used length promises that many bytes were written from the start of the
        // device-writable part: all of it only if the data and the status were.
        let used_len = if status_written && outcome.data_written == writable_len.saturating_sub(1) {
            writable_len
        } else {
            outcome.data_written
        };
        if let Err(e) = a.queue.add_used(a.mem, head, used_len) {
            self.queue_error(format_args!("cannot add used entry for head {head}: {e}"));
        }
        let signal = self.needs_interrupt(a.mem, a.queue);
        self.finish(record, start, faults_before);
        if signal {
            match a.interrupt.signal_used_queue() {
                Ok(()) => bump(&self.shared.counters.interrupts),
                Err(e) => {
                    let n = bump(&self.shared.counters.interrupt_errors);
                    if should_log(n) {
                        tracing::warn!(device = %self.shared.name, "virtio-blk cannot raise its interrupt: {e}");
                    }
                    n
                }
            };
        } else {
            bump(&self.shared.counters.interrupts_suppressed);
        }
        self.shared.complete_one();
    }

    /// This thread's major page faults so far, when the device counts them.
    fn major_faults(&self) -> Option<u64> {
        if !self.shared.count_major_faults {
            return None;
        }
        let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).ok()?;
        u64::try_from(ru.major_page_faults()).ok()
    }

    fn finish(&self, mut record: BlkRecord, start: Instant, faults_before: Option<u64>) {
        record.service_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if let (Some(before), Some(after)) = (faults_before, self.major_faults()) {
            record.major_faults = u32::try_from(after.saturating_sub(before)).unwrap_or(u32::MAX);
        }
        self.shared.trace.push(record);
        bump(&self.shared.counters.requests);
    }

    fn invalid(&self, reason: InvalidReason, what: std::fmt::Arguments<'_>) {
        let n = self.shared.counters.invalid(reason);
        if should_log(n) {
            tracing::warn!(
                device = %self.shared.name,
                count = n,
                "virtio-blk refused a malformed request ({}): {what}",
                reason.name()
            );
        }
    }

    /// Whether the driver wants an interrupt for the used entry just added.
    fn needs_interrupt(&self, mem: &GuestMemoryMmap, queue: &mut Queue) -> bool {
        if queue.event_idx_enabled() {
            return queue.needs_notification(mem).unwrap_or(true);
        }
        // Make the used entry visible before reading the driver's flags.
        fence(Ordering::SeqCst);
        let flags: u16 = mem
            .load(GuestAddress(queue.avail_ring()), Ordering::Acquire)
            .map(u16::from_le)
            .unwrap_or(0);
        flags & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0
    }

    fn execute(&mut self, mem: &GuestMemoryMmap, req: &Request) -> Outcome {
        // Only reads and writes use it, and their range was checked against the
        // capacity; other types carry any sector.
        let offset = req.sector.wrapping_mul(SECTOR_SIZE);
        let (kind, result, data_written) = match &req.op {
            Op::Read => {
                let mut written = 0;
                let r = self.read(mem, req, offset, &mut written);
                (BlkKind::Read, r, written)
            }
            Op::Write => (BlkKind::Write, self.write(mem, req, offset), 0),
            Op::Flush => (BlkKind::Flush, self.backend.flush(), 0),
            Op::GetId => {
                let n = (req.data_len as usize).min(ID_BYTES);
                let mut id = self.id;
                let r = Cursor::new(&req.data)
                    .copy(mem, &mut id[..n], true)
                    .map_err(mem_error);
                let written = if r.is_ok() { n as u32 } else { 0 };
                (BlkKind::GetId, r, written)
            }
            Op::Discard(ranges) => {
                let mut r = Ok(());
                for d in ranges {
                    let (off, len) = (d.sector * SECTOR_SIZE, u64::from(d.sectors) * SECTOR_SIZE);
                    if let Some(m) = &self.shared.mapper.0 {
                        m.disk_changing(off, len);
                    }
                    r = self.backend.discard(off, len);
                    if r.is_err() {
                        break;
                    }
                }
                (BlkKind::Discard, r, 0)
            }
            Op::Unsupported(t) => {
                let n = bump(&self.shared.counters.unsupported);
                if should_log(n) {
                    tracing::warn!(device = %self.shared.name, count = n, "virtio-blk: unsupported request type {t}");
                }
                return Outcome {
                    kind: BlkKind::Unsupported,
                    status: S_UNSUPP,
                    data_written: 0,
                };
            }
        };
        let c = &self.shared.counters;
        let bytes = u64::from(req.data_len);
        match result {
            Ok(()) => {
                let (ops, b) = match &req.op {
                    Op::Read => (&c.reads, Some(&c.bytes_read)),
                    Op::Write => (&c.writes, Some(&c.bytes_written)),
                    Op::Flush => (&c.flushes, None),
                    Op::GetId => (&c.get_ids, None),
                    Op::Discard(ranges) => {
                        let n: u64 = ranges.iter().map(|d| u64::from(d.sectors)).sum();
                        c.bytes_discarded
                            .fetch_add(n * SECTOR_SIZE, Ordering::Relaxed);
                        (&c.discards, None)
                    }
                    Op::Unsupported(_) => {
                        return Outcome {
                            kind,
                            status: S_UNSUPP,
                            data_written,
                        }
                    }
                };
                bump(ops);
                if let Some(b) = b {
                    b.fetch_add(bytes, Ordering::Relaxed);
                }
                Outcome {
                    kind,
                    status: S_OK,
                    data_written,
                }
            }
            Err(e) => {
                let per_op = match kind {
                    BlkKind::Read => Some(&c.read_errors),
                    BlkKind::Write => Some(&c.write_errors),
                    BlkKind::Flush => Some(&c.flush_errors),
                    BlkKind::Discard => Some(&c.discard_errors),
                    _ => None,
                };
                if let Some(p) = per_op {
                    bump(p);
                }
                let n = c.io_error(&e);
                if should_log(n) {
                    tracing::warn!(
                        device = %self.shared.name,
                        count = n,
                        "virtio-blk {kind:?} of {bytes} bytes at sector {} failed: {e}",
                        req.sector
                    );
                }
                Outcome {
                    kind,
                    status: S_IOERR,
                    data_written,
                }
            }
        }
    }

    fn bounce(&mut self, want: usize) -> usize {
        let n = want.min(BOUNCE_MAX);
        if self.bounce.len() < n {
            self.bounce.resize(n, 0);
        }
        n
    }

    /// Disk to guest, in bounce-sized pieces; `written` counts bytes that reached
    /// guest RAM.
    fn read(
        &mut self,
        mem: &GuestMemoryMmap,
        req: &Request,
        offset: u64,
        written: &mut u32,
    ) -> std::io::Result<()> {
        let total = req.data_len as usize;
        let mut cursor = Cursor::new(&req.data);
        let mut done = 0;
        while done < total {
            let n = self.bounce(total - done);
            let buf = &mut self.bounce[..n];
            self.backend.read_at(buf, offset + done as u64)?;
            let mapper = self.shared.mapper.0.as_deref();
            cursor
                .copy_mapping(mem, buf, true, mapper.map(|m| (m, offset + done as u64)))
                .map_err(mem_error)?;
            done += n;
            *written = done as u32;
        }
        Ok(())
    }

    /// Guest to disk, in bounce-sized pieces.
    fn write(&mut self, mem: &GuestMemoryMmap, req: &Request, offset: u64) -> std::io::Result<()> {
        let total = req.data_len as usize;
        if let Some(m) = &self.shared.mapper.0 {
            // Before the disk changes: pages that mirror it stop being copies.
            m.disk_changing(offset, total as u64);
        }
        let mut cursor = Cursor::new(&req.data);
        let mut done = 0;
        while done < total {
            let n = self.bounce(total - done);
            let buf = &mut self.bounce[..n];
            cursor.copy(mem, buf, false).map_err(mem_error)?;
            self.backend.write_at(buf, offset + done as u64)?;
            done += n;
        }
        Ok(())
    }
}
