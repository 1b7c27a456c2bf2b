//! What every fuzz target body shares: [`Input`] (fuzz bytes read as integers),
//! [`Encoder`] (the seeds' inverse of it), [`SharedDisk`] (an in-memory disk the
//! test can inspect), [`guest_memory`] and [`CountingLine`]. Its own module so the
//! target bodies import it and `mod.rs` only re-exports them.

use std::io;

use base::sync::lock;

use crate::memory::{create_guest_memory, RegionSpec};
use crate::virtio::blk::BlkBackend;
use vm_memory::GuestMemoryMmap;

/// Reads fuzz input as little-endian integers; past the end everything reads as 0.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next (up to) `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let b = self.bytes(N);
        out[..b.len()].copy_from_slice(b);
        out
    }

    /// A byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

/// Writes inputs in the format [`Input`] reads (for seeds).
#[derive(Debug, Default, Clone)]
pub struct Encoder(pub Vec<u8>);

impl Encoder {
    /// A byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    /// A little-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A little-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A little-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
}

/// An in-memory disk for the virtio-blk targets (discard zeroes), shared with the
/// harness so it can compare the disk with its model.
#[derive(Debug, Clone, Default)]
pub struct SharedDisk(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

fn range(len: usize, offset: u64, n: u64) -> Option<std::ops::Range<usize>> {
    let o = usize::try_from(offset).ok()?;
    let end = o.checked_add(usize::try_from(n).ok()?)?;
    (end <= len).then_some(o..end)
}

/// How much of [`SharedDisk::patterned`]'s pattern is kept (the targets' disks
/// are smaller).
const PATTERN_LEN: usize = 64 * 1024;

/// The disk pattern: byte `i` is `7i + i/512` (mod 256), so every sector differs.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 512) as u8).collect()
}

impl SharedDisk {
    /// A disk of `len` bytes filled with a pattern (so reads are checkable).
    ///
    /// The pattern is computed once per process and copied: built byte by byte
    /// for every input, under the fuzzer's comparison tracing, it was most of
    /// the `virtqueue` and `mmio` targets' time.
    pub fn patterned(len: usize) -> Self {
        static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let pattern = PATTERN.get_or_init(|| pattern(PATTERN_LEN));
        let data = match pattern.get(..len) {
            Some(p) => p.to_vec(),
            None => self::pattern(len),
        };
        Self(std::sync::Arc::new(std::sync::Mutex::new(data)))
    }

    /// A copy of the contents.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// Whether the contents equal `other` (compared in place, no copy).
    pub fn equals(&self, other: &[u8]) -> bool {
        self.lock().as_slice() == other
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        lock(&self.0)
    }
}

impl BlkBackend for SharedDisk {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let d = self.lock();
        let r = range(d.len(), offset, buf.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(&d[r]);
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut d = self.lock();
        let r = range(d.len(), offset, buf.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::WriteZero))?;
        d[r].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let mut d = self.lock();
        let r = range(d.len(), offset, len)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        d[r].fill(0);
        Ok(())
    }

    fn supports_discard(&self) -> bool {
        true
    }

    fn size(&self) -> u64 {
        self.lock().len() as u64
    }
}

/// Guest RAM of the targets: `[0, low)` and `[high, high + high_len)`, with a hole
/// between them (real anonymous mappings, as the VMM creates).
pub fn guest_memory(low: u64, high: u64, high_len: u64) -> GuestMemoryMmap {
    create_guest_memory(&[RegionSpec::new(0, low), RegionSpec::new(high, high_len)])
        .expect("anonymous guest memory for a fuzz target")
}

/// An interrupt line that only counts.
#[derive(Debug, Default)]
pub struct CountingLine(pub std::sync::atomic::AtomicU64);

impl crate::devices::irq::IrqLine for CountingLine {
    fn trigger(&self) -> io::Result<()> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}
