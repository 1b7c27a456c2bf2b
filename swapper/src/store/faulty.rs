//! Fault injection: a store wrapper that fails on demand.
//!
//! A [`FaultInjector`] is a shared handle (the test keeps one clone, the
//! swapper's store the other). Each knob is a [`Countdown`] of operations to
//! sabotage (`u64::MAX` = until cleared):
//! - write errors with a chosen errno (`ENOSPC`, `EIO`, …): nothing written;
//! - short writes: half a page is written over the slot, then a
//!   [`StoreError::Short`] is returned (a torn slot the swapper must never
//!   trust);
//! - read errors with a chosen errno;
//! - short reads: the first half of the page arrives, the rest is garbage, and a
//!   [`StoreError::Short`] is returned (the swapper must never serve it);
//! - corrupt reads: the real data with one bit flipped (checksums catch it);
//! - slow operations: each read or write first sleeps for a set time;
//! - held reads: every read blocks until released (a hung disk), so a fault
//!   waits on the store for as long as a test wants.

use super::backend::Store;
use super::error::StoreError;
use crate::page::PAGE_SIZE;
use crate::slots::Slot;
use base::sync::lock;
use base::{Countdown, Sabotage};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Shared fault-injection controls.
#[derive(Debug, Default)]
pub struct FaultInjector {
    write_errors: Countdown,
    write_errno: AtomicI32,
    short_writes: Countdown,
    read_errors: Countdown,
    read_errno: AtomicI32,
    corrupt_reads: Countdown,
    short_reads: Countdown,
    sabotage: Sabotage,
    hold: Mutex<Hold>,
    hold_cv: Condvar,
}

/// The read gate: closed while reads are held.
#[derive(Debug, Default)]
struct Hold {
    closed: bool,
    /// Reads waiting at the gate now.
    waiting: u64,
}

impl FaultInjector {
    /// A new injector with nothing armed.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The next `n` writes fail with `errno` (`u64::MAX`: all writes).
    pub fn fail_writes(&self, n: u64, errno: i32) {
        self.write_errno.store(errno, Ordering::Release);
        self.write_errors.arm(n);
    }

    /// The next `n` writes are torn (half written) and reported short.
    pub fn short_writes(&self, n: u64) {
        self.short_writes.arm(n);
    }

    /// The next `n` reads fail with `errno`.
    pub fn fail_reads(&self, n: u64, errno: i32) {
        self.read_errno.store(errno, Ordering::Release);
        self.read_errors.arm(n);
    }

    /// The next `n` reads return data with one flipped bit.
    pub fn corrupt_reads(&self, n: u64) {
        self.corrupt_reads.arm(n);
    }

    /// The next `n` reads deliver half a page and are reported short.
    pub fn short_reads(&self, n: u64) {
        self.short_reads.arm(n);
    }

    /// The next `n` reads or writes first sleep for `delay` (a slow disk).
    pub fn slow(&self, n: u64, delay: std::time::Duration) {
        self.sabotage.slow(n, delay);
    }

    /// From now on every read blocks before touching the store, until
    /// [`FaultInjector::release_reads`] (a hung disk).
    pub fn hold_reads(&self) {
        self.gate().closed = true;
    }

    /// Lets the held reads go on, and later reads pass.
    pub fn release_reads(&self) {
        self.gate().closed = false;
        self.hold_cv.notify_all();
    }

    /// Waits until at least `n` reads are held, for at most `limit`;
    /// whether they are.
    pub fn wait_held_reads(&self, n: u64, limit: Duration) -> bool {
        let (g, _) = self
            .hold_cv
            .wait_timeout_while(self.gate(), limit, |h| h.waiting < n)
            .unwrap_or_else(|e| e.into_inner());
        g.waiting >= n
    }

    fn gate(&self) -> MutexGuard<'_, Hold> {
        lock(&self.hold)
    }

    fn maybe_hold(&self) {
        let mut g = self.gate();
        if !g.closed {
            return;
        }
        self.hit();
        g.waiting += 1;
        self.hold_cv.notify_all();
        let mut g = self
            .hold_cv
            .wait_while(g, |h| h.closed)
            .unwrap_or_else(|e| e.into_inner());
        g.waiting -= 1;
    }

    /// Disarms everything (held reads stay held: see
    /// [`FaultInjector::release_reads`]).
    pub fn clear(&self) {
        for c in [
            &self.write_errors,
            &self.short_writes,
            &self.read_errors,
            &self.corrupt_reads,
            &self.short_reads,
        ] {
            c.clear();
        }
        self.sabotage.clear_slow();
    }

    /// Operations sabotaged (failed, shortened or slowed) so far.
    pub fn injected(&self) -> u64 {
        self.sabotage.injected()
    }

    fn hit(&self) {
        self.sabotage.hit();
    }

    fn maybe_slow(&self) {
        self.sabotage.maybe_slow();
    }
}

/// A store that consults a [`FaultInjector`] before each operation.
pub struct FaultyStore {
    inner: Box<dyn Store>,
    inj: Arc<FaultInjector>,
}

impl FaultyStore {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Store>, inj: Arc<FaultInjector>) -> Self {
        Self { inner, inj }
    }
}

