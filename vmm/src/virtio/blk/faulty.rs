//! Fault injection for virtio-blk: a [`BlkBackend`] wrapper that fails or slows
//! operations on demand.
//!
//! A [`BlkFaultInjector`] is a shared handle (the experiment keeps one clone, the
//! device's [`FaultyBackend`] the other) whose knobs can be switched while the guest
//! runs. Each knob is a [`Countdown`] of operations to sabotage (`u64::MAX`: until
//! cleared):
//! - read / write / flush / discard errors with a chosen errno (`EIO`, `ENOSPC`, …):
//!   nothing transferred;
//! - short reads and writes: the first half (whole sectors) is transferred, then the
//!   operation reports a short transfer (`UnexpectedEof` / `WriteZero`);
//! - slow operations: each sleeps for a set time before running (any kind);
//! - a head start: the next few operations run untouched before anything armed
//!   fires (to fail the second piece of a request the device splits).
//!
//! The device turns every failure into `VIRTIO_BLK_S_IOERR` for that request only.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base::{Countdown, Sabotage};

use super::backend::BlkBackend;

/// Shared fault-injection controls.
#[derive(Debug, Default)]
pub struct BlkFaultInjector {
    read_errors: Countdown,
    read_errno: AtomicI32,
    write_errors: Countdown,
    write_errno: AtomicI32,
    flush_errors: Countdown,
    flush_errno: AtomicI32,
    discard_errors: Countdown,
    discard_errno: AtomicI32,
    short_reads: Countdown,
    short_writes: Countdown,
    sabotage: Sabotage,
    pass: Countdown,
}

impl BlkFaultInjector {
    /// An injector with nothing armed.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The next `n` reads fail with `errno` (`u64::MAX`: all of them).
    pub fn fail_reads(&self, n: u64, errno: i32) {
        self.read_errno.store(errno, Ordering::Release);
        self.read_errors.arm(n);
    }

    /// The next `n` writes fail with `errno` (e.g. `ENOSPC`).
    pub fn fail_writes(&self, n: u64, errno: i32) {
        self.write_errno.store(errno, Ordering::Release);
        self.write_errors.arm(n);
    }

    /// The next `n` flushes fail with `errno`.
    pub fn fail_flushes(&self, n: u64, errno: i32) {
        self.flush_errno.store(errno, Ordering::Release);
        self.flush_errors.arm(n);
    }

    /// The next `n` discards fail with `errno`.
    pub fn fail_discards(&self, n: u64, errno: i32) {
        self.discard_errno.store(errno, Ordering::Release);
        self.discard_errors.arm(n);
    }

    /// The next `n` reads transfer only their first half.
    pub fn short_reads(&self, n: u64) {
        self.short_reads.arm(n);
    }

    /// The next `n` writes store only their first half.
    pub fn short_writes(&self, n: u64) {
        self.short_writes.arm(n);
    }

    /// The next `n` operations of any kind first sleep for `delay`.
    pub fn slow(&self, n: u64, delay: Duration) {
        self.sabotage.slow(n, delay);
    }

    /// The next `n` operations of any kind run untouched; faults armed meanwhile
    /// fire after them.
    pub fn pass(&self, n: u64) {
        self.pass.arm(n);
    }

    /// Disarms everything.
    pub fn clear(&self) {
        for c in [
            &self.pass,
            &self.read_errors,
            &self.write_errors,
            &self.flush_errors,
            &self.discard_errors,
            &self.short_reads,
            &self.short_writes,
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

    /// `Err(errno)` if the countdown `n` fires.
    fn fail(&self, n: &Countdown, errno: &AtomicI32) -> io::Result<()> {
        if n.take() {
            self.hit();
            return Err(io::Error::from_raw_os_error(errno.load(Ordering::Acquire)));
        }
        Ok(())
    }
}

/// Half of `len`, in whole sectors.
fn half(len: usize) -> usize {
    (len / 2) & !511
}

/// A backend that consults a [`BlkFaultInjector`] before each operation.
pub struct FaultyBackend {
    inner: Box<dyn BlkBackend>,
    inj: Arc<BlkFaultInjector>,
}

impl std::fmt::Debug for FaultyBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyBackend")
            .field("injector", &self.inj)
            .finish_non_exhaustive()
    }
}

