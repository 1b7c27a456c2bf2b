//! Where a virtio-blk device's sectors live: the [`BlkBackend`] trait and the raw
//! image file implementation, [`RawFile`].
//!
//! The device calls the backend from its worker thread with plain host buffers (it
//! copies between them and guest RAM itself), one operation at a time; offsets and
//! lengths are already checked against [`BlkBackend::size`]. A backend returns an
//! error for anything that did not complete in full: the device answers that request
//! with `VIRTIO_BLK_S_IOERR` and carries on. Wrappers such as
//! [`super::faulty::FaultyBackend`] inject failures in between.
//!
//! [`RawFile`] uses `pread`/`pwrite`; with `direct` it opens the file `O_DIRECT` and
//! goes through a bounce buffer aligned to [`DIRECT_ALIGN`], widening unaligned
//! requests to whole blocks (read-modify-write for writes), so correctness never
//! depends on the guest honouring `blk_size`. Discard punches a hole
//! (`FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`), offered only if the file system
//! supports it.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// The disk behind a virtio-blk device.
pub trait BlkBackend: Send {
    /// Fill `buf` from byte offset `offset` (all of it, or an error).
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Write all of `buf` at byte offset `offset` (all of it, or an error).
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Make completed writes durable.
    fn flush(&mut self) -> io::Result<()>;

    /// Forget `len` bytes at `offset` (they read back as zeros afterwards).
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;

    /// Whether [`BlkBackend::discard`] works (the device offers DISCARD only then).
    fn supports_discard(&self) -> bool {
        false
    }

    /// Size in bytes (the device exposes `size / 512` sectors).
    fn size(&self) -> u64;

    /// The logical block size to advertise (`blk_size`): a power of two, 512..=4096.
    fn block_size(&self) -> u32 {
        512
    }
}

/// Alignment of `O_DIRECT` I/O (offsets, lengths and buffers), and the block size a
/// direct [`RawFile`] advertises: 4 KiB suits every common file system and device.
pub const DIRECT_ALIGN: usize = 4096;

/// Largest single `O_DIRECT` transfer; bigger requests are split.
const DIRECT_CHUNK: usize = 1 << 20;

/// A buffer whose usable part starts at a [`DIRECT_ALIGN`]-aligned address.
#[derive(Debug, Default)]
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// The first `len` bytes (a multiple of the alignment), growing as needed.
    fn get(&mut self, len: usize) -> &mut [u8] {
        if self.len < len {
            self.raw = vec![0u8; len + DIRECT_ALIGN];
            self.start = self.raw.as_ptr().align_offset(DIRECT_ALIGN);
            self.len = len;
        }
        &mut self.raw[self.start..self.start + len]
    }
}

/// Punches a hole of `len` bytes at `offset` in `file`, keeping its size
/// (`FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`).
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: fallocate only reads its integer arguments; the fd is owned by
    // `file`, which is borrowed (so open) for the duration of the call.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A raw disk image (or block device) read and written with positioned I/O.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    size: u64,
    direct: bool,
    discard: bool,
    bounce: AlignedBuf,
}

fn round_down(x: u64) -> u64 {
    x & !(DIRECT_ALIGN as u64 - 1)
}

fn round_up(x: u64) -> u64 {
    round_down(x + DIRECT_ALIGN as u64 - 1)
}

impl RawFile {
    /// Open `path` read-only or read-write, with `O_DIRECT` if `direct`. With
    /// `direct` the size is rounded down to [`DIRECT_ALIGN`] (a partial last block
    /// is not exposed, so whole-block I/O never crosses the end of the file).
    pub fn open(path: &Path, read_only: bool, direct: bool) -> io::Result<Self> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(!read_only);
        if direct {
            opts.custom_flags(libc::O_DIRECT);
        }
        let mut file = opts.open(path)?;
        // Works for block devices too (their metadata length is 0).
        let mut size = file.seek(SeekFrom::End(0))?;
        if direct {
            size = round_down(size);
        }
        let mut raw = Self {
            file,
            size,
            direct,
            discard: false,
            bounce: AlignedBuf::default(),
        };
        raw.discard = !read_only && raw.probe_punch_hole();
        Ok(raw)
    }

    /// Whether the file system punches holes: punching beyond the end of the file
    /// (with `KEEP_SIZE`) changes nothing but fails where unsupported.
    fn probe_punch_hole(&self) -> bool {
        let is_file = self.file.metadata().map(|m| m.is_file()).unwrap_or(false);
        is_file
            && self
                .punch_hole(self.size.max(1 << 20) + (1 << 20), 4096)
                .is_ok()
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        punch_hole(&self.file, offset, len)
    }

    /// Whether the file was opened `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// `[start, end)`: the aligned window around `[offset, offset + len)`.
    fn window(offset: u64, len: usize) -> (u64, u64) {
        (round_down(offset), round_up(offset + len as u64))
    }

    fn read_direct(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let off = offset + done as u64;
            let want = (buf.len() - done).min(DIRECT_CHUNK - (off as usize % DIRECT_ALIGN));
            let (start, end) = Self::window(off, want);
            let bounce = self.bounce.get((end - start) as usize);
            self.file.read_exact_at(bounce, start)?;
            let skip = (off - start) as usize;
            buf[done..done + want].copy_from_slice(&bounce[skip..skip + want]);
            done += want;
        }
        Ok(())
    }

    fn write_direct(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let off = offset + done as u64;
            let want = (buf.len() - done).min(DIRECT_CHUNK - (off as usize % DIRECT_ALIGN));
            let (start, end) = Self::window(off, want);
            let bounce = self.bounce.get((end - start) as usize);
            let skip = (off - start) as usize;
            if skip != 0 || want % DIRECT_ALIGN != 0 {
                // Partial blocks: read them first (the worker is the only writer).
                self.file.read_exact_at(bounce, start)?;
            }
            bounce[skip..skip + want].copy_from_slice(&buf[done..done + want]);
            self.file.write_all_at(bounce, start)?;
            done += want;
        }
        Ok(())
    }
}

