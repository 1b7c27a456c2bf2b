//! A synchronous handle on the device's request engine for the fuzz targets
//! ([`crate::fuzzing`]): the same parsing and serving code the worker thread runs,
//! called on the caller's thread so that one input gives one deterministic run.

use std::sync::Arc;
use std::time::Instant;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::BlkBackend;
use super::request::Limits;
use super::serve::Engine;
use super::shared::{Active, MapperHook, Shared};
use super::trace::{BlkCounters, BlkTrace};
use super::{MAX_DISCARD_SECTORS, MAX_DISCARD_SEG};
use crate::virtio::VirtioInterrupt;

/// The request engine of a [`super::Blk`] over one queue, without its thread.
pub struct SyncBlk {
    engine: Engine,
    active: Active,
}

impl std::fmt::Debug for SyncBlk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncBlk").finish_non_exhaustive()
    }
}

impl SyncBlk {
    /// An engine serving `queue` in `mem` from `backend` (capacity: its size in
    /// sectors), with DISCARD negotiated if `discard`, raising `interrupt`.
    pub fn new(
        mem: GuestMemoryMmap,
        queue: Queue,
        backend: Box<dyn BlkBackend>,
        read_only: bool,
        discard: bool,
        interrupt: VirtioInterrupt,
    ) -> std::io::Result<Self> {
        let limits = Limits {
            capacity: backend.size() / super::SECTOR_SIZE,
            read_only,
            discard,
            max_discard_seg: MAX_DISCARD_SEG,
            max_discard_sectors: MAX_DISCARD_SECTORS,
        };
        let shared = Arc::new(Shared::new(
            "blk:fuzz".into(),
            Arc::new(BlkTrace::new(1024)),
            MapperHook::default(),
        ));
        let engine = Engine::new(
            backend,
            shared,
            *b"swaplab-fuzz\0\0\0\0\0\0\0\0",
            Instant::now(),
            0,
        );
        let active = Active {
            mem,
            queue,
            notify: EventFd::new(EFD_NONBLOCK)?,
            interrupt,
            limits,
        };
        Ok(Self { engine, active })
    }

    /// Serves every available chain, as the worker does on a notification.
    pub fn process(&mut self) {
        self.engine.process(&mut self.active);
    }

    /// The device's counters.
    pub fn counters(&self) -> BlkCounters {
        self.engine.shared.counters.snapshot()
    }

    /// Chains finished so far.
    pub fn completed(&self) -> u64 {
        self.engine.shared.completed()
    }

    /// The trace ring.
    pub fn trace(&self) -> &Arc<BlkTrace> {
        &self.engine.shared.trace
    }
}