impl FaultyBackend {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn BlkBackend>, inj: Arc<BlkFaultInjector>) -> Self {
        Self { inner, inj }
    }
}

impl BlkBackend for FaultyBackend {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.inj.pass.take() {
            return self.inner.read_at(buf, offset);
        }
        self.inj.maybe_slow();
        self.inj.fail(&self.inj.read_errors, &self.inj.read_errno)?;
        if self.inj.short_reads.take() {
            self.inj.hit();
            let n = half(buf.len());
            self.inner.read_at(&mut buf[..n], offset)?;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("short read: {n} of {} bytes (injected)", buf.len()),
            ));
        }
        self.inner.read_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.inj.pass.take() {
            return self.inner.write_at(buf, offset);
        }
        self.inj.maybe_slow();
        self.inj
            .fail(&self.inj.write_errors, &self.inj.write_errno)?;
        if self.inj.short_writes.take() {
            self.inj.hit();
            let n = half(buf.len());
            self.inner.write_at(&buf[..n], offset)?;
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes (injected)", buf.len()),
            ));
        }
        self.inner.write_at(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.inj.pass.take() {
            return self.inner.flush();
        }
        self.inj.maybe_slow();
        self.inj
            .fail(&self.inj.flush_errors, &self.inj.flush_errno)?;
        self.inner.flush()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.inj.pass.take() {
            return self.inner.discard(offset, len);
        }
        self.inj.maybe_slow();
        self.inj
            .fail(&self.inj.discard_errors, &self.inj.discard_errno)?;
        self.inner.discard(offset, len)
    }

    fn supports_discard(&self) -> bool {
        self.inner.supports_discard()
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory disk.
    struct Mem(Vec<u8>);

    impl BlkBackend for Mem {
        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let o = offset as usize;
            buf.copy_from_slice(&self.0[o..o + buf.len()]);
            Ok(())
        }
        fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
            let o = offset as usize;
            self.0[o..o + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
            self.0[offset as usize..(offset + len) as usize].fill(0);
            Ok(())
        }
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
    }

    #[test]
    fn countdowns_fire_exactly_n_times_and_clear_disarms() {
        let inj = BlkFaultInjector::new();
        let mut b = FaultyBackend::new(Box::new(Mem(vec![0; 8192])), inj.clone());
        inj.fail_writes(2, libc::ENOSPC);
        for _ in 0..2 {
            let e = b.write_at(&[1; 512], 0).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        }
        b.write_at(&[1; 512], 0).unwrap();
        inj.fail_reads(u64::MAX, libc::EIO);
        let mut buf = [0u8; 512];
        for _ in 0..3 {
            assert_eq!(
                b.read_at(&mut buf, 0).unwrap_err().raw_os_error(),
                Some(libc::EIO)
            );
        }
        inj.fail_flushes(1, libc::EIO);
        inj.fail_discards(1, libc::EIO);
        assert!(b.flush().is_err() && b.flush().is_ok());
        assert!(b.discard(0, 512).is_err() && b.discard(0, 512).is_ok());
        inj.clear();
        b.read_at(&mut buf, 0).unwrap();
        assert_eq!(inj.injected(), 2 + 3 + 2);
    }

    #[test]
    fn short_transfers_move_half_and_fail() {
        let inj = BlkFaultInjector::new();
        let mut b = FaultyBackend::new(Box::new(Mem(vec![0; 8192])), inj.clone());
        inj.short_writes(1);
        let e = b.write_at(&[7; 2048], 1024).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
        let mut back = [0u8; 2048];
        b.read_at(&mut back, 1024).unwrap();
        assert!(back[..1024].iter().all(|&x| x == 7) && back[1024..].iter().all(|&x| x == 0));
        inj.short_reads(1);
        let mut r = [0xffu8; 2048];
        let e = b.read_at(&mut r, 1024).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(r[..1024].iter().all(|&x| x == 7) && r[1024..].iter().all(|&x| x == 0xff));
    }

    #[test]
    fn slow_operations_take_at_least_the_delay() {
        let inj = BlkFaultInjector::new();
        let mut b = FaultyBackend::new(Box::new(Mem(vec![0; 4096])), inj.clone());
        inj.slow(1, Duration::from_millis(20));
        let t = std::time::Instant::now();
        b.flush().unwrap();
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert_eq!(inj.injected(), 1);
    }
}