impl BlkBackend for RawFile {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.direct {
            self.read_direct(buf, offset)
        } else {
            self.file.read_exact_at(buf, offset)
        }
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.direct {
            self.write_direct(buf, offset)
        } else {
            self.file.write_all_at(buf, offset)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if !self.discard {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        if len == 0 {
            return Ok(());
        }
        self.punch_hole(offset, len)
    }

    fn supports_discard(&self) -> bool {
        self.discard
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u32 {
        if self.direct {
            DIRECT_ALIGN as u32
        } else {
            512
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let f = tempfile::NamedTempFile::new_in(base::tier::DISK_TMP).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::fs::write(f.path(), &data).unwrap();
        (f, data)
    }

    /// Opens `path` with O_DIRECT, or None (with a note) where the file system refuses.
    fn open_direct(path: &Path) -> Option<RawFile> {
        match RawFile::open(path, false, true) {
            Ok(f) => Some(f),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                base::tier::skip(
                    base::tier::Tier::DirectIo,
                    &format!("{} does not support O_DIRECT", path.display()),
                );
                None
            }
            Err(e) => panic!("open O_DIRECT: {e}"),
        }
    }

    #[test]
    fn buffered_round_trip_flush_and_size() {
        let (f, mut data) = image(64 * 1024 + 100);
        let mut r = RawFile::open(f.path(), false, false).unwrap();
        assert_eq!(r.size(), data.len() as u64);
        assert_eq!(r.block_size(), 512);
        let mut buf = vec![0u8; 1000];
        r.read_at(&mut buf, 777).unwrap();
        assert_eq!(buf, data[777..1777]);
        r.write_at(&[9u8; 513], 4000).unwrap();
        data[4000..4513].fill(9);
        r.flush().unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap(), data);
        // Reading past the end is a short read, reported as an error.
        let e = r.read_at(&mut buf, data.len() as u64 - 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn read_only_refuses_writes_and_discard() {
        let (f, _) = image(8192);
        let mut r = RawFile::open(f.path(), true, false).unwrap();
        assert!(r.write_at(&[1], 0).is_err());
        assert!(!r.supports_discard());
        assert!(r.discard(0, 4096).is_err());
    }

    #[test]
    fn discard_punches_a_hole_that_reads_as_zeros() {
        let (f, mut data) = image(64 * 1024);
        let mut r = RawFile::open(f.path(), false, false).unwrap();
        if !r.supports_discard() {
            base::tier::skip(
                base::tier::Tier::DirectIo,
                &format!("{} cannot punch holes", base::tier::DISK_TMP),
            );
            return;
        }
        r.discard(8192, 8192 + 100).unwrap();
        data[8192..16384 + 100].fill(0);
        assert_eq!(std::fs::read(f.path()).unwrap(), data);
        // The probe beyond the end did not grow the file.
        assert_eq!(std::fs::metadata(f.path()).unwrap().len(), 64 * 1024);
    }

    #[test]
    fn direct_io_handles_unaligned_requests_and_big_ones() {
        // 3 MiB + a partial block that O_DIRECT mode does not expose.
        let (f, mut data) = image(3 * 1024 * 1024 + 1000);
        let Some(mut r) = open_direct(f.path()) else {
            return;
        };
        assert_eq!(r.size(), 3 * 1024 * 1024);
        assert_eq!(r.block_size(), 4096);
        let mut buf = vec![0u8; 5000];
        r.read_at(&mut buf, 512 * 3).unwrap();
        assert_eq!(buf, data[1536..6536]);
        // Unaligned write: read-modify-write of the edge blocks.
        let patch: Vec<u8> = (0..1536).map(|i| (i % 251) as u8).collect();
        r.write_at(&patch, 4096 + 512).unwrap();
        data[4608..4608 + 1536].copy_from_slice(&patch);
        // Bigger than one chunk, aligned and not.
        let big: Vec<u8> = (0..(DIRECT_CHUNK + 8192)).map(|i| (i / 3) as u8).collect();
        r.write_at(&big, 8192).unwrap();
        data[8192..8192 + big.len()].copy_from_slice(&big);
        r.write_at(&big[..DIRECT_CHUNK + 512], 512).unwrap();
        data[512..512 + DIRECT_CHUNK + 512].copy_from_slice(&big[..DIRECT_CHUNK + 512]);
        let mut back = vec![0u8; 2 * DIRECT_CHUNK + 4096];
        r.read_at(&mut back, 512).unwrap();
        assert_eq!(back, data[512..512 + back.len()]);
        r.flush().unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap(), data);
    }
}