impl Store for FaultyStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn capacity(&self) -> u32 {
        self.inner.capacity()
    }

    fn write(&self, slot: Slot, page: &[u8]) -> Result<(), StoreError> {
        self.inj.maybe_slow();
        if self.inj.write_errors.take() {
            self.inj.hit();
            return Err(StoreError::Io {
                op: "write",
                slot: slot.0,
                source: std::io::Error::from_raw_os_error(
                    self.inj.write_errno.load(Ordering::Acquire),
                ),
            });
        }
        if self.inj.short_writes.take() {
            self.inj.hit();
            let mut torn = page.to_vec();
            torn[PAGE_SIZE / 2..].fill(0xA5);
            self.inner.write(slot, &torn)?;
            return Err(StoreError::Short {
                op: "write",
                slot: slot.0,
                done: PAGE_SIZE / 2,
            });
        }
        self.inner.write(slot, page)
    }

    fn read(&self, slot: Slot, buf: &mut [u8]) -> Result<(), StoreError> {
        self.inj.maybe_hold();
        self.inj.maybe_slow();
        if self.inj.read_errors.take() {
            self.inj.hit();
            return Err(StoreError::Io {
                op: "read",
                slot: slot.0,
                source: std::io::Error::from_raw_os_error(
                    self.inj.read_errno.load(Ordering::Acquire),
                ),
            });
        }
        self.inner.read(slot, buf)?;
        if self.inj.short_reads.take() {
            self.inj.hit();
            buf[PAGE_SIZE / 2..].fill(0x5A);
            return Err(StoreError::Short {
                op: "read",
                slot: slot.0,
                done: PAGE_SIZE / 2,
            });
        }
        if self.inj.corrupt_reads.take() {
            self.inj.hit();
            buf[PAGE_SIZE / 3] ^= 0x10;
        }
        Ok(())
    }

    fn discard(&self, slot: Slot) {
        self.inner.discard(slot)
    }

    fn bytes_used(&self) -> u64 {
        self.inner.bytes_used()
    }

    fn nodes(&self) -> Result<Vec<super::StoreNode>, StoreError> {
        self.inner.nodes()
    }

    fn close(&self) -> Result<(), StoreError> {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use super::super::memory::MemoryStore;
    use super::super::testutil::page;
    use super::*;

    fn faulty() -> (FaultyStore, Arc<FaultInjector>) {
        let inj = FaultInjector::new();
        (
            FaultyStore::new(Box::new(MemoryStore::new(8)), inj.clone()),
            inj,
        )
    }

    #[test]
    fn passes_through_when_disarmed() {
        let (s, inj) = faulty();
        super::super::testutil::exercise(&s);
        assert_eq!(inj.injected(), 0);
    }

    #[test]
    fn write_errors_count_down_and_keep_errno() {
        let (s, inj) = faulty();
        inj.fail_writes(2, libc::ENOSPC);
        for _ in 0..2 {
            match s.write(Slot(0), &page(1)) {
                Err(StoreError::Io { source, .. }) => {
                    assert_eq!(source.raw_os_error(), Some(libc::ENOSPC))
                }
                other => panic!("{other:?}"),
            }
        }
        s.write(Slot(0), &page(1)).unwrap();
        assert_eq!(inj.injected(), 2);
    }

    #[test]
    fn forever_until_cleared() {
        let (s, inj) = faulty();
        inj.fail_writes(u64::MAX, libc::EIO);
        for _ in 0..100 {
            assert!(s.write(Slot(1), &page(1)).is_err());
        }
        inj.clear();
        s.write(Slot(1), &page(1)).unwrap();
    }

    #[test]
    fn short_write_leaves_torn_slot() {
        let (s, inj) = faulty();
        inj.short_writes(1);
        assert!(matches!(
            s.write(Slot(2), &page(3)),
            Err(StoreError::Short { done, .. }) if done == PAGE_SIZE / 2
        ));
        let mut buf = vec![0; PAGE_SIZE];
        s.read(Slot(2), &mut buf).unwrap();
        assert_eq!(buf[..PAGE_SIZE / 2], page(3)[..PAGE_SIZE / 2]);
        assert_ne!(buf, page(3));
    }

    #[test]
    fn read_errors_and_corruption() {
        let (s, inj) = faulty();
        s.write(Slot(0), &page(4)).unwrap();
        inj.fail_reads(1, libc::EIO);
        let mut buf = vec![0; PAGE_SIZE];
        assert!(matches!(
            s.read(Slot(0), &mut buf),
            Err(StoreError::Io { .. })
        ));
        inj.corrupt_reads(1);
        s.read(Slot(0), &mut buf).unwrap();
        let diff: u32 = buf
            .iter()
            .zip(page(4))
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert_eq!(diff, 1);
        s.read(Slot(0), &mut buf).unwrap();
        assert_eq!(buf, page(4));
    }

    #[test]
    fn short_reads_deliver_half_and_fail() {
        let (s, inj) = faulty();
        s.write(Slot(3), &page(5)).unwrap();
        inj.short_reads(1);
        let mut buf = vec![0; PAGE_SIZE];
        assert!(matches!(
            s.read(Slot(3), &mut buf),
            Err(StoreError::Short { op: "read", done, .. }) if done == PAGE_SIZE / 2
        ));
        assert_eq!(buf[..PAGE_SIZE / 2], page(5)[..PAGE_SIZE / 2]);
        assert_ne!(buf, page(5));
        s.read(Slot(3), &mut buf).unwrap();
        assert_eq!(buf, page(5));
        assert_eq!(inj.injected(), 1);
    }

    #[test]
    fn slow_operations_take_at_least_the_delay_and_succeed() {
        let (s, inj) = faulty();
        inj.slow(2, std::time::Duration::from_millis(5));
        let t = std::time::Instant::now();
        s.write(Slot(4), &page(6)).unwrap();
        let mut buf = vec![0; PAGE_SIZE];
        s.read(Slot(4), &mut buf).unwrap();
        // Sleeping never returns early: a lower bound, not a timing assertion.
        assert!(t.elapsed() >= std::time::Duration::from_millis(10));
        assert_eq!(buf, page(6));
        assert_eq!(inj.injected(), 2);
        inj.slow(u64::MAX, std::time::Duration::from_secs(3600));
        inj.clear();
        s.read(Slot(4), &mut buf).unwrap();
    }
}
